"""`python -m policies.evaluate policy=scripted task=lift episodes=50`: a policy's success rate, seeds 0..N-1."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from envs.cli import parse_config
from envs.perturbations import get_perturbations
from envs.rollout import Episode, rollout
from policies.registry import load_policy


@dataclass
class PolicyEvaluateConfig:
    policy: str = "scripted"
    """Policy name or path (see policies.registry)."""
    task: str = ""
    """Task (default: the policy's own; lift for the scripted expert)."""
    episodes: int = 50
    seed: int = 0
    """Episode i uses seed `seed + i`."""
    perturbations: str = ""
    """Comma-separated perturbation names applied together (empty: nominal)."""
    perturbation_file: str = ""
    """User-defined perturbations the names may come from (YAML, envs/perturbations/user.py; comma-separated)."""


def evaluate(config: PolicyEvaluateConfig) -> list[Episode]:
    policy, task = load_policy(config.policy, config.task or None)
    config.task = task.name
    perturbations = get_perturbations(task, config.perturbations, config.perturbation_file)
    return [
        rollout(task, policy, perturbations, seed=config.seed + i)
        for i in tqdm(range(config.episodes), desc=f"{config.policy} on {task.name}", unit="ep")
    ]


def main(argv: list[str] | None = None) -> None:
    config = parse_config(PolicyEvaluateConfig, argv)
    if config.episodes < 1:
        raise SystemExit(f"error: episodes must be >= 1, got {config.episodes}")
    started = time.perf_counter()
    try:
        episodes = evaluate(config)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    wall = time.perf_counter() - started
    outcomes = Counter(e.outcome for e in episodes)
    steps = sum(e.length for e in episodes)
    table = Table(title=f"{config.policy} on {config.task} ({config.perturbations or 'nominal'})")
    for column in ("episodes", "seeds", "success", "failure", "sim_error", "mean length", "steps/s"):
        table.add_column(column, justify="right")
    table.add_row(
        str(len(episodes)),
        f"{config.seed}..{config.seed + len(episodes) - 1}",
        str(outcomes["success"]),
        str(outcomes["failure"]),
        str(outcomes["sim_error"]),
        f"{np.mean([e.length for e in episodes]):.1f}",
        f"{steps / wall:.0f}",
    )
    Console().print(table)
    print(f"success_rate: {outcomes['success'] / len(episodes):.3f}")


if __name__ == "__main__":
    main()
