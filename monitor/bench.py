"""`python -m monitor.bench task=lift policy=scripted`: where a FIDeL monitor's time goes, and our OT vs POT's.

On one recorded nominal episode (not among the monitor's fitting episodes), in one run:
- encoder: patch features of one frame;
- our OT over all T memory timesteps (full search, warm-started from the previous frame, pruned, Newton-finished);
- POT's `ot.batch.solve_batch` on the same cost matrices and ε, cold-started (POT has no warm start), with the
  faster backend;
- thresholding (the configured conformal band);
- `step()`: what the rollout harness pays per frame online (windowed search), on 1 torch thread (the monitor's
  default) and on all cores.

Agreement, at matched convergence. We stop when the column marginals' L1 error is below OTConfig.tol (rows exact),
POT when the row marginals' L2 error is below its tol (columns exact, checked every 10 iterations); ‖·‖₁ ≤ √n‖·‖₂,
so POT at tol/√n stops with an L1 error below ours. Each solver's score then errs by about its L1 error (the plan
is the exact one for marginals that far off), so the scores should agree to ≈ 2·tol = 2e-4; they are asserted to
agree to AGREEMENT = 1e-3 on every frame. At its 1e-4 the row L1 error of POT can reach 7e-4, and its scores
then differ from the matched ones by up to 1.1e-3: checking us against POT at a loose tolerance measures POT.

Timing: POT at the loosest of POT_TOLERANCES whose scores agree with its matched-convergence ones to AGREEMENT
(POT's best case), in `repeats` passes, each interleaved with a pass of ours. The last line is
`ms_per_frame: X  speedup_vs_pot: Y (range a–b)`: X = median `step()` latency, Y = the median over repeats of POT
time / our time for the full search (each the median over frames), a–b its smallest and largest.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ot.batch import solve_batch
from rich.console import Console
from rich.table import Table

from envs.cli import parse_config
from monitor.build import build_monitor
from monitor.fidel import FidelConfig
from monitor.ot import OTScorer

AGREEMENT = 1e-3
"""Largest relative difference allowed between our frame scores and POT's (what the monitor needs is far less)."""
POT_TOLERANCES = (1e-3, 3e-4, 1e-4, 3e-5)
"""POT tolerances tried for the timing, loosest first; the matched one (tighter) is the last resort."""
POT_MAX_ITER = 100_000


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
    frames: int = 0
    """Frames of the recorded episode used, from its start (0 = all; a smoke test's budget)."""
    repeats: int = 5
    """Passes over the episode for each timing; the speed-up is given per pass (median and range)."""
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


@dataclass
class PotPass:
    """One pass of POT's solve_batch over the frames."""

    scores: np.ndarray
    """(frames,) min over t of the transport cost ⟨Π_t, C_t⟩ (`value_linear`)."""
    t_min: np.ndarray
    iterations: np.ndarray
    """(frames,) log-domain Sinkhorn iterations until POT's stopping rule held."""
    seconds: list[float]


def pot_pass(costs: Sequence[torch.Tensor], epsilon: float, tol: float, backend: str) -> PotPass:
    """POT's min-over-t transport cost per frame, cold-started; fails if a frame hits POT_MAX_ITER."""

    def solve(cost: torch.Tensor):
        return solve_batch(
            cost.numpy() if backend == "numpy" else cost,
            epsilon,
            tol=tol,
            max_iter=POT_MAX_ITER,
            method="log_sinkhorn",
        )

    seconds, results = per_frame(solve, costs, 1)
    values = [np.asarray(r.value_linear) for r in results]
    iterations = np.array([r.log["n_iter"] for r in results])
    if (iterations >= POT_MAX_ITER - 1).any():
        raise RuntimeError(f"POT did not reach tol {tol:g} within {POT_MAX_ITER} iterations on some frame")
    return PotPass(np.array([v.min() for v in values]), np.array([v.argmin() for v in values]), iterations, seconds)


def relative(scores: np.ndarray, reference: np.ndarray) -> float:
    """Largest relative difference over frames."""
    return float(np.max(np.abs(scores - reference) / reference))


