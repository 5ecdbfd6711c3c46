"""FIDeL's frame score: entropic optimal transport between a frame's patches and each memory timestep's patches.

For a query frame with patch features x (P×F) and memory timestep t with per-patch Gaussians (μ_t, σ_t), the cost
of sending query patch i to memory patch j is the σ-normalised distance ‖(x_i − μ_tj)/σ_tj‖ / √F (divided by √F so
that costs read as RMS z-scores and ε means the same for every encoder). The score of the frame is the smallest
entropic-OT transport cost ⟨Π_t, C_t⟩ over t (uniform marginals), t_min its argmin, and the heatmap each query
patch's cheapest memory patch at t_min. Matching patches by OT instead of by position tolerates objects that sit
elsewhere in the image than in the demonstrations.

That is FIDeL as published, and OTScorer's default. The monitor's defaults (monitor.fidel.FidelConfig, measured in
experiments/fidel_variants.py) add a positional term λ·‖pos_i − pos_j‖ to the cost (OTConfig.position_weight), a
temporal prior on t_min, and score a frame by its heatmap's largest patches, the heatmap being each query patch's
transported cost: the mean transport cost dilutes a change confined to the one or two patches of a small object.

Why our own solver instead of POT's `ot.batch.solve_batch` (the reference in the tests and in `monitor.bench`):
on these costs plain Sinkhorn needs hundreds of iterations per frame. Successive frames are nearly identical, so
the previous frame's potentials are an excellent start; the minimum over t only needs the near-minimal timesteps
solved, so the others are dropped after one iteration; and Newton's method finishes the kept ones in a few steps.
Measurements are in experiments/results/monitor_bench.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from envs.choices import check_choice


@dataclass(frozen=True)
class OTConfig:
    """Entropic OT settings (costs are RMS z-scores, so nominal matched patches cost about 1)."""

    epsilon: float = 0.5
    """Entropic regularisation, in cost units: smaller = closer to an exact matching, slower to converge."""
    tol: float = 1e-4
    """Stop when every kept timestep's marginal L1 error is below this (≈ the relative error of the score)."""
    max_newton_steps: int = 30
    """Cap on Newton steps per frame (warm-started frames need 2–4)."""
    prune_margin: float | None = 0.1
    """After one Sinkhorn iteration, solve only timesteps whose cost is within this fraction of the best;
    None solves all (to get every timestep's cost, not just the minimum)."""
    position_weight: float = 0.3
    """λ: sending query patch i to memory patch j also costs λ·‖pos_i − pos_j‖, positions in grid cells, so the
    transport stays local (0 = appearance only, positions ignored, as published). Plain OT matches a moved cube's
    patches with cube patches elsewhere in the memory. Chosen on the SimFails-lift filter split: a small λ keeps the
    overall AUROC and raises most per-kind ones, a large one costs AUROC
    (experiments/results/fidel_variants_lift.md, made by experiments/fidel_variants.py)."""

    def __post_init__(self) -> None:
        for name in ("epsilon", "tol"):
            if not getattr(self, name) > 0:
                raise ValueError(f"OTConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not self.position_weight >= 0:
            raise ValueError(f"OTConfig.position_weight must be >= 0, got {self.position_weight!r}")
        if self.max_newton_steps < 1:
            raise ValueError(f"OTConfig.max_newton_steps must be >= 1, got {self.max_newton_steps!r}")
        if self.prune_margin is not None and self.prune_margin < 0:
            raise ValueError(f"OTConfig.prune_margin must be >= 0 or None, got {self.prune_margin!r}")


class PatchCost:
    """σ-normalised patch distances from one query frame to many memory timesteps, as one float64 matmul.

    ‖(x−μ)/σ‖² = Σ_f x²/σ² − 2xμ/σ² + μ²/σ², so the costs to all T·P memory patches are [x², x] @ W + c with W and c
    precomputed. float64 because the costs of unchanged patches are ~0, where the square root amplifies float32
    cancellation into errors the score would inherit.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, position_weight: float = 0.0):
        """`mean`, `std`: (T, P, F) per-timestep, per-patch Gaussian statistics (std already floored), patches
        row-major over a square grid; `position_weight`: λ of the positional term (OTConfig.position_weight)."""
        if mean.shape != std.shape or mean.dim() != 3:
            raise ValueError(f"mean and std must both be (T, P, F), got {tuple(mean.shape)} and {tuple(std.shape)}")
        self.steps, self.patches, self.dim = mean.shape
        self.position_weight = float(position_weight)
        self._position: torch.Tensor | None = None
        if self.position_weight > 0:
            self._position = self.position_weight * grid_distances(self.patches)
        mean, std = mean.double(), std.double()
        # Centre features: smaller magnitudes, less cancellation.
        self.offset = mean.mean(dim=(0, 1))
        centred = mean - self.offset
        inv_var = 1.0 / (std * std * self.dim)
        weights = torch.cat([inv_var, -2.0 * centred * inv_var], dim=-1)  # (T, P, 2F)
        self._weights = weights.reshape(self.steps * self.patches, 2 * self.dim).T.contiguous()  # (2F, T·P)
        self._bias = (centred * centred * inv_var).sum(-1).reshape(-1)  # (T·P,)

    def __call__(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Costs (stop−start, P, P) float32 from the query's patches x (P, F) to memory timesteps start..stop-1."""
        stop = self.steps if stop is None else stop
        lo, hi = start * self.patches, stop * self.patches
        centred = x.double() - self.offset
        features = torch.cat([centred * centred, centred], dim=-1)
        squared = torch.addmm(self._bias[lo:hi], features, self._weights[:, lo:hi])
        cost = squared.clamp_min_(0.0).sqrt_().float()  # (P, n·P)
        cost = cost.view(x.shape[0], stop - start, self.patches).transpose(0, 1)
        return cost if self._position is None else cost + self._position


def grid_distances(patches: int) -> torch.Tensor:
    """(P, P) Euclidean distances, in cells, between the patches of a square grid (row-major)."""
    grid = math.isqrt(patches)
    if grid * grid != patches:
        raise ValueError(f"a positional cost needs a square patch grid, got P={patches}")
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    position = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1).float()
    return torch.cdist(position, position)


