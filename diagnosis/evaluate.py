"""`python -m diagnosis.evaluate run=<run dir>`: a finished (or interrupted) search against ground truth.

Reads the run's summary.json and the ground-truth file of its policy (experiments/results/ground_truth_<policy>.json
unless `ground_truth=` names one), prints the metrics, and ends with `pairwise_accuracy: X`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from diagnosis.evaluation import TOP_KS, compare, default_ground_truth_path, load_ground_truth
from diagnosis.ranking import Ranking
from envs.cli import parse_config
from envs.json_files import read_json


@dataclass
class RunEvaluateConfig:
    run: str = ""
    """A search run directory (holds summary.json)."""
    ground_truth: str = ""
    """Ground-truth file (default: the one of the run's policy)."""
    ks: tuple[int, ...] = TOP_KS
    """The k of top-k precision and recall."""


SUMMARY_KEYS = {"task": str, "policy": str, "method": str, "budget": dict, "ranking": list, "metrics": dict}
"""What this reads from a summary.json, with the type each must have."""
RANKING_KEYS = ("perturbation", "score")


def read_summary(path: str | Path) -> dict[str, Any]:
    """A search's summary.json, checked for what evaluation reads: a truncated, foreign or hand-edited file is one
    ValueError naming the file and the problem, never a traceback from deep in the comparison."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run= must name a search run directory")
    fix = "rerun the search (python -m diagnosis.search) or restore the file"
    summary = read_json(path, fix=fix)
    if not isinstance(summary, dict):
        raise ValueError(f"{path} holds a JSON {type(summary).__name__}, not a search summary object; {fix}")
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)} (a search summary has {', '.join(SUMMARY_KEYS)}); {fix}")
    wrong = [
        f"{k} ({type(summary[k]).__name__}, not {t.__name__})"
        for k, t in SUMMARY_KEYS.items()
        if not isinstance(summary[k], t)
    ]
    if wrong:
        raise ValueError(f"{path} has the wrong type for {', '.join(wrong)}; {fix}")
    if "rollouts_done" not in summary["budget"]:
        raise ValueError(f"{path}: budget lacks rollouts_done; {fix}")
    for i, row in enumerate(summary["ranking"]):
        if not isinstance(row, dict) or any(k not in row for k in RANKING_KEYS):
            raise ValueError(f"{path}: ranking row {i} is not an object with {' and '.join(RANKING_KEYS)}; {fix}")
        if not isinstance(row["score"], (int, float)) or isinstance(row["score"], bool):
            raise ValueError(f"{path}: ranking row {i} has score {row['score']!r}, not a number; {fix}")
    return summary


def main(argv: list[str] | None = None) -> None:
    config = parse_config(RunEvaluateConfig, argv)
    try:
        summary = read_summary(Path(config.run) / "summary.json")
        truth = load_ground_truth(
            config.ground_truth or default_ground_truth_path(summary["policy"], summary["task"]),
            summary["task"],
            summary["policy"],
        )
        metrics = compare(Ranking.from_rows(summary["ranking"]), truth, ks=config.ks)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    console = Console(width=120)
    console.print(
        f"{summary['method']} search of {summary['policy']} on {summary['task']}, "
        f"{summary['budget']['rollouts_done']} rollouts, against {truth.path}"
    )
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in {**summary["metrics"], **metrics}.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)
    print(f"pairwise_accuracy: {metrics['pairwise_accuracy']:.3f}")


if __name__ == "__main__":
    main()