def main(argv: list[str] | None = None) -> None:
    config = parse_config(BenchConfig, argv)
    if config.frames < 0 or config.repeats < 1 or config.numpy_frames < 1:
        raise SystemExit(
            f"error: need frames >= 0, repeats >= 1, numpy_frames >= 1; got frames={config.frames}, "
            f"repeats={config.repeats}, numpy_frames={config.numpy_frames}"
        )
    torch.set_num_threads(1)
    started = time.perf_counter()
    fidel = FidelConfig(alpha=config.alpha)
    monitor = build_monitor(config.task, config.policy, episodes=config.episodes, config=fidel)
    setup_s = time.perf_counter() - started

    from envs.rollout import rollout
    from policies.registry import load_policy

    policy, _ = load_policy(config.policy, config.task)
    frames = list(rollout(config.task, policy, seed=config.seed, record=True).frames)
    frames = frames[: config.frames or None]
    features = list(monitor.encoder.encode(np.stack(frames)))
    cost, ot_config, repeats = monitor.scorer.cost, monitor.config.ot, config.repeats
    epsilon = ot_config.epsilon
    full = OTScorer(cost, ot_config, monitor.prior, window=None)
    costs = [cost(x) for x in features]

    encoder_s, _ = per_frame(lambda f: monitor.encoder(f[None]), frames, repeats)
    cost_s, _ = per_frame(cost, features, repeats)
    _, ours = per_frame(full, features, 1, reset=full.reset)
    ours_scores = np.array([m.score for m in ours])

    # Agreement at matched convergence: POT's L2 row error below tol/√n bounds its L1 error by our tol.
    matched_tol = ot_config.tol / math.sqrt(cost.patches)
    matched = pot_pass(costs, epsilon, matched_tol, "torch")
    agreement = relative(ours_scores, matched.scores)
    assert agreement <= AGREEMENT, (
        f"our OT and POT at matched convergence (POT tol {matched_tol:.2g}) disagree by {agreement:.2e} "
        f"(> {AGREEMENT}) on {config.task} / {config.policy}"
    )
    # Timing tolerance: the loosest at which POT's scores are as accurate as the check demands.
    accuracy = {}
    for tol in (*(t for t in POT_TOLERANCES if t > matched_tol), matched_tol):
        trial = matched if tol == matched_tol else pot_pass(costs, epsilon, tol, "torch")
        accuracy[tol] = relative(trial.scores, matched.scores)
        if accuracy[tol] <= AGREEMENT:
            break
    numpy_count = min(config.numpy_frames, len(costs))
    ours_s, torch_s, numpy_s, iterations = [], [], [], trial.iterations
    for _ in range(repeats):  # interleaved, so each pass's ratio sees the same machine load
        ours_s.append(per_frame(full, features, 1, reset=full.reset)[0])
        torch_s.append(pot_pass(costs, epsilon, tol, "torch").seconds)
        numpy_s.append(pot_pass(costs[:numpy_count], epsilon, tol, "numpy").seconds)
    backend, pot_s, timed = min(
        ("torch", torch_s, len(costs)), ("numpy", numpy_s, numpy_count), key=lambda b: np.median(b[1])
    )
    speedups = np.array([np.median(p) / np.median(o[:timed]) for p, o in zip(pot_s, ours_s)])

    threshold_s, _ = per_frame(lambda m: monitor.decide(m.score, m.t_min, m.heatmap.numpy()), ours, repeats)
    step_1, _ = per_frame(monitor.step, frames, repeats, reset=monitor.reset)
    torch.set_num_threads(os.cpu_count() or 1)
    monitor.torch_threads = None  # what step() would cost without its single-thread guard
    step_all, _ = per_frame(monitor.step, frames, repeats, reset=monitor.reset)
    torch.set_num_threads(1)

    def ms(seconds: list[float], q: float = 50) -> str:
        return f"{1e3 * float(np.percentile(seconds, q)):.2f}"

    def flat(passes: list[list[float]]) -> list[float]:
        return [s for p in passes for s in p]

    encoder, steps = monitor.config.encoder, np.mean([m.newton_steps for m in ours])
    rows = [
        ("encoder", encoder_s, f"{encoder.model}, stages {encoder.stages}, {encoder.input_size} px"),
        ("  of which OT costs, all T", cost_s, "float64 fused matmul (included in the next row)"),
        ("our OT, all T", flat(ours_s), f"warm start, pruning, {steps:.1f} Newton steps, tol {ot_config.tol:g}"),
        (
            f"POT solve_batch, all T ({backend})",
            flat(pot_s),
            f"tol {tol:.2g}; torch {ms(flat(torch_s))}, numpy {ms(flat(numpy_s))}",
        ),
        ("", [], f"{np.median(iterations):.0f} log-domain Sinkhorn iterations (median)"),
        (
            f"POT at matched tol {matched_tol:.2g}",
            matched.seconds,
            f"torch, 1 pass; {np.median(matched.iterations):.0f} iterations (median)",
        ),
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
    same_t_min = int(sum(m.t_min == t for m, t in zip(ours, matched.t_min)))
    margin = AGREEMENT / max(agreement, 1e-12)
    tried = ", ".join(f"{t:.2g}: {d:.1e}" for t, d in accuracy.items())
    lines = [
        f"monitor ready in {setup_s:.1f} s; epsilon {epsilon}; load average {load:.1f} on {os.cpu_count()} CPUs",
        f"our OT (tol {ot_config.tol:g}) vs POT at matched convergence (tol {ot_config.tol:g}/√{cost.patches} = "
        f"{matched_tol:.2g}): max relative difference {agreement:.1e} over {len(frames)} frames "
        f"(≈ 2·tol = {2 * ot_config.tol:.0e} expected, asserted <= {AGREEMENT}: {margin:.0f}× margin), "
        f"same t_min on {same_t_min}/{len(frames)}",
        f"POT timed at tol {tol:.2g}, the loosest within {AGREEMENT} of its matched-convergence scores (largest "
        f"relative difference at tol {tried}); speed-up per pass {', '.join(f'{s:.1f}' for s in speedups)} ({backend})",
        f"ms_per_frame: {ms(step_1)}  speedup_vs_pot: {np.median(speedups):.1f} "
        f"(range {speedups.min():.1f}–{speedups.max():.1f})",
    ]
    print("\n".join(lines))
    if config.out:
        command = "python -m monitor.bench " + " ".join(argv if argv is not None else sys.argv[1:])
        text = "\n".join([console.export_text(), *lines])
        Path(config.out).write_text(f"# FIDeL monitor: time per frame\n\nCommand: `{command}`\n\n```\n{text}\n```\n")


if __name__ == "__main__":
    main()