@dataclass
class OTResult:
    """Solutions of a batch of OT problems (only the kept ones when pruning)."""

    values: torch.Tensor
    """(K,) transport costs ⟨Π, C⟩ of the kept problems, float64."""
    kept: torch.Tensor
    """(K,) indices of the kept problems in the batch."""
    potentials: torch.Tensor
    """(B, P) column potentials g/ε of every problem, for warm-starting the next frame."""
    newton_steps: int
    error: float
    """Largest marginal L1 error among the kept problems."""
    rows: torch.Tensor | None = None
    """(K, n) each query patch's transported cost n·Σ_j Π_ij C_ij (their mean is `values`), float64."""


def solve_ot(
    cost: torch.Tensor, config: OTConfig, potentials: torch.Tensor | None = None, penalty: torch.Tensor | None = None
) -> OTResult:
    """Batched entropic OT with uniform marginals: one log-domain Sinkhorn iteration, pruning, then Newton.

    The Sinkhorn iteration (two log-sum-exps, float32) gives every problem exact marginals on both sides and a cost
    estimate within a few percent, enough to drop timesteps that cannot be the minimum. The kept problems are then
    solved by damped Newton on the semi-dual (float64), which converges quadratically from a warm start in a few
    steps, where Sinkhorn alone needs hundreds of iterations on these costs (many near-identical background patches
    make its contraction slow; `monitor.bench` reports both counts). `penalty` (B,), when given, is added to each
    problem's cost estimate before pruning (the minimum sought is then that of cost + penalty).
    """
    batch, n, m = cost.shape
    log_kernel = cost / -config.epsilon
    g = torch.zeros(batch, m) if potentials is None else potentials.clone()
    f = -math.log(n) - torch.logsumexp(log_kernel + g[:, None, :], dim=2)
    g = -math.log(m) - torch.logsumexp(log_kernel + f[:, :, None], dim=1)
    kept = torch.arange(batch)
    if config.prune_margin is not None:
        estimate = (torch.exp(log_kernel + f[:, :, None] + g[:, None, :]) * cost).sum((1, 2))
        if penalty is not None:
            estimate = estimate + penalty.to(estimate.dtype)
        kept = torch.nonzero(estimate <= estimate.min() * (1.0 + config.prune_margin)).squeeze(1)
    k_cost = cost[kept].double()
    k_g, plan, steps, error = _newton(k_cost / -config.epsilon, g[kept].double(), config)
    g[kept] = k_g.float()
    rows = (plan * k_cost).sum(2) * n
    values = rows.mean(1)
    if not torch.isfinite(values).all():
        raise FloatingPointError(f"OT costs are not finite (epsilon={config.epsilon}): {values.tolist()}")
    return OTResult(values=values, kept=kept, potentials=g, newton_steps=steps, error=error, rows=rows)


