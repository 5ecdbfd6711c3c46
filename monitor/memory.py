"""FIDeL's memory: per-timestep, per-patch Gaussian statistics of nominal episodes.

Nominal episodes differ in length (the policy is faster or slower), so each is mapped onto the same T memory
timesteps by normalised time: memory step s takes frame round(s·(T_i−1)/(T−1)) of an episode of T_i frames. For each
step and patch, μ and σ are the mean and standard deviation over episodes of the patch feature.

σ needs a floor: the static background is rendered identically in every nominal episode, so its σ is exactly 0 and
any change there, however small, would be an infinite anomaly. The floor is a fraction of each feature's spread over
the whole memory, so it scales with the encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MemoryConfig:
    """How nominal episodes become the memory."""

    steps: int | None = None
    """Memory timesteps T; None = the median nominal episode length."""
    sigma_floor: float = 0.1
    """σ = sqrt(std² + floor²), floor = this fraction of the feature's std over all memory frames and patches."""

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"MemoryConfig.steps must be >= 1 or None, got {self.steps!r}")
        if not self.sigma_floor > 0:
            raise ValueError(f"MemoryConfig.sigma_floor must be > 0, got {self.sigma_floor!r}")


def aligned_indices(length: int, steps: int) -> np.ndarray:
    """Frame index of an episode of `length` frames for each of `steps` memory timesteps (normalised time)."""
    if length < 1:
        raise ValueError(f"an episode needs at least one frame, got {length}")
    return np.rint(np.linspace(0, length - 1, steps)).astype(np.int64)


@dataclass
class Memory:
    """μ, σ (T, P, F) and one representative nominal frame per memory timestep."""

    mean: torch.Tensor
    std: torch.Tensor
    """Standard deviation with the floor applied (what the OT cost divides by)."""
    reference_frames: np.ndarray
    """(T, H, W, 3) uint8: per timestep, the nominal frame closest to μ_t, shown to a semantic filter at t_min."""

    @property
    def steps(self) -> int:
        return self.mean.shape[0]

    @classmethod
    def fit(
        cls, features: Sequence[torch.Tensor], frames: Sequence[np.ndarray], config: MemoryConfig = MemoryConfig()
    ) -> Memory:
        """From per-episode patch features (T_i, P, F) and the matching frames (T_i, H, W, 3)."""
        if len(features) < 2:
            raise ValueError(f"the memory needs at least 2 nominal episodes to estimate σ, got {len(features)}")
        if len(features) != len(frames):
            raise ValueError(f"{len(features)} feature sequences but {len(frames)} frame sequences")
        lengths = [len(f) for f in features]
        steps = config.steps or int(np.median(lengths))
        indices = [aligned_indices(n, steps) for n in lengths]
        stacked = torch.stack([f[i] for f, i in zip(features, indices)])  # (N, T, P, F)
        mean = stacked.mean(0)
        floor = config.sigma_floor * stacked.flatten(0, 2).std(0)  # (F,)
        std = torch.sqrt(stacked.var(0) + floor**2)
        # Representative frame: the episode whose features at t are closest to μ_t (a medoid, not a blurred mean).
        distance = (((stacked - mean) / std) ** 2).sum((2, 3))  # (N, T)
        closest = distance.argmin(0).numpy()
        reference = np.stack([frames[e][indices[e][t]] for t, e in enumerate(closest)])
        return cls(mean=mean, std=std, reference_frames=reference)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything needed to rebuild the memory, for safetensors."""
        return {"mean": self.mean, "std": self.std, "reference_frames": torch.from_numpy(self.reference_frames)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> Memory:
        return cls(mean=tensors["mean"], std=tensors["std"], reference_frames=tensors["reference_frames"].numpy())
