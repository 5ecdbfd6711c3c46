"""`python -m monitor.bench task=lift policy=scripted`: where a FIDeL monitor's time goes, and our OT vs POT's.

On one recorded nominal episode (not among the monitor's fitting episodes), in one run:
- encoder: patch features of one frame;
- our OT over all T memory timesteps (full search, warm-started from the previous frame, pruned, Newton-finished);
- POT's `ot.batch.solve_batch` on the same cost matrices and ε, cold-started (POT has no warm start), at the
  loosest tolerance whose scores agree with ours to 1e-3 relative on every frame, with the faster backend;
- thresholding (the configured conformal band);
- `step()`: what the rollout harness pays per frame online (windowed search), on 1 torch thread (the monitor's
  default) and on all cores.
The scores of our OT and POT's are asserted to agree to 1e-3 relative on every frame. The last line is
`ms_per_frame: X  speedup_vs_pot: Y`: X = median `step()` latency, Y = POT time / our time for the full search.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ot.batch import bregman_log_projection_batch, solve_batch
from rich.console import Console
from rich.table import Table

from envs.cli import parse_config
from monitor.build import build_monitor
from monitor.fidel import FidelConfig
from monitor.ot import OTScorer

AGREEMENT = 1e-3
POT_TOLERANCES = (1e-3, 3e-4, 1e-4)


@dataclass
class BenchConfig:
    task: str = "lift"
    policy: str = "scripted"
    """Policy whose nominal rollouts build the monitor and give the recorded episode."""
    episodes: int = 40
    """Nominal episodes the monitor is fitted on (cached after the first run)."""
    alpha: float = 0.1
    """The monitor's conformal α (fewer episodes need a larger α)."""
    seed: int = 0
    """Seed of the recorded episode (the monitor's episodes use seeds from 100000)."""
    repeats: int = 5
    """Passes over the episode for each timing (medians over all frames and passes)."""
    numpy_frames: int = 4
    """Frames timed with POT's numpy backend (it is much slower; the torch backend runs on every frame)."""
    out: str = ""
    """Also write the results as markdown to this file (e.g. experiments/results/monitor_bench.md)."""


def per_frame(
    fn: Callable, items: Sequence, repeats: int, reset: Callable[[], None] = lambda: None
) -> tuple[list[float], list]:
    """Wall-clock seconds of fn(item) for every item over `repeats` passes (`reset` before each), and the last
    pass's results."""
    times, results = [], []
    for _ in range(repeats):
        reset()
        for item in items:
            started = time.perf_counter()
            results.append(fn(item))
            times.append(time.perf_counter() - started)
    return times, results[-len(items) :]