def _newton(
    log_kernel: torch.Tensor, g: torch.Tensor, config: OTConfig
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Damped Newton ascent on the semi-dual Φ(g) = Σ_i a_i f_i(g) + Σ_j b_j g_j, f the exact row potentials.

    ∇Φ = b − colsum(Π) and −∇²Φ = diag(colsum) − Πᵀ diag(1/a) Π, singular along 1 (potentials are defined up to a
    constant), which the rank-one term 11ᵀ/m removes. Steps are halved where they would raise the marginal error.
    """
    batch, n, m = log_kernel.shape
    ridge = torch.full((m, m), 1.0 / m, dtype=g.dtype) + 1e-9 * torch.eye(m, dtype=g.dtype)

    def plan_for(potential: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        shifted = log_kernel + potential[:, None, :]
        plan = torch.exp(shifted - (math.log(n) + torch.logsumexp(shifted, dim=2, keepdim=True)))
        columns = plan.sum(1)
        return plan, columns, torch.linalg.vector_norm(columns - 1.0 / m, ord=1, dim=1)

    plan, columns, error = plan_for(g)
    steps = 0
    while error.max() >= config.tol and steps < config.max_newton_steps:
        hessian = torch.baddbmm(torch.diag_embed(columns) + ridge, plan.transpose(1, 2), plan, alpha=-n)
        factor, _ = torch.linalg.cholesky_ex(hessian)  # positive definite: Cholesky is half the cost of LU
        direction = torch.cholesky_solve((1.0 / m - columns)[:, :, None], factor).squeeze(2)
        step = torch.ones(batch, 1, dtype=g.dtype)
        for _ in range(10):
            new = plan_for(g + step * direction)
            worse = new[2] > error
            if not worse.any():
                break
            step[worse] /= 2
        g, (plan, columns, error) = g + step * direction, new
        steps += 1
    return g, plan, steps, float(error.max())


@dataclass(frozen=True)
class Match:
    """How one frame matches the memory."""

    score: float
    """The frame score: the entropic OT cost at t_min, or a reading of the heatmap (OTScorer's `frame_score`)."""
    t_min: int
    """The best-matching memory timestep (under the temporal prior, if any)."""
    heatmap: torch.Tensor
    """(P,) per query patch: its cheapest memory patch at t_min, or its transported cost (OTScorer's `heatmap`)."""
    newton_steps: int


FRAME_SCORES = ("transport", "heatmap", "band")
HEATMAPS = ("min", "transport")
TIME_ANCHORS = ("clock", "progress")


class OTScorer:
    """Scores the frames of one episode against the memory, warm-starting each frame from the previous one.

    The defaults are FIDeL as published (score = the minimal transport cost over t); `FidelConfig` documents and
    sets the options the monitor uses (frame score from the heatmap, a temporal prior)."""

    def __init__(
        self,
        cost: PatchCost,
        config: OTConfig,
        prior: torch.Tensor,
        *,
        window: int | None,
        frame_score: str = "transport",
        top_k: int = 1,
        heatmap: str = "min",
        time_weight: float = 0.0,
        lag: int | None = None,
        time_score_weight: float = 0.0,
        time_anchor: str = "clock",
    ):
        """`prior`: (T, P) potentials that start every episode; `window`: memory steps searched either side of
        the previous t_min (None = all T every frame); `frame_score`: the score is the transport cost
        ("transport") or the mean of the `top_k` largest heatmap values ("heatmap"); `heatmap`: per query patch,
        its cheapest memory patch ("min") or its transported cost under the plan ("transport"); `time_weight`: γ,
        t_min minimises transport cost + γ·|t − k|/T for the episode's k-th frame (the memory is in normalised time
        with T = the median nominal length, so a nominal frame k sits near step k); `lag`: steps searched before
        the previous t_min (None = `window`); `time_score_weight`: γ', the score adds γ'·|t_min − k|/T (a frame
        that matches a phase far from its place in the episode is itself anomalous); `time_anchor`: the k of both
        is the frame's index ("clock") or the previous t_min + 1 ("progress": an execution at another pace than
        the demonstrations' is not pulled back to their clock). frame_score="band": the score
        is `normaliser.nonconformity(t_min, heatmap)` (a fitted per-patch band, set by the monitor once it is
        calibrated; the top-`top_k` heatmap mean until then)."""
        if prior.shape != (cost.steps, cost.patches):
            raise ValueError(f"prior potentials must be {(cost.steps, cost.patches)}, got {tuple(prior.shape)}")
        if window is not None and window < 0:
            raise ValueError(f"window must be >= 0 or None, got {window!r}")
        if lag is not None and lag < 0:
            raise ValueError(f"lag must be >= 0 or None, got {lag!r}")
        check_choice(frame_score, FRAME_SCORES, "frame_score")
        check_choice(heatmap, HEATMAPS, "heatmap")
        if not 1 <= top_k <= cost.patches:
            raise ValueError(f"top_k must be in [1, {cost.patches}], got {top_k!r}")
        if not time_weight >= 0:
            raise ValueError(f"time_weight must be >= 0, got {time_weight!r}")
        if not time_score_weight >= 0:
            raise ValueError(f"time_score_weight must be >= 0, got {time_score_weight!r}")
        check_choice(time_anchor, TIME_ANCHORS, "time_anchor")
        self.time_score_weight, self.time_anchor = time_score_weight, time_anchor
        self.cost, self.config, self.prior, self.window = cost, config, prior, window
        self.frame_score, self.top_k, self.heatmap, self.time_weight, self.lag = (
            frame_score,
            top_k,
            heatmap,
            time_weight,
            lag,
        )
        self.normaliser = None
        """frame_score="band": an object with `nonconformity(t (1,), values (1, P)) -> (1,)` (a ConformalBand)."""
        self.reset()

    def reset(self) -> None:
        """A new episode: start from the prior and forget t_min (the first frame searches all timesteps)."""
        self._potentials = self.prior.clone()
        self._previous: int | None = None
        self._frame = 0

    def search_range(self) -> tuple[int, int]:
        """Memory timesteps [start, stop) the next frame is compared with."""
        if self.window is None or self._previous is None:
            return 0, self.cost.steps
        back = self.window if self.lag is None else self.lag
        return max(0, self._previous - back), min(self.cost.steps, self._previous + self.window + 1)

    def __call__(self, x: torch.Tensor) -> Match:
        """Matches one frame's patch features x (P, F)."""
        start, stop = self.search_range()
        cost = self.cost(x, start, stop)
        penalty = None
        anchor = self._frame if self.time_anchor == "clock" or self._previous is None else self._previous + 1
        expected = min(anchor, self.cost.steps - 1)
        if self.time_weight > 0:
            steps = torch.arange(start, stop, dtype=torch.float64)
            penalty = self.time_weight * (steps - expected).abs() / self.cost.steps
        result = solve_ot(cost, self.config, self._potentials[start:stop], penalty)
        self._potentials[start:stop] = result.potentials
        objective = result.values if penalty is None else result.values + penalty[result.kept]
        best = int(torch.argmin(objective))
        local = int(result.kept[best])
        self._previous = start + local
        self._frame += 1
        if self.heatmap == "min":
            heatmap = cost[local].min(dim=1).values
        else:
            heatmap = result.rows[best].float()
        if self.frame_score == "transport":
            score = float(result.values[best])
        elif self.frame_score == "band" and self.normaliser is not None:
            values = heatmap.double().numpy()[None]
            score = float(self.normaliser.nonconformity(np.array([self._previous]), values)[0])
        else:
            score = float(torch.topk(heatmap, self.top_k).values.double().mean())
        if self.time_score_weight > 0:
            score += self.time_score_weight * abs(self._previous - expected) / self.cost.steps
        return Match(score, self._previous, heatmap, result.newton_steps)


def prior_potentials(cost: PatchCost, mean: torch.Tensor, config: OTConfig) -> torch.Tensor:
    """Potentials of each memory timestep matched with its own mean frame: a nominal start for every episode."""
    costs = torch.stack([cost(mean[t], t, t + 1)[0] for t in range(cost.steps)])
    return solve_ot(costs, replace(config, prune_margin=None)).potentials
