"""Failure rates estimated from the rollouts a perturbation got, apart from how those rollouts were chosen.

Whatever allocated the rollouts (PPO, a bandit, round robin), a perturbation tried alone n times that failed k
times has an observed failure rate k/n with a 95% Wilson interval: the figure a user can act on, where a search's
ranking score (RoboMD's softmax over modes, a posterior mean normalised over modes) only orders the modes.
"""

from __future__ import annotations

from scipy.stats import binomtest


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (well-behaved at 0 and 1, unlike the normal one);
    (0, 1) when there are no trials."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    interval = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def failure_rate(failed: int, tried: int) -> dict[str, float | None]:
    """Observed failure rate with its 95% Wilson interval (rate None when never tried)."""
    low, high = wilson_interval(failed, tried)
    return {"failure_rate": failed / tried if tried else None, "failure_rate_low": low, "failure_rate_high": high}
