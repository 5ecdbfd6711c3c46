"""`python -m experiments.allocation_simulation`: what any allocation can reach against a 20-rollout ground truth.

A design study, not a result on the policy: every perturbation's failure rate is taken as its ground-truth rate,
and rollouts are Bernoulli draws from it, so thousands of searches cost seconds. Each repetition also draws a
fresh 20-rollout "ground truth" from the same rates, as experiments.ground_truth would on other seeds, and scores
the allocation's ranking (the bandits' own classes, diagnosis.bandits) against it with Kendall τ-b and top-5
precision. The ceiling row ranks by the true rates themselves: how far a perfect estimate agrees with a noisy
20-rollout truth. Writes experiments/results/allocation_simulation.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from diagnosis.allocations import BANDITS
from diagnosis.evaluation import default_ground_truth_path, load_ground_truth
from envs.cli import parse_config
from envs.markdown import markdown_table
from envs.perturbations import NOMINAL


@dataclass
class SimulationConfig:
    policies: str = "lift:lift_bc_colour,can:can_bc_colour"
    """Comma-separated task:policy pairs whose ground truths give the rates."""
    methods: str = "uniform,lucb,thompson"
    per_mode: str = "5,10,20"
    """Budgets, in rollouts per perturbation."""
    repetitions: int = 100
    episodes: int = 20
    """Rollouts per perturbation of each simulated ground truth."""
    out: str = "experiments/results"


def top_k_precision(scores: np.ndarray, truth: np.ndarray, k: int = 5) -> float:
    """Share of the k highest scores among the truly worst k (every rate tied with the k-th counts)."""
    worst = set(np.flatnonzero(truth >= np.sort(truth)[::-1][k - 1]))
    return len(worst.intersection(np.argsort(-scores, kind="stable")[:k])) / k


def simulate(method: str, rates: np.ndarray, budget: int, rng: np.random.Generator, seed: int) -> np.ndarray:
    """The bandit's ranking scores after `budget` Bernoulli rollouts, pulled two at a time (two workers)."""
    bandit = BANDITS[method](len(rates), seed)
    spent = 0
    while spent < budget:
        for arm in bandit.select(2):
            bandit.update(int(arm), bool(rng.random() < rates[arm]))
        spent += 2
    return bandit.posterior_mean()


def score_row(policy: str, method: str, budget: str, scores: list[np.ndarray], truths: list[np.ndarray]) -> list[str]:
    """Mean ± std of Kendall τ-b and top-5 precision of each repetition's scores against its drawn truth."""
    taus = [kendalltau(s, t).statistic for s, t in zip(scores, truths)]
    precisions = [top_k_precision(s, t) for s, t in zip(scores, truths)]
    return [
        policy,
        method,
        budget,
        f"{np.nanmean(taus):.3f} ± {np.nanstd(taus):.3f}",
        f"{np.mean(precisions):.3f} ± {np.std(precisions):.3f}",
    ]


def main(argv: list[str] | None = None) -> None:
    config = parse_config(SimulationConfig, argv)
    started = time.perf_counter()
    rows = []
    for item in config.policies.split(","):
        task, _, policy = item.partition(":")
        truth = load_ground_truth(default_ground_truth_path(policy, task), task, policy)
        names = [n for n in truth.entries if n != NOMINAL]
        rates = np.array([truth.failure_rate(n) for n in names])
        truths = [
            np.random.default_rng([rep, 7]).binomial(config.episodes, rates) / config.episodes
            for rep in range(config.repetitions)
        ]

        label = f"{task}/{policy}"
        rows.append(score_row(label, "true rates (ceiling)", "—", [rates] * config.repetitions, truths))
        for method in config.methods.split(","):
            for per_mode in (int(b) for b in config.per_mode.split(",")):
                budget = per_mode * len(names)
                scores = [
                    simulate(method, rates, budget, np.random.default_rng([rep, 11]), rep)
                    for rep in range(config.repetitions)
                ]
                rows.append(score_row(label, method, f"{per_mode} per mode ({budget})", scores, truths))
    lines = [
        "# Allocation simulation: how well any allocation can rank against a 20-rollout ground truth",
        "",
        f"Command: `python -m experiments.allocation_simulation policies={config.policies} methods={config.methods} "
        f"per_mode={config.per_mode} repetitions={config.repetitions}`",
        "",
        "A design study: rollouts are Bernoulli draws from each perturbation's ground-truth failure rate, and every "
        f"repetition scores the ranking against a fresh {config.episodes}-rollout draw of the ground truth (mean ± std "
        f"over {config.repetitions} repetitions). Not a measurement of any search on the simulator: "
        "experiments/results/search_<policy>.md is.",
        "",
        markdown_table(["policy", "allocation", "rollouts", "Kendall τ-b", "top-5 precision"], rows),
        "",
        f"Wall time: {time.perf_counter() - started:.0f} s.",
    ]
    path = Path(config.out) / "allocation_simulation.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
