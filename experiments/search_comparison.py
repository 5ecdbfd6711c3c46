"""`python -m experiments.search_comparison task=lift`: search methods at equal rollout budgets (RoboMD Table I).

Every method runs as `python -m diagnosis.search` would (same env, workers and ranking) with `monitor=none` — the
monitor does not change the simulator's verdict the searches are rewarded with, and leaving it out keeps the
experiment to rollout cost. Each (method, seed) runs once up to its largest budget; its ranking metrics at smaller
budgets are read off the run's curve (the search records them every 10 rollouts, and no method's behaviour depends
on its total budget). The reference is uniform allocation at 20 rollouts per perturbation — what the ground
truth file itself spends, on other seeds; one uniform run (seed 0) goes on to that budget. Finished runs are kept in
`outputs/search_comparison/`, so an interrupted experiment resumes. Writes experiments/results/search_<task>.{md,json}.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_module

from diagnosis.evaluation import GroundTruth, budget_on_worst, default_ground_truth_path, load_ground_truth
from diagnosis.search import run_search
from envs.cli import parse_config
from envs.markdown import markdown_table
from envs.perturbations import task_perturbations

METRICS = (
    "pairwise_accuracy",
    "kendall_tau",
    "spearman_rho",
    "top5_precision",
    "top10_precision",
    "top10_recall",
    "budget_on_true_top5",
    "entropy",
    "fsi",
)
METRIC_LABELS = (
    "significant-pair accuracy",
    "Kendall τ-b (all pairs)",
    "Spearman ρ",
    "top-5 precision",
    "top-10 precision",
    "top-10 recall",
    "budget on true top-5",
    "entropy (RoboMD)",
    "FSI (RoboMD)",
)
"""Column names of METRICS in the results table."""


@dataclass
class ComparisonConfig:
    task: str = "lift"
    policy: str = "lift_bc_image"
    methods: str = "ppo,a2c,thompson,random,uniform"
    """Comma-separated search methods."""
    budgets: str = "90,180,360"
    """Comma-separated rollout budgets every method is compared at."""
    reference_per_perturbation: int = 20
    """Uniform allocation with this many rollouts per perturbation is the reference."""
    seeds: int = 3
    n_envs: int = 2
    out: str = "experiments/results"
    runs: str = "outputs/search_comparison"
    overrides: str = ""
    """Extra search overrides for every run, e.g. 'search.max_depth=1' (space-separated)."""


def run_or_reuse(run_dir: Path, overrides: list[str]) -> dict:
    """The summary of the finished search in `run_dir`, else the search with these overrides (an unfinished one
    resumes): what makes an experiment of many searches resumable."""
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary["status"] == "complete":
            return summary
    if (run_dir / "config.yaml").exists():
        overrides = [*overrides, f"search.resume={run_dir}"]
    with initialize_config_module("diagnosis.conf", version_base=None):
        cfg = compose("config", overrides=overrides)
    return run_search(cfg, run_dir)


def run_once(config: ComparisonConfig, method: str, seed: int, budget: int) -> tuple[dict, Path]:
    """One search, or the summary of an identical finished one, and its folder."""
    run_dir = Path(config.runs) / config.task / f"{method}_seed{seed}_{budget}"
    return run_or_reuse(
        run_dir,
        [
            f"task={config.task}",
            f"policy.name={config.policy}",
            f"search={method}",
            "monitor=none",
            f"search.total_rollouts={budget}",
            f"search.n_envs={config.n_envs}",
            f"seed={seed}",
            "report.videos=false",
            *config.overrides.split(),
        ],
    ), run_dir


def spent_on_worst(run_dir: Path, truth: GroundTruth, names: list[str], budget: int) -> float:
    """Share of the run's first `budget` rollouts that included one of the truly worst 5 perturbations."""
    from diagnosis.dataset import read_rollouts

    rollouts = sorted(read_rollouts(run_dir / "failures.hdf5"), key=lambda row: row["search_step"])
    return budget_on_worst([row["perturbations"] for row in rollouts[:budget]], truth, names, 5)


def at_budget(curve: list[dict], budget: int) -> dict:
    """The last curve point at or below `budget` rollouts."""
    points = [p for p in curve if p["rollouts"] <= budget]
    if not points:
        raise ValueError(f"no curve point at or below {budget} rollouts")
    return points[-1]


