"""`python -m experiments.boundary_comparison policy=lift_bc_colour`: failure boundaries against the ground-truth sweep.

For each (family, side), `search=boundary` runs as `python -m diagnosis.search` would (monitor=none), capped at
`budget_share` of the rollouts the ground-truth sweep spent on that side (20 per sweep point), once with its
bisection allocation and once with round robin over the same grid (the baseline: the same model, verdict and
stopping rule, rollouts spread evenly). Judged on the sweep's points: the fitted curve's mean absolute error, and
whether the crossing's 95% interval holds the sweep's own crossing (where its success first falls below one half,
interpolated between points). Finished runs are kept in `outputs/boundary_comparison/`, so an interrupted experiment
resumes. Writes experiments/results/boundary_<policy>.{md,json}.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diagnosis.evaluation import bootstrap_mean, default_ground_truth_path, load_ground_truth
from envs.cli import parse_config
from envs.markdown import markdown_table
from envs.perturbations import task_perturbations
from envs.perturbations.sweeps import BoundaryGrid, boundary_grid
from experiments.search_comparison import run_or_reuse


@dataclass
class BoundaryComparisonConfig:
    task: str = "lift"
    policy: str = "lift_bc_colour"
    families: str = "action_noise:above,init_offset:below,camera_pose:below,light_intensity:below"
    """Comma-separated family:side pairs."""
    allocations: str = "uniform,bisection"
    seeds: int = 3
    budget_share: float = 0.4
    """Each run's cap, as a share of the rollouts the ground-truth sweep spent on that side."""
    n_envs: int = 2
    out: str = "experiments/results"
    runs: str = "outputs/boundary_comparison"


def sweep_crossing(positions: list[float], successes: list[float]) -> float | None:
    """Where the sweep's success first falls below one half, interpolated on grid positions; None if it never does,
    the near end if it starts there."""
    if successes[0] < 0.5:
        return positions[0]
    for (t0, s0), (t1, s1) in zip(zip(positions, successes), zip(positions[1:], successes[1:])):
        if s1 < 0.5 <= s0:
            return t0 + (s0 - 0.5) / (s0 - s1) * (t1 - t0)
    return None


def main(argv: list[str] | None = None) -> None:
    config = parse_config(BoundaryComparisonConfig, argv)
    started = time.perf_counter()
    sweeps = default_ground_truth_path(config.policy, config.task, "sweeps")
    truth = load_ground_truth(sweeps, config.task, config.policy)
    catalogue = task_perturbations(config.task)
    results = []
    for item in config.families.split(","):
        family, _, side = item.strip().partition(":")
        grid = boundary_grid(config.task, catalogue, family, side or None)
        measured = [(t, p.name) for t, p in zip(grid.positions, grid.perturbations) if p.name in truth.entries]
        true_crossing = sweep_crossing([t for t, _ in measured], [truth.entries[n].success_rate for _, n in measured])
        cap = int(round(config.budget_share * sum(truth.entries[n].episodes for _, n in measured)))
        for allocation in config.allocations.split(","):
            runs = []
            for seed in range(config.seeds):
                run_dir = (
                    Path(config.runs) / config.task / config.policy / f"{family}_{grid.side}_{allocation}_seed{seed}"
                )
                summary = run_or_reuse(
                    run_dir,
                    [
                        f"task={config.task}",
                        f"policy.name={config.policy}",
                        "search=boundary",
                        f"search.family={family}",
                        f"search.side={grid.side}",
                        f"search.total_rollouts={cap}",
                        f"search.hyperparameters.allocation={allocation}",
                        f"search.n_envs={config.n_envs}",
                        "monitor=none",
                        "report.videos=false",
                        f"ground_truth={sweeps}",
                        f"seed={seed}",
                    ],
                )
                boundary = summary["boundary"]
                low, high = (grid_position(grid, boundary[k]) for k in ("crossing_low", "crossing_high"))
                if true_crossing is None:  # the sweep never falls below one half: right if the search says so
                    covered = boundary["p_beyond"] >= 0.5
                else:
                    covered = bool(min(low, high) <= true_crossing <= max(low, high))
                runs.append(
                    {
                        "seed": seed,
                        "rollouts": summary["budget"]["rollouts_done"],
                        "settled_at": summary["budget"].get("settled_at"),
                        "curve_error": boundary["curve_error"],
                        "crossing": boundary["crossing"],
                        "crossing_interval": sorted([boundary["crossing_low"], boundary["crossing_high"]]),
                        "verdict": boundary["verdict"],
                        "holds_sweep_crossing": covered,
                        "wall_time_s": summary["wall_time_s"],
                    }
                )
            results.append(
                {
                    "family": family,
                    "side": grid.side,
                    "allocation": allocation,
                    "cap": cap,
                    "sweep_rollouts": sum(truth.entries[n].episodes for _, n in measured),
                    "sweep_points": len(measured),
                    "sweep_crossing": None if true_crossing is None else grid.scalar_at(true_crossing),
                    "runs": runs,
                }
            )
    write_results(config, results, sweeps, time.perf_counter() - started)


