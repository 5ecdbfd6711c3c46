"""PatchCore (Roth et al. 2022) on FIDeL's patch features: nearest neighbours in a memory bank of nominal patches.

The bank holds patch features of every frame of the learning episodes, subsampled as PatchCore does: a greedy
k-centre coreset (each new member is the patch farthest from the bank so far, so rare nominal patches are kept and
redundant background is not), or a random subset, or everything. A query patch's anomaly is the Euclidean distance to
its nearest bank patch, the frame score the largest over patches, the heatmap those distances on the grid. Position
and time are ignored (a patch is nominal if it looks like any nominal patch anywhere, at any time); PatchCore's
neighbourhood re-weighting of the score is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from envs.choices import check_choice
from monitor.base import SemanticFilter
from monitor.baselines.base import Calibration, ThresholdMonitor, finite, nominal_features
from monitor.encoders import EncoderConfig, PatchEncoder

SAMPLINGS = ("coreset", "random", "all")


@dataclass(frozen=True)
class PatchCoreConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """Frozen backbone and patch grid (FIDeL's by default, so both see the same features)."""
    sampling: str = "coreset"
    """How the bank is subsampled: coreset (greedy k-centre), random, or all (no subsampling)."""
    bank_fraction: float = 0.1
    """Share of the learning patches kept in the bank (PatchCore's and anomalib's default 10%)."""
    seed: int = 0
    """Seed of the coreset's first member or of the random subset."""
    calibration: Calibration = field(default_factory=Calibration)
    """Split and threshold (FIDeL's α, memory fraction and split seed by default)."""

    def __post_init__(self) -> None:
        check_choice(self.sampling, SAMPLINGS, "PatchCore sampling")
        if not 0 < self.bank_fraction <= 1:
            raise ValueError(f"bank_fraction must be in (0, 1], got {self.bank_fraction!r}")


def greedy_coreset(points: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """Indices of `size` points chosen by greedy k-centre (farthest-point) selection from a seeded first point."""
    size = min(size, len(points))
    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = int(np.random.default_rng(seed).integers(len(points)))
    nearest = ((points - points[chosen[0]]) ** 2).sum(1)
    for i in range(1, size):
        chosen[i] = torch.argmax(nearest)
        nearest = torch.minimum(nearest, ((points - points[chosen[i]]) ** 2).sum(1))
    return chosen


class PatchCoreScorer:
    """Nearest-bank-patch distances of each query patch."""

    def __init__(self, encoder: PatchEncoder, bank: torch.Tensor):
        self.encoder, self.bank = encoder, bank
        self.grid = encoder.config.grid
        self._bank_squared = (bank * bank).sum(1)

    @classmethod
    def fit(cls, encoder: PatchEncoder, features: Sequence[torch.Tensor], config: PatchCoreConfig) -> PatchCoreScorer:
        patches = torch.cat([f.reshape(-1, f.shape[-1]) for f in features]).float()
        size = max(1, round(config.bank_fraction * len(patches)))
        if config.sampling == "coreset":
            keep = greedy_coreset(patches, size, config.seed)
        elif config.sampling == "random":
            keep = torch.from_numpy(np.random.default_rng(config.seed).choice(len(patches), size, replace=False))
        else:
            keep = torch.arange(len(patches))
        return cls(encoder, patches[keep].contiguous())

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"bank": self.bank}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: PatchCoreConfig) -> PatchCoreScorer:
        return cls(PatchEncoder(config.encoder), tensors["bank"])

    def score_features(self, features: torch.Tensor, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch, patches, dim = features.shape
        query = features.reshape(-1, dim).float()
        # The nearest bank patch by ‖b‖² − 2q·b (one matmul), then its exact distance: the expanded form cancels
        # badly in float32 for near-identical patches, where the square root amplifies the error.
        nearest = (self._bank_squared - 2 * query @ self.bank.T).argmin(1)
        distances = (query.double() - self.bank[nearest].double()).norm(dim=1).reshape(batch, patches)
        heatmaps = distances.float().reshape(batch, self.grid, self.grid).numpy()
        return distances.max(1).values.numpy(), heatmaps

    def score(self, frames: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.score_features(finite(self.encoder(frames), "these frames"), steps)


class PatchCoreMonitor(ThresholdMonitor):
    """PatchCore as a runtime monitor; build it with `fit` or `load`."""

    kind, config_class, scorer_class = "patchcore", PatchCoreConfig, PatchCoreScorer

    @classmethod
    def fit(
        cls,
        task: str,
        nominal_episodes: Sequence[np.ndarray],
        config: PatchCoreConfig = PatchCoreConfig(),
        encoder: PatchEncoder | None = None,
        features: Sequence[torch.Tensor] | None = None,
        semantic_filter: SemanticFilter | None = None,
    ) -> PatchCoreMonitor:
        """Fits on nominal camera streams (T_i, H, W, 3) uint8; `encoder` / `features` (per episode, (T_i, P, F))
        may be passed to share them with other monitors."""
        encoder = encoder or PatchEncoder(config.encoder)
        features = nominal_features(encoder, nominal_episodes, features)

        def build(learn: list[int]) -> PatchCoreScorer:
            return PatchCoreScorer.fit(encoder, [features[i] for i in learn], config)

        return cls.fit_scorer(
            task,
            nominal_episodes,
            config,
            build,
            semantic_filter=semantic_filter,
            score_nominal=lambda scorer, i: scorer.score_features(features[i], np.arange(len(features[i])))[0],
        )
