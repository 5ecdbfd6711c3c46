"""`python -m experiments.search_comparison task=lift`: search methods at equal rollout budgets (RoboMD Table I).

Every method runs as `python -m diagnosis.search` would (same env, workers and ranking) with `monitor=none` — the
monitor does not change the simulator's verdict the searches are rewarded with, and leaving it out keeps the
experiment to rollout cost. Each (method, seed) runs once up to its largest budget; its ranking metrics at smaller
budgets are read off the run's curve (the search records them every 10 rollouts, and no method's behaviour depends
on its total budget), its failure-rate error from the rollouts it had done by then. A method that stops itself
(`lucb`, with search.stop=auto) gets the reference budget as its cap and one more row: where it stopped. The
reference is uniform allocation at 20 rollouts per perturbation — what the ground truth file itself spends, on
other seeds; one uniform run (seed 0) goes on to that budget. Means over search seeds with 95% bootstrap intervals.
Finished runs are kept in `outputs/search_comparison/`, so an interrupted experiment resumes. Writes
experiments/results/search_<policy>.{md,json}.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from diagnosis.dataset import read_rollouts
from diagnosis.estimation import failure_rate
from diagnosis.evaluation import (
    GroundTruth,
    bootstrap_mean,
    budget_on_worst,
    default_ground_truth_path,
    load_ground_truth,
    rate_error,
)
from diagnosis.search import resolve_candidates, resolve_task, run_search
from envs.cli import parse_config
from envs.markdown import markdown_table

METRICS = (
    "pairwise_accuracy",
    "kendall_tau",
    "spearman_rho",
    "top5_precision",
    "top10_precision",
    "top10_recall",
    "budget_on_true_top5",
    "rate_mae",
    "interval_coverage",
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
    "failure-rate error",
    "95% interval coverage",
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
    """Extra search overrides (space-separated), for every run ('search.max_depth=1') or for one method's runs
    ('lucb:search.hyperparameters.top_k=3')."""


def compose_search(overrides: list[str]) -> DictConfig:
    with initialize_config_module("diagnosis.conf", version_base=None):
        return compose("config", overrides=overrides)


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
    return run_search(compose_search(overrides), run_dir)


def search_overrides(config: ComparisonConfig, method: str, seed: int = 0, budget: int = 1) -> list[str]:
    """The diagnosis.search command line of one run of this experiment."""
    return [
        f"task={config.task}",
        f"policy.name={config.policy}",
        f"search={method}",
        "monitor=none",
        f"search.total_rollouts={budget}",
        f"search.n_envs={config.n_envs}",
        f"seed={seed}",
        "report.videos=false",
        f"ground_truth={default_ground_truth_path(config.policy, config.task)}",
        *method_overrides(config.overrides, method),
    ]


def method_overrides(overrides: str, method: str) -> list[str]:
    """The overrides that apply to `method`: every plain one, and those written `<method>:key=value`."""
    chosen = []
    for override in overrides.split():
        target, _, rest = override.partition(":") if ":" in override.split("=", 1)[0] else ("", "", override)
        if target in ("", method):
            chosen.append(rest)
    return chosen


def run_once(config: ComparisonConfig, method: str, seed: int, budget: int) -> tuple[dict, Path]:
    """One search, or the summary of an identical finished one, and its folder."""
    run_dir = Path(config.runs) / config.task / f"{method}_seed{seed}_{budget}"
    return run_or_reuse(run_dir, search_overrides(config, method, seed, budget)), run_dir


def rollouts_until(run_dir: Path, budget: int) -> list[dict]:
    """The run's first `budget` rollouts, in search order."""
    return sorted(read_rollouts(run_dir / "failures.hdf5"), key=lambda row: row["search_step"])[:budget]


def spent_on_worst(rollouts: list[dict], truth: GroundTruth, names: list[str]) -> float:
    """Share of the rollouts that included one of the truly worst 5 perturbations."""
    return budget_on_worst([row["perturbations"] for row in rollouts], truth, names, 5)