def main(argv: list[str] | None = None) -> None:
    config = parse_config(ComparisonConfig, argv)
    methods = [m.strip() for m in config.methods.split(",") if m.strip()]
    budgets = sorted(int(b) for b in config.budgets.split(","))
    started = time.perf_counter()
    names = list(task_perturbations(config.task))
    truth = load_ground_truth(default_ground_truth_path(config.policy, config.task), config.task, config.policy)
    results: dict[str, dict] = {}
    reference_budget = None
    for method in methods:
        runs, run_dirs = [], []
        for seed in range(config.seeds):
            budget = max(budgets)
            if method == "uniform":
                reference_budget = config.reference_per_perturbation * len(names)
                if seed == 0:  # the reference needs one run, not one per seed
                    budget = max(budget, reference_budget)
            summary, run_dir = run_once(config, method, seed, budget)
            runs.append(summary)
            run_dirs.append(run_dir)
        rows = {}
        for budget in sorted({*budgets, *([reference_budget] if method == "uniform" else [])}):
            reached = [i for i, run in enumerate(runs) if run["budget"]["rollouts_done"] >= budget]
            points = [
                {
                    **at_budget(runs[i]["curve"], budget),
                    "budget_on_true_top5": spent_on_worst(run_dirs[i], truth, names, budget),
                }
                for i in reached
            ]
            rows[budget] = {
                "rollouts": int(np.mean([p["rollouts"] for p in points])),
                **{m: (float(np.mean([p[m] for p in points])), float(np.std([p[m] for p in points]))) for m in METRICS},
            }
        results[method] = {
            "budgets": rows,
            "wall_time_s": [run["wall_time_s"] for run in runs],
            "rollouts": [run["budget"]["rollouts_done"] for run in runs],
        }
    write_results(config, methods, budgets, reference_budget, results, time.perf_counter() - started)


def write_results(
    config: ComparisonConfig,
    methods: list[str],
    budgets: list[int],
    reference_budget: int | None,
    results: dict[str, dict],
    wall: float,
) -> None:
    reference = results.get("uniform", {}).get("budgets", {}).get(reference_budget) if reference_budget else None
    lines = [
        f"# Failure search on {config.task}: methods at equal rollout budgets",
        "",
        f"Command: `python -m experiments.search_comparison task={config.task} policy={config.policy} "
        f"methods={config.methods} budgets={config.budgets} seeds={config.seeds}"
        + (f" overrides='{config.overrides}'" if config.overrides else "")
        + "`",
        "",
        f"Policy under test `{config.policy}`; ground truth `experiments/results/ground_truth_{config.policy}.json` "
        "(20 plain rollouts per perturbation, seeds 0..19; search rollouts use other seeds). Mean ± std over "
        f"{config.seeds} search seeds. Significant-pair accuracy counts only the pairs whose ground-truth 95% "
        "intervals do not overlap; Kendall τ-b and Spearman ρ are over all pairs. Budget on true top-5: the share "
        "of the rollouts that included one of the 5 perturbations the ground truth finds most failure-prone (ties "
        "included). Entropy and FSI are RoboMD's measures of the ranking's search scores (their shape depends on the "
        "method), not of how rollouts were spent.",
        "",
    ]
    rows = [
        [method, str(budget), *(f"{row[m][0]:.3f} ± {row[m][1]:.3f}" for m in METRICS)]
        for method in methods
        for budget, row in results[method]["budgets"].items()
    ]
    lines += [markdown_table(["method", "rollouts", *METRIC_LABELS], rows)]
    lines += [
        "",
        "Wall time per run (s, 2 workers): "
        + ", ".join(f"{m} {np.mean(results[m]['wall_time_s']):.0f}" for m in methods),
        "",
    ]
    verdict = "no reference (uniform not run)"
    if reference:
        target = reference["pairwise_accuracy"][0]
        half = reference_budget // 2
        reached = [
            (m, b)
            for m in methods
            for b, row in results[m]["budgets"].items()
            if b <= half and row["pairwise_accuracy"][0] >= target
        ]
        verdict = (
            f"uniform with {config.reference_per_perturbation} rollouts per perturbation ({reference_budget} rollouts) "
            f"reaches pairwise accuracy {target:.3f}; at <= {half} rollouts (50%) "
            + (
                "it is reached by " + ", ".join(f"{m} at {b}" for m, b in reached)
                if reached
                else "no method reaches it"
            )
        )
    lines += [f"**{verdict}.**", "", f"Experiment wall time: {wall / 60:.0f} min."]
    stem = Path(config.out) / f"search_{config.task}"
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".json").write_text(json.dumps({"config": config.__dict__, "results": results}, indent=1))
    print("\n".join(lines))
    best = max(methods, key=lambda m: results[m]["budgets"][max(budgets)]["pairwise_accuracy"][0])
    print(f"best_at_{max(budgets)}: {best} {results[best]['budgets'][max(budgets)]['pairwise_accuracy'][0]:.3f}")


if __name__ == "__main__":
    main()
