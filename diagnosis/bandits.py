"""Non-RL baselines of the failure search: each rollout tries one perturbation on the nominal scene (an arm).

All three keep a Beta(1 + failures, 1 + successes) posterior per arm and rank by its mean; they differ only in
which arm they pull next: `uniform` cycles through the arms (the exhaustive evaluation, spread evenly), `random`
draws arms uniformly at random, `thompson` draws a failure rate from each posterior and pulls the arm whose draw is
highest (it spends rollouts on the perturbations most likely to break the policy).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Bandit:
    arms: int
    seed: int = 0
    failures: np.ndarray = field(init=False)
    pulls: np.ndarray = field(init=False)
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.failures = np.zeros(self.arms, dtype=np.int64)
        self.pulls = np.zeros(self.arms, dtype=np.int64)
        self.rng = np.random.default_rng([self.seed, 1729])

    def select(self, n: int) -> np.ndarray:
        """The next `n` arms to pull (one per parallel worker)."""
        raise NotImplementedError

    def update(self, arm: int, failed: bool) -> None:
        self.pulls[arm] += 1
        self.failures[arm] += int(failed)

    def posterior_mean(self) -> np.ndarray:
        return (1.0 + self.failures) / (2.0 + self.pulls)

    def state(self) -> dict:
        """Everything a resumed search needs to continue exactly as an uninterrupted one would (JSON-able)."""
        return {"failures": self.failures.tolist(), "pulls": self.pulls.tolist(), "rng": self.rng.bit_generator.state}

    def load_state(self, state: dict) -> None:
        self.failures = np.asarray(state["failures"], dtype=np.int64)
        self.pulls = np.asarray(state["pulls"], dtype=np.int64)
        self.rng.bit_generator.state = state["rng"]


@dataclass
class UniformAllocation(Bandit):
    """Round robin: after K·n rollouts every perturbation has been tried n times.

    The cycle follows the arms handed out, not the pulls counted: a rollout whose simulation failed is no pull (it
    says nothing about the policy), and counting pulls would hand the same arm out again and again."""

    selected: int = field(init=False, default=0)

    def select(self, n: int) -> np.ndarray:
        arms = (self.selected + np.arange(n)) % self.arms
        self.selected += n
        return arms

    def state(self) -> dict:
        return {**super().state(), "selected": self.selected}

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.selected = int(state["selected"])


class RandomAllocation(Bandit):
    def select(self, n: int) -> np.ndarray:
        return self.rng.integers(self.arms, size=n)


class ThompsonSampling(Bandit):
    def select(self, n: int) -> np.ndarray:
        draws = self.rng.beta(1.0 + self.failures, 1.0 + self.pulls - self.failures, size=(n, self.arms))
        return draws.argmax(axis=1)


BANDITS: dict[str, type[Bandit]] = {
    "uniform": UniformAllocation,
    "random": RandomAllocation,
    "thompson": ThompsonSampling,
}
