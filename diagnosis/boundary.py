"""Failure boundaries: where along one parameter a policy's success falls below one half.

The rollouts go to a grid of values on one side of the nominal one (envs.perturbations.sweeps.boundary_grid), each
at a position t from 0 (nearest the nominal scene) to 1 (farthest). Success along it is modelled as a logistic
curve that falls with t, p(t) = σ(a − b·t) with b ≥ 0, under a flat prior on a box of (a, b), evaluated on a grid:
exact for two parameters, and it gives the crossing t½ = a / b (where p = ½) with its interval directly. By
default the rollouts go round robin over the grid; `allocation=bisection` instead draws (a, b) from the posterior
for each pull and tries the grid point nearest that draw's crossing, so rollouts gather where the boundary may be
(it fitted the ground-truth sweeps worse where the curve is not logistic: experiments/results/
boundary_lift_bc_colour.md). The boundary is
settled when the crossing's interval is narrower than `tolerance` (in units of the grid's span), or when the
posterior puts the crossing beyond the grid (success stays above ½ throughout) or before it (below ½ from the
start) with the configured confidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from diagnosis.bandits import Bandit

INTERCEPTS = np.linspace(-6.0, 8.0, 71)
"""a: logit of success at the grid's near end (σ(8) ≈ 0.9997, σ(−6) ≈ 0.0025)."""
SLOPES = np.linspace(0.0, 40.0, 81)
"""b: how steeply the logit falls over the grid's span (40: from certain success to certain failure within 1/5)."""
ALLOCATIONS = ("bisection", "uniform")


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, quantiles: tuple[float, ...]) -> list[float]:
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    cumulative /= cumulative[-1]
    return [float(values[order][min(np.searchsorted(cumulative, q), len(order) - 1)]) for q in quantiles]


