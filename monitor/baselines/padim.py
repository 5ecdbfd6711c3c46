"""PaDiM (Defard et al. 2021) on FIDeL's patch features: a Gaussian per patch position, no OT matching.

The same frozen `PatchEncoder` features as FIDeL (P = 7×7 positions, F dims). Two variants:

- `time="global"` — PaDiM as published: one Gaussian per position over every frame of the learning episodes, full
  covariance, shrunk towards a scaled identity by the Ledoit–Wolf formula (PaDiM adds 0.01·I, which assumes ResNet
  feature scales; Ledoit–Wolf picks the amount from the data), plus FIDeL's σ floor on the diagonal so that a
  position that never changes (static background) does not make every change there infinitely anomalous. Phases
  of the task (arm up, arm at the cube) all fall into one Gaussian, so it is loose where the robot moves.
- `time="step"` — per episode step and position, a diagonal Gaussian with FIDeL's σ floor: FIDeL's memory without
  the OT and without t_min. Online a frame's normalised time is unknown (the episode's length is known only at its
  end), so step k of a live episode is compared with step k of the learning episodes (the statistics at k use the
  episodes that lasted longer than k; past the last step that two episodes reach, that last step).

Score of a frame = the largest per-position Mahalanobis distance (PaDiM's image score is the maximum of its anomaly
map); heatmap = the per-position distances on the grid.
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

TIMES = ("global", "step")


@dataclass(frozen=True)
class PadimConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """Frozen backbone and patch grid (FIDeL's by default, so both see the same features)."""
    time: str = "global"
    """global: one full-covariance Gaussian per position (PaDiM); step: a diagonal one per step and position."""
    sigma_floor: float = 0.1
    """σ² = var + floor² (step) or Σ + diag(floor²) (global); floor = this fraction of each feature's overall std
    (FIDeL's floor)."""
    calibration: Calibration = field(default_factory=Calibration)
    """Split and threshold (FIDeL's α, memory fraction and split seed by default)."""

    def __post_init__(self) -> None:
        check_choice(self.time, TIMES, "PaDiM time")
        if not self.sigma_floor > 0:
            raise ValueError(f"sigma_floor must be > 0, got {self.sigma_floor!r}")


def ledoit_wolf(samples: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Shrunk covariance (1−s)·S + s·tr(S)/F·I of samples (n, F) and the shrinkage s (Ledoit & Wolf 2004, as
    scikit-learn computes it)."""
    n, dim = samples.shape
    x = (samples - samples.mean(0)).double()
    empirical = x.T @ x / n
    mu = float(torch.trace(empirical)) / dim
    squared = x * x
    beta_sum = float((squared.T @ squared).sum())
    delta_sum = float(((x.T @ x) ** 2).sum()) / n**2
    beta = (beta_sum / n - delta_sum) / (dim * n)
    delta = (delta_sum - 2 * mu * float(torch.trace(empirical)) + dim * mu**2) / dim
    shrinkage = 0.0 if beta == 0 else min(beta, delta) / delta
    shrunk = (1 - shrinkage) * empirical + shrinkage * mu * torch.eye(dim, dtype=torch.float64)
    return shrunk, shrinkage


class PadimScorer:
    """Per-position Mahalanobis distances of patch features to the learned Gaussians."""

    def __init__(
        self, encoder: PatchEncoder, mean: torch.Tensor, precision: torch.Tensor | None, std: torch.Tensor | None
    ):
        """global: mean (P, F), precision (P, F, F); step: mean and std (K, P, F)."""
        self.encoder, self.mean, self.precision, self.std = encoder, mean, precision, std
        self.grid = encoder.config.grid

    @classmethod
    def fit(cls, encoder: PatchEncoder, features: Sequence[torch.Tensor], config: PadimConfig) -> PadimScorer:
        everything = torch.cat(list(features)).double()
        floor = config.sigma_floor * everything.flatten(0, 1).std(0)  # (F,)
        if config.time == "global":
            stacked = torch.cat(list(features)).double()  # (N, P, F)
            mean = stacked.mean(0)
            ridge = torch.diag(floor**2)
            precision = torch.stack(
                [torch.linalg.inv(ledoit_wolf(stacked[:, p])[0] + ridge) for p in range(stacked.shape[1])]
            )
            return cls(encoder, mean, precision, None)
        lengths = np.array([len(f) for f in features])
        steps = int(np.sort(lengths)[-2]) if len(lengths) > 1 else int(lengths[0])  # last step two episodes reach
        width = features[0].shape[1:]
        means, stds = torch.empty(steps, *width, dtype=torch.float64), torch.empty(steps, *width, dtype=torch.float64)
        for k in range(steps):
            at_k = torch.stack([f[k] for f in features if len(f) > k]).double()
            means[k] = at_k.mean(0)
            variance = at_k.var(0, unbiased=True) if len(at_k) > 1 else torch.zeros_like(at_k[0])
            stds[k] = torch.sqrt(variance + floor**2)
        return cls(encoder, means, None, stds)

    def tensors(self) -> dict[str, torch.Tensor]:
        learned = {"mean": self.mean, "precision": self.precision, "std": self.std}
        return {k: v for k, v in learned.items() if v is not None}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: PadimConfig) -> PadimScorer:
        return cls(PatchEncoder(config.encoder), tensors["mean"], tensors.get("precision"), tensors.get("std"))

    def score_features(self, features: torch.Tensor, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = features.double()
        if self.precision is not None:
            diff = x - self.mean
            squared = torch.einsum("bpf,pfg,bpg->bp", diff, self.precision, diff)
        else:
            k = torch.from_numpy(np.minimum(np.asarray(steps), len(self.mean) - 1))
            squared = (((x - self.mean[k]) / self.std[k]) ** 2).sum(-1)
        distances = squared.clamp_min(0).sqrt()
        heatmaps = distances.float().reshape(-1, self.grid, self.grid).numpy()
        return distances.max(1).values.numpy(), heatmaps

    def score(self, frames: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.score_features(finite(self.encoder(frames), "these frames"), steps)


class PadimMonitor(ThresholdMonitor):
    """PaDiM as a runtime monitor; build it with `fit` or `load`."""

    kind, config_class, scorer_class = "padim", PadimConfig, PadimScorer

    @classmethod
    def fit(
        cls,
        task: str,
        nominal_episodes: Sequence[np.ndarray],
        config: PadimConfig = PadimConfig(),
        encoder: PatchEncoder | None = None,
        features: Sequence[torch.Tensor] | None = None,
        semantic_filter: SemanticFilter | None = None,
    ) -> PadimMonitor:
        """Fits on nominal camera streams (T_i, H, W, 3) uint8; `encoder` / `features` (per episode, (T_i, P, F))
        may be passed to share them with other monitors."""
        encoder = encoder or PatchEncoder(config.encoder)
        features = nominal_features(encoder, nominal_episodes, features)

        def build(learn: list[int]) -> PadimScorer:
            return PadimScorer.fit(encoder, [features[i] for i in learn], config)

        return cls.fit_scorer(
            task,
            nominal_episodes,
            config,
            build,
            uses_time=config.time == "step",
            semantic_filter=semantic_filter,
            score_nominal=lambda scorer, i: scorer.score_features(features[i], np.arange(len(features[i])))[0],
        )
