"""`python -m experiments.default_search task=lift`: the main job's figures, over seeds, beside simple baselines.

Runs the main job's configuration (`python -m diagnosis.search task=<task>`: uniform allocation, 400 rollouts, 2
workers) on `seeds` seeds, and RoboMD's PPO and random allocation on the same seeds and budget, all with
`monitor=none` (the search
is rewarded by the simulator's verdict, so the monitor changes no rollout and no ranking; the script checks this on
seed 0). Then the main job itself on seed 0 with its monitor (MONITORS): the monitor's agreement with the
simulator, with and without the overrun rule, and failure prediction apart from detection.

Every ranking is scored against the ground truth by `diagnosis.evaluation.compare` from the run's summary.json,
so the figures are those of the current code. Runs are kept in `outputs/default_search/` and reused, so an
interrupted experiment resumes. Writes experiments/results/default_search_<task>.{md,json}.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diagnosis.evaluation import budget_on_worst, compare, default_ground_truth_path, load_ground_truth, truly_worst
from diagnosis.ranking import Ranking
from envs.cli import parse_config
from envs.markdown import markdown_table
from experiments.search_comparison import run_or_reuse

METRICS = {
    "pairwise_accuracy": "significant-pair accuracy",
    "kendall_tau": "Kendall τ-b (all pairs)",
    "spearman_rho": "Spearman ρ (all pairs)",
    "top5_precision": "top-5 precision",
    "top10_precision": "top-10 precision",
    "top10_recall": "top-10 recall",
    "budget_on_true_top5": "rollouts on true top 5",
    "entropy": "entropy (RoboMD)",
    "fsi": "FSI (RoboMD)",
}
MONITORS = {"trained filter (default)": []}
"""Monitor settings the main job runs with on seed 0 (each one full search; the overrun rule is reported both ways
from every run)."""


@dataclass
class DefaultSearchConfig:
    task: str = "lift"
    policy: str = "lift_bc_image"
    """The task's default policy (what the main job tests)."""
    methods: str = "uniform,ppo,random"
    """The main job's method first, then the others."""
    seeds: int = 3
    rollouts: int = 400
    n_envs: int = 2
    monitors: bool = True
    """Also run the main job with its monitor (seed 0, two semantic settings)."""
    runs: str = "outputs/default_search"
    out: str = "experiments/results"


def run_once(config: DefaultSearchConfig, name: str, overrides: list[str]) -> dict[str, Any]:
    """One search, or the summary of the finished one in its folder (an unfinished one resumes)."""
    return run_or_reuse(
        Path(config.runs) / config.task / name,
        [
            f"task={config.task}",
            f"policy.name={config.policy}",
            f"search.total_rollouts={config.rollouts}",
            f"search.n_envs={config.n_envs}",
            "report.videos=false",
            *overrides,
        ],
    )


def scored(summary: dict[str, Any], run_dir: Path, truth) -> dict[str, float]:
    """The ranking metrics of a finished run, computed now from its ranking and its failure dataset."""
    from diagnosis.dataset import read_rollouts

    ranking = Ranking.from_rows(summary["ranking"])
    spent = [row["perturbations"] for row in read_rollouts(run_dir / "failures.hdf5")]
    return {
        **ranking.metrics(),
        **compare(ranking, truth),
        "budget_on_true_top5": budget_on_worst(spent, truth, list(ranking.names), 5),
        "true_top5_size": len(truly_worst(truth, list(ranking.names), 5)),
    }