@dataclass
class BoundarySearch(Bandit):
    """A bandit over the grid's points (arms) that looks for the value where success falls below one half."""

    positions: tuple[float, ...] = ()
    """Each arm's place on the grid, 0 (nearest the nominal value) to 1 (farthest)."""
    values: tuple[float, ...] = ()
    """Each arm's parameter value (for reporting the crossing in the parameter's units)."""
    log: bool = False
    """Whether the parameter acts on a log scale (values between arms are interpolated geometrically)."""
    allocation: str = "uniform"
    """uniform: round robin over the grid; bisection: pulls go where the crossing may be. Same model and verdict;
    round robin fitted the ground-truth sweeps better (experiments/results/boundary_lift_bc_colour.md)."""
    confidence: float = 0.95
    tolerance: float = 0.1
    warmup: int = 2
    intercept: np.ndarray = field(init=False, repr=False)
    slope: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.positions) != self.arms or len(self.values) != self.arms:
            raise ValueError(f"boundary: {self.arms} arms need as many positions and values")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"boundary: unknown allocation {self.allocation!r}; valid: {', '.join(ALLOCATIONS)}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"boundary: confidence must lie strictly between 0 and 1, got {self.confidence}")
        if not 0 < self.tolerance <= 1:
            raise ValueError(
                f"boundary: tolerance must lie in (0, 1] (a share of the grid's span), got {self.tolerance}"
            )
        if self.warmup < 1:
            raise ValueError(f"boundary: warmup must be >= 1 pull per anchor point, got {self.warmup}")
        self.intercept, self.slope = (grid.ravel() for grid in np.meshgrid(INTERCEPTS, SLOPES, indexing="ij"))

    @property
    def anchors(self) -> list[int]:
        """The grid's two ends and its middle: tried `warmup` times each before the allocation adapts."""
        return sorted({0, self.arms // 2, self.arms - 1})

    def posterior(self) -> np.ndarray:
        """Posterior weight of every (a, b) on the grid, from the arms' successes and failures."""
        logit = self.intercept[:, None] - self.slope[:, None] * np.asarray(self.positions)[None, :]
        successes = self.pulls - self.failures
        # log σ(z) and log(1 − σ(z)) = log σ(−z), stably.
        log_likelihood = -(successes * np.logaddexp(0.0, -logit) + self.failures * np.logaddexp(0.0, logit)).sum(1)
        weights = np.exp(log_likelihood - log_likelihood.max())
        return weights / weights.sum()

    def crossings(self) -> np.ndarray:
        """t½ = a / b of every (a, b): +inf where success never falls to ½ (b = 0, a > 0), −inf where it starts
        below."""
        with np.errstate(divide="ignore", invalid="ignore"):
            t = self.intercept / self.slope
        flat = self.slope == 0
        t[flat] = np.where(self.intercept[flat] > 0, np.inf, -np.inf)
        return t

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Posterior mean success at every arm, with its 95% band."""
        weights = self.posterior()
        success = 1.0 / (1.0 + np.exp(-(self.intercept[:, None] - self.slope[:, None] * np.asarray(self.positions))))
        mean = weights @ success
        bands = np.array([_weighted_quantiles(success[:, i], weights, (0.025, 0.975)) for i in range(self.arms)])
        return mean, bands[:, 0], bands[:, 1]

    def posterior_mean(self) -> np.ndarray:
        """The failure score of every arm: one minus the curve's success there (what the ranking orders by)."""
        return 1.0 - self.curve()[0]

    def select(self, n: int) -> np.ndarray:
        if self.allocation == "uniform":
            return self.round_robin(n)
        pulls = self.pulls.astype(float)
        chosen = []
        crossings = None
        for _ in range(n):
            short = [arm for arm in self.anchors if pulls[arm] < self.warmup]
            if short:
                arm = short[0]
            else:
                if crossings is None:
                    weights, crossings = self.posterior(), self.crossings()
                draw = crossings[self.rng.choice(len(weights), p=weights)]
                arm = int(np.argmin(np.abs(np.asarray(self.positions) - np.clip(draw, 0.0, 1.0))))
            chosen.append(arm)
            pulls[arm] += 1
        return np.array(chosen)

    def crossing(self) -> dict[str, float]:
        """The crossing's posterior median and 95% interval in grid units (clipped to the grid: beyond an end means
        at or past it), and the posterior probability that it lies before or beyond the grid."""
        weights, t = self.posterior(), self.crossings()
        low, median, high = _weighted_quantiles(t, weights, (0.025, 0.5, 0.975))
        return {
            "median": float(np.clip(median, 0.0, 1.0)),
            "low": float(np.clip(low, 0.0, 1.0)),
            "high": float(np.clip(high, 0.0, 1.0)),
            "width": float(high - low),  # unclipped: an interval reaching past an end is not narrow
            "p_before": float(weights[t < 0].sum()),
            "p_beyond": float(weights[t > 1].sum()),
        }

    def value_at(self, position: float) -> float:
        """The parameter value at a grid position, interpolated between arms on the parameter's scale."""
        values = np.asarray(self.values, dtype=float)
        if self.log:
            return float(np.sign(values[0]) * np.exp(np.interp(position, self.positions, np.log(np.abs(values)))))
        return float(np.interp(position, self.positions, values))

    def settled(self) -> bool:
        if any(self.pulls[arm] < self.warmup for arm in self.anchors):
            return False
        crossing = self.crossing()
        outside = max(crossing["p_before"], crossing["p_beyond"]) >= self.confidence
        return bool(outside or crossing["width"] <= self.tolerance)

    def answer(self) -> str:
        return f"boundary settled (95% interval of the crossing within {self.tolerance:g} of the grid's span)"

    def report(self) -> dict:
        """The crossing in the parameter's units and the fitted curve, for the summary."""
        crossing = self.crossing()
        mean, low, high = self.curve()
        if crossing["p_beyond"] >= self.confidence:
            verdict = "success stays above one half over the whole grid"
        elif crossing["p_before"] >= self.confidence:
            verdict = "success is below one half from the grid's near end"
        elif 1.0 - crossing["p_beyond"] - crossing["p_before"] >= self.confidence:
            verdict = "success falls below one half inside the grid"
        else:
            verdict = "undecided: the rollouts do not yet place the crossing inside or outside the grid"
        # On a side below the nominal value the grid runs downwards: the interval's ends are ordered by value.
        ends = sorted((self.value_at(crossing["low"]), self.value_at(crossing["high"])))
        boundary = {
            "verdict": verdict,
            "crossing": self.value_at(crossing["median"]),
            "crossing_low": ends[0],
            "crossing_high": ends[1],
            **{key: crossing[key] for key in ("p_before", "p_beyond")},
            "curve": [
                {"value": v, "position": t, "success": m, "success_low": lo, "success_high": hi}
                for v, t, m, lo, hi in zip(self.values, self.positions, mean, low, high)
            ],
        }
        return {"boundary": boundary}