def pot_solve(
    costs: list[torch.Tensor], epsilon: float, tol: float, backend: str
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """POT's min-over-t transport cost and its argmin per frame, and its time per frame."""
    def solve(cost: torch.Tensor) -> np.ndarray:
        matrices = cost.numpy() if backend == "numpy" else cost
        return np.asarray(solve_batch(matrices, epsilon, tol=tol, max_iter=100_000, method="log_sinkhorn").value_linear)

    times, values = per_frame(solve, costs, 1)
    return np.array([v.min() for v in values]), np.array([v.argmin() for v in values]), times


def main(argv: list[str] | None = None) -> None:
    config = parse_config(BenchConfig, argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    fidel = FidelConfig(alpha=config.alpha)
    monitor = build_monitor(config.task, config.policy, episodes=config.episodes, config=fidel)
    setup_s = time.perf_counter() - started

    from envs.rollout import rollout
    from policies.registry import load_policy

    policy, _ = load_policy(config.policy, config.task)
    frames = list(rollout(config.task, policy, seed=config.seed, record=True).frames)
    features = list(monitor.encoder.encode(np.stack(frames)))
    cost, epsilon, repeats = monitor.scorer.cost, monitor.config.ot.epsilon, config.repeats
    full = OTScorer(cost, monitor.config.ot, monitor.prior, window=None)
    costs = [cost(x) for x in features]

    encoder_s, _ = per_frame(lambda f: monitor.encoder(f[None]), frames, repeats)
    cost_s, _ = per_frame(cost, features, repeats)
    ours_s, ours = per_frame(full, features, repeats, reset=full.reset)
    ours_scores = np.array([m.score for m in ours])
    for tol in POT_TOLERANCES:  # the loosest tolerance at which POT agrees with us
        pot_scores, pot_t_min, torch_s = pot_solve(costs, epsilon, tol, "torch")
        relative = np.abs(ours_scores - pot_scores) / pot_scores
        if relative.max() <= AGREEMENT:
            break
    assert relative.max() <= AGREEMENT, f"our OT and POT disagree by {relative.max():.2e} (> {AGREEMENT}) at tol {tol}"
    _, _, numpy_s = pot_solve(costs[: config.numpy_frames], epsilon, tol, "numpy")
    # What solve_batch runs inside (log-domain Sinkhorn), for its iteration count.
    pot_iterations = [bregman_log_projection_batch(c / -epsilon, tol=tol, max_iter=100_000)["n_iters"] for c in costs]
    pot_backend, pot_s = min(("torch", torch_s), ("numpy", numpy_s), key=lambda b: np.median(b[1]))

    threshold_s, _ = per_frame(lambda m: monitor.decide(m.score, m.t_min, m.heatmap.numpy()), ours, repeats)
    step_1, _ = per_frame(monitor.step, frames, repeats, reset=monitor.reset)
    torch.set_num_threads(os.cpu_count() or 1)
    monitor.torch_threads = None  # what step() would cost without its single-thread guard
    step_all, _ = per_frame(monitor.step, frames, repeats, reset=monitor.reset)
    torch.set_num_threads(1)

    def ms(seconds: list[float], q: float = 50) -> str:
        return f"{1e3 * float(np.percentile(seconds, q)):.2f}"

    encoder, steps = monitor.config.encoder, np.mean([m.newton_steps for m in ours])
    rows = [
        ("encoder", encoder_s, f"{encoder.model}, stages {encoder.stages}, {encoder.input_size} px"),
        ("  of which OT costs, all T", cost_s, "float64 fused matmul (included in the next row)"),
        ("our OT, all T", ours_s, f"warm start, pruning, {steps:.1f} Newton steps"),
        (f"POT solve_batch, all T ({pot_backend})", pot_s, f"tol {tol:g}; torch {ms(torch_s)}, numpy {ms(numpy_s)}"),
        ("", [], f"{np.median(pot_iterations):.0f} log-domain Sinkhorn iterations (median)"),
        ("thresholding", threshold_s, monitor.config.thresholding),
        ("step(), 1 torch thread", step_1, f"online: window ±{monitor.config.window} steps (the default)"),
        (f"step(), {os.cpu_count()} torch threads", step_all, "monitor.torch_threads = None"),
    ]
    title = f"FIDeL monitor, {config.task} / {config.policy}: P={cost.patches}, F={cost.dim}, T={cost.steps}"
    table = Table(title=f"{title}, {len(frames)} frames")
    for column in ("stage", "median ms/frame", "p10 ms/frame", "note"):
        table.add_column(column, justify="left" if column in ("stage", "note") else "right")
    for name, seconds, note in rows:
        table.add_row(name, ms(seconds) if seconds else "", ms(seconds, 10) if seconds else "", note)
    console = Console(width=150, record=True)
    console.print(table)
    load = os.getloadavg()[0]
    same_t_min = int(sum(m.t_min == t for m, t in zip(ours, pot_t_min)))
    lines = [
        f"monitor ready in {setup_s:.1f} s; epsilon {epsilon}; load average {load:.1f} on {os.cpu_count()} CPUs",
        f"our OT vs POT: max relative difference {relative.max():.1e} over {len(frames)} frames "
        f"(asserted <= {AGREEMENT}), same t_min on {same_t_min}/{len(frames)}",
        f"ms_per_frame: {ms(step_1)}  speedup_vs_pot: {np.median(pot_s) / np.median(ours_s):.1f}",
    ]
    print("\n".join(lines))
    if config.out:
        command = "python -m monitor.bench " + " ".join(argv if argv is not None else sys.argv[1:])
        text = "\n".join([console.export_text(), *lines])
        Path(config.out).write_text(f"# FIDeL monitor: time per frame\n\nCommand: `{command}`\n\n```\n{text}\n```\n")

if __name__ == "__main__":
    main()