def rates_observed(rollouts: list[dict], truth: GroundTruth, names: list[str]) -> dict[str, float]:
    """Failure-rate error and interval coverage of the rates these rollouts give (perturbations tried alone)."""
    rows = []
    for name in names:
        alone = [row["failed"] for row in rollouts if list(row["perturbations"]) == [name]]
        rows.append(
            {
                "perturbation": name,
                "tried_alone": len(alone),
                "failed_alone": sum(alone),
                **failure_rate(sum(alone), len(alone)),
            }
        )
    return rate_error(rows, truth)


def point(run: dict, run_dir: Path, budget: int, truth: GroundTruth, names: list[str]) -> dict:
    """A run's metrics after `budget` rollouts (or where it stopped, if earlier)."""
    rollouts = rollouts_until(run_dir, budget)
    done = run["budget"]["rollouts_done"]
    if budget >= done and run.get("ground_truth"):  # where the run ended: its summary's own figures
        ranking = {"rollouts": done, **run["metrics"], **run["ground_truth"]}
    else:
        ranking = at_budget(run["curve"], budget)
    return {
        **ranking,
        "budget_on_true_top5": spent_on_worst(rollouts, truth, names),
        **rates_observed(rollouts, truth, names),
    }


def summarise(points: list[dict]) -> dict:
    """Mean rollouts, and each metric's mean with its bootstrap interval over the seeds."""
    return {
        "rollouts": int(round(np.mean([p["rollouts"] for p in points]))),
        **{m: bootstrap_mean([p[m] for p in points]) for m in METRICS},
    }


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
    first = compose_search(search_overrides(config, methods[0]))
    names = [p.name for p in resolve_candidates(first, resolve_task(first.task))]
    truth = load_ground_truth(default_ground_truth_path(config.policy, config.task), config.task, config.policy)
    results: dict[str, dict] = {}
    reference_budget = config.reference_per_perturbation * len(names)
    for method in methods:
        self_stopping = compose_search(search_overrides(config, method)).search.get("stop") == "auto"
        runs, run_dirs = [], []
        for seed in range(config.seeds):
            budget = max(budgets)
            if self_stopping or (method == "uniform" and seed == 0):  # the reference needs one run, not one per seed
                budget = max(budget, reference_budget)
            summary, run_dir = run_once(config, method, seed, budget)
            runs.append(summary)
            run_dirs.append(run_dir)
        rows = {}
        for budget in sorted({*budgets, *([reference_budget] if method == "uniform" else [])}):
            reached = [i for i, run in enumerate(runs) if run["budget"]["rollouts_done"] >= budget]
            if reached:
                rows[str(budget)] = summarise([point(runs[i], run_dirs[i], budget, truth, names) for i in reached])
        if self_stopping:
            rows["at stop"] = summarise(
                [
                    point(run, run_dir, run["budget"]["rollouts_done"], truth, names)
                    for run, run_dir in zip(runs, run_dirs)
                ]
            )
        results[method] = {
            "budgets": rows,
            "wall_time_s": [run["wall_time_s"] for run in runs],
            "rollouts": [run["budget"]["rollouts_done"] for run in runs],
            "settled_at": [run["budget"].get("settled_at") for run in runs],
        }
    write_results(config, methods, budgets, reference_budget, results, time.perf_counter() - started)