def grid_position(grid: BoundaryGrid, value: float) -> float:
    """A parameter value's position on the grid (interpolated between points on the sweep's scale)."""
    xs, ts = np.asarray(grid.scalars), np.asarray(grid.positions)
    order = np.argsort(xs)
    if grid.sweep.log:
        return float(np.interp(np.log(abs(value)), np.log(np.abs(xs[order])), ts[order]))
    return float(np.interp(value, xs[order], ts[order]))


def write_results(config: BoundaryComparisonConfig, results: list[dict], sweeps: Path, wall: float) -> None:
    def mean_cell(values: list[float]) -> str:
        mean, low, high = bootstrap_mean(values)
        return f"{mean:.3f} [{low:.3f}, {high:.3f}]"

    rows = []
    for r in results:
        runs = r["runs"]
        rows.append(
            [
                f"{r['family']} ({r['side']})",
                r["allocation"],
                f"{np.mean([x['rollouts'] for x in runs]):.0f} of {r['cap']} ({r['sweep_rollouts']} in the sweep)",
                mean_cell([x["curve_error"] for x in runs]),
                "none in the sweep" if r["sweep_crossing"] is None else f"{r['sweep_crossing']:.3g}",
                "; ".join(
                    f"{x['crossing']:.3g} [{x['crossing_interval'][0]:.3g}, {x['crossing_interval'][1]:.3g}]"
                    for x in runs
                ),
                f"{sum(x['holds_sweep_crossing'] for x in runs)}/{len(runs)}",
            ]
        )
    lines = [
        f"# Failure boundaries of {config.policy} on {config.task}",
        "",
        f"Command: `python -m experiments.boundary_comparison task={config.task} policy={config.policy} "
        f"families={config.families} allocations={config.allocations} seeds={config.seeds} "
        f"budget_share={config.budget_share}`",
        "",
        f"Ground truth: `{sweeps.name}` (20 plain rollouts per sweep point, seeds 0..19; search rollouts use other "
        f"seeds). Every run is capped at {config.budget_share:.0%} of the rollouts the sweep spent on that side and "
        "stops earlier once the crossing is settled (search.stop=auto). Curve error: mean absolute difference between "
        "the fitted success and the sweep's at the sweep's points (mean over seeds, 95% bootstrap interval). Crossing: "
        "where success falls below one half, per seed with its 95% interval; 'holds' counts the seeds whose interval "
        "holds the sweep's own crossing (interpolated between its points), or, where the sweep never falls below one "
        "half, whose posterior puts the crossing past the grid.",
        "",
        markdown_table(
            [
                "family (side)",
                "allocation",
                "rollouts",
                "curve error",
                "sweep crossing",
                "crossing per seed [95%]",
                "holds",
            ],
            rows,
        ),
        "",
    ]
    for allocation in config.allocations.split(","):
        errors = [x["curve_error"] for r in results if r["allocation"] == allocation for x in r["runs"]]
        met = sum(e <= 0.1 for e in errors)
        lines.append(
            f"- {allocation}: curve error <= 0.1 in {met} of {len(errors)} runs (mean {np.mean(errors):.3f}), each "
            f"with at most {config.budget_share:.0%} of the sweep's rollouts."
        )
    searching = sum(x["wall_time_s"] for r in results for x in r["runs"])
    lines += [
        "",
        f"Search wall time, summed over the runs: {searching / 60:.0f} min (this invocation: {wall / 60:.0f} min).",
    ]
    stem = Path(config.out) / f"boundary_{Path(config.policy).name}"
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".json").write_text(json.dumps({"config": config.__dict__, "results": results}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
