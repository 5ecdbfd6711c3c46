"""Non-RL allocations of the failure search: each rollout tries one perturbation on the nominal scene (an arm).

All keep a Beta(1 + failures, 1 + successes) posterior per arm and rank by its mean; they differ only in which arm
they pull next: `uniform` cycles through the arms (the exhaustive evaluation, spread evenly), `random` draws arms
uniformly at random, `thompson` draws a failure rate from each posterior and pulls the arm whose draw is highest
(it spends rollouts on the perturbations most likely to break the policy), and `lucb` pulls the two arms that keep
the top k from being settled and can say when it is (`settled`, behind `search.stop=auto`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import beta


@dataclass
class Bandit:
    arms: int
    seed: int = 0
    failures: np.ndarray = field(init=False)
    pulls: np.ndarray = field(init=False)
    rng: np.random.Generator = field(init=False, repr=False)
    selected: int = field(init=False, default=0)
    """Arms handed out by `round_robin` so far."""

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

    def round_robin(self, n: int) -> np.ndarray:
        """The next `n` arms of a cycle through all of them. The cycle follows the arms handed out, not the pulls
        counted: a rollout whose simulation failed is no pull (it says nothing about the policy), and counting
        pulls would hand the same arm out again and again."""
        arms = (self.selected + np.arange(n)) % self.arms
        self.selected += n
        return arms

    def settled(self) -> bool:
        """Whether the question the allocation answers is settled, so the search may stop (only `lucb` asks one)."""
        return False

    def answer(self) -> str:
        """What `settled` means, for the printout."""
        return ""

    def report(self) -> dict:
        """What the allocation found beyond the ranking, as summary.json keys (a boundary search: the crossing)."""
        return {}

    def state(self) -> dict:
        """Everything a resumed search needs to continue exactly as an uninterrupted one would (JSON-able)."""
        return {
            "failures": self.failures.tolist(),
            "pulls": self.pulls.tolist(),
            "rng": self.rng.bit_generator.state,
            "selected": self.selected,
        }

    def load_state(self, state: dict) -> None:
        self.failures = np.asarray(state["failures"], dtype=np.int64)
        self.pulls = np.asarray(state["pulls"], dtype=np.int64)
        self.rng.bit_generator.state = state["rng"]
        self.selected = int(state.get("selected", 0))  # checkpoints of allocations without a cycle lack it


class UniformAllocation(Bandit):
    """Round robin: after K·n rollouts every perturbation has been tried n times."""

    def select(self, n: int) -> np.ndarray:
        return self.round_robin(n)


class RandomAllocation(Bandit):
    def select(self, n: int) -> np.ndarray:
        return self.rng.integers(self.arms, size=n)


class ThompsonSampling(Bandit):
    def select(self, n: int) -> np.ndarray:
        draws = self.rng.beta(1.0 + self.failures, 1.0 + self.pulls - self.failures, size=(n, self.arms))
        return draws.argmax(axis=1)


@dataclass
class TopKIdentification(Bandit):
    """LUCB (Kalyanakrishnan et al., 2012) on the Beta posteriors: which `top_k` perturbations fail most often.

    After `warmup` pulls of every arm, the k arms of highest posterior mean are the candidate top k; of them the arm
    with the lowest lower bound, and of the rest the arm with the highest upper bound, are the two whose order is
    least certain, and they are pulled next. The top k is settled once that lower bound is at least the upper bound
    minus `tolerance`: every arm left out is then, at the configured confidence, no more than `tolerance` more
    failure-prone than every arm kept. The tolerance is what lets the search stop when several perturbations fail
    equally often (a tie across the k-th place would otherwise never separate). Bounds are the posterior quantiles
    at (1 - confidence) / (2 K), a union bound over the K arms.
    """

    top_k: int = 5
    confidence: float = 0.95
    tolerance: float = 0.1
    warmup: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.top_k < self.arms:
            raise ValueError(
                f"lucb: top_k must be between 1 and {self.arms - 1} (one less than the arms), got {self.top_k}"
            )
        if not 0 < self.confidence < 1:
            raise ValueError(f"lucb: confidence must lie strictly between 0 and 1, got {self.confidence}")
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"lucb: tolerance must lie in [0, 1), got {self.tolerance}")
        if self.warmup < 1:
            raise ValueError(f"lucb: warmup must be >= 1 pull per arm, got {self.warmup}")

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of every arm's failure rate."""
        level = (1.0 - self.confidence) / (2 * self.arms)
        a, b = 1.0 + self.failures, 1.0 + self.pulls - self.failures
        return beta.ppf(level, a, b), beta.isf(level, a, b)

    def contenders(self, low: np.ndarray, high: np.ndarray) -> tuple[int, int]:
        """(the weakest arm in the candidate top k, the strongest arm outside it), given the arms' bounds."""
        order = np.argsort(-self.posterior_mean(), kind="stable")
        inside, outside = order[: self.top_k], order[self.top_k :]
        return int(inside[np.argmin(low[inside])]), int(outside[np.argmax(high[outside])])

    def select(self, n: int) -> np.ndarray:
        pulls = self.pulls.astype(float)
        chosen = []
        weakest, strongest = self.contenders(*self.bounds())
        for _ in range(n):
            # Arms handed out in this batch count as pulled, so parallel workers do not all get the same arm.
            if pulls.min() < self.warmup:
                arm = int(np.argmin(pulls))
            else:
                arm = weakest if pulls[weakest] <= pulls[strongest] else strongest
            chosen.append(arm)
            pulls[arm] += 1
        return np.array(chosen)

    def settled(self) -> bool:
        if self.pulls.min() < self.warmup:
            return False
        low, high = self.bounds()
        weakest, strongest = self.contenders(low, high)
        return bool(low[weakest] >= high[strongest] - self.tolerance)

    def answer(self) -> str:
        return f"top {self.top_k} settled at confidence {self.confidence:.0%} (tolerance {self.tolerance:g})"