def write_results(
    config: ComparisonConfig,
    methods: list[str],
    budgets: list[int],
    reference_budget: int,
    results: dict[str, dict],
    wall: float,
) -> None:
    def cell(value: tuple[float, float, float]) -> str:
        mean, low, high = value
        return "—" if not np.isfinite(mean) else f"{mean:.3f} [{low:.3f}, {high:.3f}]"

    policy = Path(config.policy).name
    lines = [
        f"# Failure search on {config.task} with {policy}: methods at equal rollout budgets",
        "",
        f"Command: `python -m experiments.search_comparison task={config.task} policy={config.policy} "
        f"methods={config.methods} budgets={config.budgets} seeds={config.seeds}"
        + (f" overrides='{config.overrides}'" if config.overrides else "")
        + "`",
        "",
        f"Ground truth `experiments/results/ground_truth_{policy}.json` (20 plain rollouts per perturbation, seeds "
        f"0..19; search rollouts use other seeds). Mean over {config.seeds} search seeds with a 95% bootstrap "
        "interval. Significant-pair accuracy counts only the pairs whose ground-truth 95% intervals do not overlap; "
        "Kendall τ-b and Spearman ρ are over all pairs. Top-k precision: the share of the predicted k that are among "
        "the truly worst k (every perturbation tied with the k-th counts). Budget on true top-5: the share of the "
        "rollouts that included one of them. Failure-rate error: mean absolute difference between the observed "
        "failure rate and the ground truth's, over the perturbations tried; coverage: how often the 95% Wilson "
        "interval holds the ground truth's rate. A row `at stop` is where a self-stopping method ended (its mean "
        "rollouts in the second column). Entropy and FSI are RoboMD's measures of the ranking's search scores.",
        "",
    ]
    rows = [
        [method, f"{budget} ({row['rollouts']})" if budget == "at stop" else budget, *(cell(row[m]) for m in METRICS)]
        for method in methods
        for budget, row in results[method]["budgets"].items()
    ]
    lines += [markdown_table(["method", "rollouts", *METRIC_LABELS], rows)]
    lines += [
        "",
        f"Wall time per run (s, {config.n_envs} workers): "
        + ", ".join(f"{m} {np.mean(results[m]['wall_time_s']):.0f}" for m in methods),
        "",
    ]
    lines += verdicts(config, methods, reference_budget, results)
    searching = sum(sum(results[m]["wall_time_s"]) for m in methods)
    lines += [
        "",
        f"Search wall time, summed over the runs: {searching / 60:.0f} min (this invocation: {wall / 60:.0f} min).",
    ]
    stem = Path(config.out) / f"search_{policy}"
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".json").write_text(json.dumps({"config": config.__dict__, "results": results}, indent=1))
    print("\n".join(lines))


def verdicts(
    config: ComparisonConfig, methods: list[str], reference_budget: int, results: dict[str, dict]
) -> list[str]:
    """The targets, each met or missed with the measured figures: uniform's top-5 precision and Kendall τ-b at the
    reference budget reached with at most half its rollouts; failure-rate error <= 0.1 and coverage >= 0.9."""
    reference = results.get("uniform", {}).get("budgets", {}).get(str(reference_budget))
    if reference is None:
        return ["**No reference: uniform was not run.**"]
    precision, tau = reference["top5_precision"][0], reference["kendall_tau"][0]
    lines = [
        f"**Reference:** uniform with {config.reference_per_perturbation} rollouts per perturbation "
        f"({reference_budget} rollouts): top-5 precision {precision:.3f}, Kendall τ-b {tau:.3f}."
    ]
    for method in methods:
        rows = results[method]["budgets"]
        cheap = [
            (key, row)
            for key, row in rows.items()
            if row["rollouts"] <= reference_budget // 2
            and row["top5_precision"][0] >= precision
            and row["kendall_tau"][0] >= tau
        ]
        final = rows["at stop"] if "at stop" in rows else rows[max((k for k in rows if k != "at stop"), key=int)]
        mae, coverage = final["rate_mae"][0], final["interval_coverage"][0]
        fewest = min((row["rollouts"] for _, row in cheap), default=None)
        reach = (
            f"reaches both with {fewest} rollouts ({fewest / reference_budget:.0%} of the reference)"
            if fewest is not None
            else "does not reach both within 50% of the reference's rollouts"
        )
        lines.append(
            f"- {method}: {reach}; at {final['rollouts']} rollouts failure-rate error {mae:.3f} "
            f"({'met' if mae <= 0.1 else 'missed'}: <= 0.1), coverage {coverage:.2f} "
            f"({'met' if coverage >= 0.9 else 'missed'}: >= 0.9)."
        )
    return lines


if __name__ == "__main__":
    main()
