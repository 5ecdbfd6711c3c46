"""`python -m experiments.bench_policy_threads policy=lift_bc_image`: rollout throughput of a learned policy in
worker processes, torch's default thread pool against one torch thread per policy step (policies/threads.py), in
one run.

Each variant runs `workers` processes side by side (as the search and ground-truth workers do), each rolling out
the policy on its own seeds, and counts control steps per second of wall time over all workers. The variants
alternate `repeats` times, so that a change in the machine's load hits both alike.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
from rich.console import Console
from rich.table import Table

from envs.cli import parse_config
from envs.rollout import rollout
from policies.registry import load_policy

VARIANTS = {"torch default threads": None, "one torch thread per step (default)": 1}
"""name → torch threads of a policy step (None: torch's default, a thread per core)."""


@dataclass
class BenchConfig:
    policy: str = "lift_bc_image"
    workers: int = 2
    episodes: int = 3
    """Episodes per worker per repeat (seeds 20000.., so that no ground truth or search seed is reused)."""
    repeats: int = 2


def _worker(args: tuple[str, int | None, int, int]) -> float:
    """Steps per second of one worker, timed after its start-up and a warm-up episode."""
    name, threads, episodes, first_seed = args
    policy, spec = load_policy(name)
    policy.threads = threads
    rollout(spec, policy, seed=first_seed - 1)  # warm-up: renderer and allocations
    started = time.perf_counter()
    steps = sum(rollout(spec, policy, seed=first_seed + i).length for i in range(episodes))
    return steps / (time.perf_counter() - started)


def steps_per_second(config: BenchConfig, threads: int | None) -> float:
    jobs = [(config.policy, threads, config.episodes, 20_000 + 100 * w) for w in range(config.workers)]
    with ProcessPoolExecutor(config.workers, mp_context=get_context("spawn")) as pool:
        return sum(pool.map(_worker, jobs))  # the workers run side by side: their rates add up


def main(argv: list[str] | None = None) -> None:
    config = parse_config(BenchConfig, argv)
    policy, _ = load_policy(config.policy)
    if not hasattr(policy, "threads"):
        raise SystemExit(f"error: {config.policy!r} is not a FailScope checkpoint; this compares its thread setting")
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(config.repeats):
        for name, threads in VARIANTS.items():
            rates[name].append(steps_per_second(config, threads))
    table = Table(title=f"{config.policy}: {config.workers} rollout workers side by side")
    table.add_column("variant")
    table.add_column("steps/s (all workers)", justify="right")
    table.add_column("ms/step per worker", justify="right")
    for name, values in rates.items():
        rate = float(np.median(values))
        table.add_row(name, f"{rate:.1f}", f"{1000 * config.workers / rate:.1f}")
    Console(width=120).print(table)
    ratios = np.array(rates["one torch thread per step (default)"]) / np.array(rates["torch default threads"])
    print(f"ratio one_thread/default: {np.median(ratios):.2f} (range {ratios.min():.2f}–{ratios.max():.2f})")


if __name__ == "__main__":
    main()
