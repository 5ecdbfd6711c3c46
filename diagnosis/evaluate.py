"""`python -m diagnosis.evaluate run=<run dir>`: a finished (or interrupted) search against ground truth.

Reads the run's summary.json and the ground-truth file of its policy (experiments/results/ground_truth_<policy>.json
unless `ground_truth=` names one), prints the metrics, and ends with `pairwise_accuracy: X`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from diagnosis.evaluation import compare, default_ground_truth_path, load_ground_truth
from diagnosis.ranking import Ranking
from envs.cli import parse_config


@dataclass
class EvaluateConfig:
    run: str = ""
    """A search run directory (holds summary.json)."""
    ground_truth: str = ""
    """Ground-truth file (default: the one of the run's policy)."""
    k: int = 5
    """Top-k recall's k."""


def main(argv: list[str] | None = None) -> None:
    config = parse_config(EvaluateConfig, argv)
    summary_path = Path(config.run) / "summary.json"
    if not summary_path.is_file():
        raise SystemExit(f"error: {summary_path} does not exist; run= must name a search run directory")
    summary = json.loads(summary_path.read_text())
    try:
        truth = load_ground_truth(
            config.ground_truth or default_ground_truth_path(summary["policy"]), summary["task"], summary["policy"]
        )
        metrics = compare(Ranking.from_rows(summary["ranking"]), truth, k=config.k)
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
