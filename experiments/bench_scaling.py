"""`python -m experiments.bench_scaling`: rollouts per second on 1 and 2 workers, processes against Ray, in one run.

Each configuration first runs one rollout per worker (imports, renderer, policy load: a fixed cost of every run,
reported apart), then times `rollouts` ground-truth rollouts of `policy` (seeds 0.., nominal and a few catalogue
perturbations in turn). Ray's overhead per unit is timed on a unit that does nothing. From the measured cost per
rollout and the two-worker efficiency, a paper estimate of the time to a full benchmark ground truth (`policies` x
(36 singles + 100 pairs + 42 sweep points) x 20 seeds) on 8, 64 and 512 cores. Writes
experiments/results/bench_scaling.{md,json}; the ratios are what to read (the machine is shared).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from envs.backends import UnitFailed, failure_message, open_backend
from envs.cli import parse_config
from envs.markdown import markdown_table
from envs.perturbations import NOMINAL, task_perturbations
from experiments.ground_truth import RolloutUnit, run_unit, single_cases

PERTURBATIONS = ("cube_color_red", "table_color_green", "light_dim")
"""Cycled with the nominal scene, so the timed rollouts are a ground truth's mix of successes and failures."""
ESTIMATE_CORES = (8, 64, 512)


@dataclass
class ScalingConfig:
    task: str = "lift"
    policy: str = "lift_bc_image"
    rollouts: int = 24
    """Timed rollouts per configuration."""
    noop_units: int = 200
    """Empty units timed for the per-unit overhead."""
    policies: int = 4
    cases: int = 178
    """Cases of a full ground truth per policy: 36 singles + 100 pairs + 42 sweep points."""
    episodes: int = 20
    out: str = "experiments/results"


def noop(unit: int) -> int:
    return unit


def units(config: ScalingConfig, count: int, start: int = 0) -> list[RolloutUnit]:
    cases = single_cases(task_perturbations(config.task), [NOMINAL, *PERTURBATIONS])
    return [RolloutUnit(config.policy, config.task, cases[i % len(cases)], seed=i) for i in range(start, start + count)]


def measure(config: ScalingConfig, backend_name: str, workers: int) -> dict:
    started = time.perf_counter()
    with open_backend(backend_name, workers=workers) as backend:
        warm = list(backend.map(run_unit, units(config, workers, start=10_000)))  # one per worker: loads everything
        ready = time.perf_counter()
        timed = list(backend.map(run_unit, units(config, config.rollouts)))
        done = time.perf_counter()
        noops = list(backend.map(noop, range(config.noop_units)))
        overhead = (time.perf_counter() - done) / config.noop_units
    failed = [r for _, r in warm + timed + noops if isinstance(r, UnitFailed)]
    if failed:
        raise SystemExit(f"error: {failure_message(failed)}")
    return {
        "backend": backend_name,
        "workers": workers,
        "startup_s": round(ready - started, 2),
        "rollouts": config.rollouts,
        "timed_s": round(done - ready, 2),
        "rollouts_per_s": round(config.rollouts / (done - ready), 3),
        "outcomes": [bool(r) for _, r in timed],
        "overhead_ms_per_unit": round(1000 * overhead, 2),
    }


def main(argv: list[str] | None = None) -> None:
    config = parse_config(ScalingConfig, argv)
    rows = [measure(config, backend, workers) for backend in ("processes", "ray") for workers in (1, 2)]
    by = {(r["backend"], r["workers"]): r for r in rows}
    speedup = {b: by[(b, 2)]["rollouts_per_s"] / by[(b, 1)]["rollouts_per_s"] for b in ("processes", "ray")}
    same = by[("ray", 2)]["outcomes"] == by[("processes", 2)]["outcomes"] == by[("processes", 1)]["outcomes"]
    cost_s = 1 / by[("processes", 1)]["rollouts_per_s"]
    efficiency = min(speedup.values()) / 2
    total = config.policies * config.cases * config.episodes
    estimate = {cores: total * cost_s / (cores * efficiency) / 3600 for cores in ESTIMATE_CORES}
    command = (
        f"python -m experiments.bench_scaling task={config.task} policy={config.policy} rollouts={config.rollouts}"
    )
    result = {
        "command": command,
        "rows": rows,
        "speedup_2_workers": {b: round(s, 3) for b, s in speedup.items()},
        "same_outcomes_on_every_backend": same,
        "cost_s_per_rollout_one_worker": round(cost_s, 3),
        "ground_truth_rollouts": total,
        "estimate_hours": {str(c): round(h, 2) for c, h in estimate.items()},
    }
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_scaling.json").write_text(json.dumps(result, indent=1))
    table = markdown_table(
        ["backend", "workers", "startup (s)", "rollouts/s", "per-unit overhead (ms)"],
        [
            [r["backend"], r["workers"], f"{r['startup_s']:.1f}", f"{r['rollouts_per_s']:.3f}"]
            + [f"{r['overhead_ms_per_unit']:.2f}"]
            for r in rows
        ],
    )
    lines = [
        f"# Rollout scaling: {config.policy} on {config.task}",
        "",
        f"Command: `{command}` ({config.rollouts} timed rollouts per row, after one warm-up rollout per worker)",
        "",
        table,
        "",
        f"Two workers against one: processes {speedup['processes']:.2f}x, ray {speedup['ray']:.2f}x. "
        f"The same {config.rollouts} outcomes on every backend and worker count: {same}.",
        "",
        f"Paper estimate of a full ground truth ({config.policies} policies x {config.cases} cases x "
        f"{config.episodes} seeds = {total} rollouts at {cost_s:.2f} s each, {efficiency:.0%} parallel efficiency "
        "as measured at two workers): "
        + ", ".join(f"{h:.1f} h on {c} cores" for c, h in estimate.items())
        + " (startup and Ray's per-unit overhead are negligible beside a rollout).",
    ]
    (out / "bench_scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    ratio = by[("ray", 2)]["rollouts_per_s"] / by[("processes", 2)]["rollouts_per_s"]
    print(f"ratio ray/processes at 2 workers: {ratio:.2f}")


if __name__ == "__main__":
    main()