def main(argv: list[str] | None = None) -> None:
    config = parse_config(DefaultSearchConfig, argv)
    methods = [m.strip() for m in config.methods.split(",") if m.strip()]
    truth = load_ground_truth(default_ground_truth_path(config.policy, config.task), config.task, config.policy)
    started = time.perf_counter()
    per_method: dict[str, list[dict[str, float]]] = {}
    wall: dict[str, list[float]] = {}
    for method in methods:
        for seed in range(config.seeds):
            name = f"{method}_seed{seed}"
            summary = run_once(config, name, [f"search={method}", "monitor=none", f"seed={seed}"])
            per_method.setdefault(method, []).append(scored(summary, Path(config.runs) / config.task / name, truth))
            wall.setdefault(method, []).append(summary["wall_time_s"])
    monitors: dict[str, dict[str, Any]] = {}
    if config.monitors:
        for label, extra in MONITORS.items():
            name = f"{methods[0]}_seed0_monitor" + ("" if not extra else "_" + "_".join(e.split("=")[1] for e in extra))
            summary = run_once(config, name, [f"search={methods[0]}", "seed=0", *extra])
            unmonitored = json.loads(
                (Path(config.runs) / config.task / f"{methods[0]}_seed0" / "summary.json").read_text()
            )
            same = [(r["perturbation"], r["score"]) for r in summary["ranking"]] == [
                (r["perturbation"], r["score"]) for r in unmonitored["ranking"]
            ]
            monitors[label] = {
                "monitor": summary["monitor"],
                "same_ranking_as_monitor_none": same,
                "wall_time_s": summary["wall_time_s"],
            }
    write_results(config, methods, per_method, wall, monitors, time.perf_counter() - started)


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def write_results(
    config: DefaultSearchConfig,
    methods: list[str],
    per_method: dict[str, list[dict[str, float]]],
    wall: dict[str, list[float]],
    monitors: dict[str, dict[str, Any]],
    elapsed: float,
) -> None:
    some = per_method[methods[0]][0]
    rows = [
        [
            method,
            *(mean_std([run[key] for run in per_method[method]]) for key in METRICS),
            f"{np.mean(wall[method]):.0f}",
        ]
        for method in methods
    ]
    lines = [
        f"# The main job on {config.task}: {methods[0]} at {config.rollouts} rollouts beside {', '.join(methods[1:])}",
        "",
        f"Command: `python -m experiments.default_search task={config.task} policy={config.policy} "
        f"methods={config.methods} seeds={config.seeds} rollouts={config.rollouts}`",
        "",
        f"Policy `{config.policy}`; ground truth `experiments/results/ground_truth_{config.policy}.json` (20 plain "
        f"rollouts per perturbation on seeds no search uses). Mean ± std over {config.seeds} search seeds "
        f"(seed=0..{config.seeds - 1}), {config.n_envs} workers, `monitor=none`. Significant-pair accuracy counts the "
        f"{some['significant_pairs']} of {some['all_pairs']} pairs whose ground-truth 95% intervals do not overlap; "
        "Kendall τ-b and Spearman ρ are over all perturbations; 'rollouts on true top 5' is the share of the budget "
        f"spent on rollouts that included one of the 5 truly worst perturbations ({some['true_top5_size']} with ties "
        "at the 5th one's failure rate).",
        "",
        markdown_table(["method", *METRICS.values(), "wall time (s)"], rows),
        "",
    ]
    best = {key: max(methods, key=lambda m: np.mean([run[key] for run in per_method[m]])) for key in METRICS}
    lines.append(
        "Best mean per metric: "
        + ", ".join(f"{METRICS[k]}: {best[k]}" for k in METRICS if k not in ("entropy", "fsi"))
        + "."
    )
    if monitors:
        lines += [
            "",
            f"## The main job's monitor (seed 0, search={methods[0]}, the defaults)",
            "",
            "TPR: failed rollouts (simulator) the monitor flagged; TNR: successful ones it left alone. 'Without "
            "the overrun rule' drops the rule that frames past the end of every calibration episode are "
            "failures. 'Predicted' counts caught failures first flagged before the robot had moved (the "
            "scene alone looked wrong).",
            "",
        ]
        table = []
        for label, entry in monitors.items():
            m = entry["monitor"]
            w = m["without_overrun"]
            table.append(
                [
                    label,
                    f"{m['tpr']:.2f} ({m['true_positive']}/{m['sim_failures']})",
                    f"{m['tnr']:.2f} ({m['true_negative']}/{m['sim_successes']})",
                    f"{w['tpr']:.2f} ({w['true_positive']}/{m['sim_failures']})",
                    f"{w['tnr']:.2f}",
                    f"{m['predicted']}/{m['true_positive']}",
                    f"{m['median_first_anomaly']}",
                    f"{m['median_first_failure_acting']}",
                    "yes" if entry["same_ranking_as_monitor_none"] else "NO",
                    f"{entry['wall_time_s']:.0f}",
                ]
            )
        lines.append(
            markdown_table(
                [
                    "monitor",
                    "TPR",
                    "TNR",
                    "TPR without overrun",
                    "TNR without overrun",
                    "predicted",
                    "median first anomaly",
                    "median first failure once moving",
                    "ranking = monitor=none run",
                    "wall time (s)",
                ],
                table,
            )
        )
    lines += ["", f"Experiment wall time: {elapsed / 60:.0f} min (finished runs are reused)."]
    stem = Path(config.out) / f"default_search_{config.task}"
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".json").write_text(
        json.dumps({"config": config.__dict__, "runs": per_method, "wall_time_s": wall, "monitors": monitors}, indent=1)
    )
    print("\n".join(lines))
    headline = per_method[methods[0]]
    print(f"pairwise_accuracy: {mean_std([r['pairwise_accuracy'] for r in headline])}")


if __name__ == "__main__":
    main()
