"""Thresholds from nominal episodes alone, with a false-alarm guarantee: FIDeL's conformal bands.

Nominal episodes are split three ways: Y builds the memory, and the calibration set Z is split into E_A, which
gives the band's centre μ(t) and modulation ρ(t), and E_B, which gives its width h. Each calibration episode is
scored exactly as a live episode would be (same memory, same online search), so a new nominal episode is
exchangeable with the E_B episodes, and

    P(some frame of a new nominal episode is flagged) ≤ α.

The band is functional (Diquigiovanni et al.; FAIL-Detect): upper(t) = μ(t) + h·ρ(t), with ρ(t) the largest
deviation at t among the E_A episodes kept by the ⌈(n_A+1)(1−α)⌉ rule and h the ⌈(n_B+1)(1−α)⌉-th smallest
"worst normalised deviation" max_k (s_k − μ(t_k))/ρ(t_k) of the E_B episodes. CP-time bands the frame score;
CP-time&space bands every patch of the heatmap, and a frame is anomalous when more than `patch_fraction` of the
(masked) patches exceed their bounds. To keep the guarantee exact rather than loose, the E_B statistic is the one
that decision uses: the (⌊patch_fraction·P⌋+1)-th largest normalised patch deviation (the plain maximum when
patch_fraction is 0, as in FIDeL).

Which memory time t a frame's band uses: its t_min, the memory timestep its patches matched best. The step index
is the alternative; it needs the episode's length to be normalised, which is unknown online, and a slower but
correct policy (heavier object, lower friction) would be compared with the wrong phase of the demonstrations and
flagged. t_min places the frame in the task's phase whatever its speed, and since calibration uses the same rule,
the guarantee holds either way.

The Gaussian baseline (mean + z·std of the frame score per timestep) has no guarantee; it is here to be compared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Scores = tuple[np.ndarray, np.ndarray]
"""One scored episode: memory timestep per frame (n,) int, and values (n,) frame scores or (n, P) patch scores."""


def conformal_rank(n: int, alpha: float) -> int:
    """⌈(n+1)(1−α)⌉: the order statistic of n exchangeable scores that bounds a new one with probability ≥ 1−α."""
    return math.ceil((n + 1) * (1 - alpha) - 1e-9)


def min_calibration_episodes(alpha: float) -> int:
    """Smallest E_B for which the conformal rank exists (rank ≤ n), i.e. h is finite."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    n = 1
    while conformal_rank(n, alpha) > n:
        n += 1
    return n


def overrun_step(lengths: Sequence[int]) -> int:
    """The frame index from which an episode has outlasted every calibration episode (their largest length). Lengths
    of exchangeable nominal episodes: a new one runs past it with probability at most 1/(n+1), so a policy still
    acting then is late, whatever its frames look like (a robot stuck hovering over the cube looks nominal)."""
    if not len(lengths) or min(lengths) < 1:
        raise ValueError(f"need calibration episode lengths >= 1, got {list(lengths)}")
    return int(max(lengths))


@dataclass(frozen=True)
class EpisodeSplit:
    """Indices of the nominal episodes in each role."""

    memory: tuple[int, ...]
    """Y: builds the memory."""
    centre: tuple[int, ...]
    """E_A: the band's mean and modulation."""
    width: tuple[int, ...]
    """E_B: the band's width h."""


MIN_MEMORY, MIN_CENTRE = 2, 2


def _sizes(n: int, memory_fraction: float) -> tuple[int, int, int]:
    memory = max(MIN_MEMORY, round(n * memory_fraction))
    centre = (n - memory) // 2
    return memory, centre, n - memory - centre


def min_nominal_episodes(alpha: float, memory_fraction: float) -> int:
    """Fewest nominal episodes that fill Y, E_A and E_B for this α."""
    need = min_calibration_episodes(alpha)
    n = MIN_MEMORY + MIN_CENTRE + need
    while True:
        memory, centre, width = _sizes(n, memory_fraction)
        if memory >= MIN_MEMORY and centre >= MIN_CENTRE and width >= need:
            return n
        n += 1


def split_episodes(n: int, alpha: float, memory_fraction: float, seed: int = 0) -> EpisodeSplit:
    """Random Y / E_A / E_B split (episodes are exchangeable; shuffling protects against ordered collection)."""
    if not 0 < memory_fraction < 1:
        raise ValueError(f"memory_fraction must be in (0, 1), got {memory_fraction!r}")
    needed = min_nominal_episodes(alpha, memory_fraction)
    if n < needed:
        raise ValueError(
            f"{n} nominal episodes are too few for alpha={alpha}: E_B needs at least "
            f"{min_calibration_episodes(alpha)} episodes (conformal rank ⌈(n+1)(1−α)⌉ ≤ n), so with "
            f"memory_fraction={memory_fraction} at least {needed} nominal episodes are needed; "
            f"collect more or raise alpha"
        )
    memory, centre, _ = _sizes(n, memory_fraction)
    order = np.random.default_rng(seed).permutation(n).tolist()
    return EpisodeSplit(tuple(order[:memory]), tuple(order[memory : memory + centre]), tuple(order[memory + centre :]))


def _per_step(episodes: Sequence[Scores], steps: int, reduce: str, radius: int = 0) -> np.ndarray:
    """Per memory timestep mean or max (T, *S) of the values of frames matched within `radius` steps of it;
    timesteps no frame reached are interpolated."""
    times = np.concatenate([t for t, _ in episodes])
    values = np.concatenate([v for _, v in episodes]).reshape(len(times), -1)
    shifted = np.concatenate([times + d for d in range(-radius, radius + 1)])
    valid = (shifted >= 0) & (shifted < steps)
    times, values = shifted[valid], np.tile(values, (2 * radius + 1, 1))[valid]
    counts = np.bincount(times, minlength=steps)
    if reduce == "mean":
        out = np.zeros((steps, values.shape[1]))
        np.add.at(out, times, values)
        out /= np.maximum(counts, 1)[:, None]
    else:
        out = np.full((steps, values.shape[1]), -np.inf)
        np.maximum.at(out, times, values)
    seen = np.flatnonzero(counts)
    for column in range(out.shape[1]):
        out[:, column] = np.interp(np.arange(steps), seen, out[seen, column])
    return out.reshape((steps, *episodes[0][1].shape[1:]))


@dataclass
class ConformalBand:
    """upper(t) = mean(t) + h·modulation(t), over memory time and optionally patches, with a coverage guarantee."""

    mean: np.ndarray
    """(T,) or (T, P)."""
    modulation: np.ndarray
    """ρ, same shape as mean."""
    h: float
    exceed: int = 1
    """A frame is anomalous when at least this many (masked) values exceed their bound."""
    mask: np.ndarray | None = None
    """(P,) bool: patches that count (None = all)."""

    def upper(self, t: int) -> np.ndarray:
        return self.mean[t] + self.h * self.modulation[t]

    def nonconformity(self, t: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Per frame, the `exceed`-th largest normalised deviation (v − mean(t)) / modulation(t)."""
        deviation = (values - self.mean[t]) / self.modulation[t]
        if deviation.ndim == 1:
            return deviation
        if self.mask is not None:
            deviation = deviation[:, self.mask]
        return -np.partition(-deviation, self.exceed - 1, axis=1)[:, self.exceed - 1]

    def is_anomaly(self, t: int, values: np.ndarray | float) -> bool:
        return bool(self.nonconformity(np.array([t]), np.asarray(values, dtype=np.float64)[None])[0] > self.h)

    @classmethod
    def fit(
        cls,
        centre: Sequence[Scores],
        width: Sequence[Scores],
        steps: int,
        alpha: float,
        *,
        patch_fraction: float = 0.0,
        mask: np.ndarray | None = None,
        modulation_floor: float = 0.3,
        radius: int = 0,
    ) -> ConformalBand:
        """CP-time from frame scores (values (n,)), CP-time&space from patch scores (values (n, P)); `radius`:
        frames matched within this many steps of t also inform mean(t) and modulation(t)."""
        if len(width) < min_calibration_episodes(alpha):
            raise ValueError(
                f"alpha={alpha} needs at least {min_calibration_episodes(alpha)} E_B episodes, got {len(width)}"
            )
        if not 0 <= patch_fraction < 1:
            raise ValueError(f"patch_fraction must be in [0, 1), got {patch_fraction!r}")
        mean = _per_step(centre, steps, "mean", radius)
        deviations = [(t, np.abs(v - mean[t])) for t, v in centre]
        worst = np.array([d.max() for _, d in deviations])
        kept = np.argsort(worst)[: min(len(centre), conformal_rank(len(centre), alpha))]
        modulation = _per_step([deviations[i] for i in kept], steps, "max", radius)
        modulation = np.maximum(modulation, modulation_floor * modulation.mean() + 1e-12)
        patches = int(mask.sum()) if mask is not None else (mean.shape[1] if mean.ndim == 2 else 1)
        if patches < 1:
            raise ValueError("the patch mask excludes every patch")
        band = cls(mean, modulation, h=math.inf, exceed=math.floor(patch_fraction * patches) + 1, mask=mask)
        statistics = np.sort([band.nonconformity(t, v).max() for t, v in width])
        band.h = float(statistics[conformal_rank(len(width), alpha) - 1])
        return band

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"mean": self.mean, "modulation": self.modulation, "h": np.array(self.h), "exceed": np.array(self.exceed)}
        if self.mask is not None:
            out["mask"] = self.mask
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ConformalBand:
        return cls(arrays["mean"], arrays["modulation"], float(arrays["h"]), int(arrays["exceed"]), arrays.get("mask"))


@dataclass
class GaussianBand:
    """Baseline: the frame is anomalous when its score exceeds mean(t) + z·std(t) of the calibration scores."""

    mean: np.ndarray
    std: np.ndarray
    z: float

    def upper(self, t: int) -> float:
        return float(self.mean[t] + self.z * self.std[t])

    def is_anomaly(self, t: int, score: float) -> bool:
        return score > self.upper(t)

    @classmethod
    def fit(
        cls, episodes: Sequence[Scores], steps: int, z: float = 3.0, std_floor: float = 0.1, radius: int = 0
    ) -> GaussianBand:
        mean = _per_step(episodes, steps, "mean", radius)
        variance = _per_step([(t, (v - mean[t]) ** 2) for t, v in episodes], steps, "mean", radius)
        std = np.sqrt(variance)
        return cls(mean, np.maximum(std, std_floor * std.mean() + 1e-12), z)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "std": self.std, "z": np.array(self.z)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> GaussianBand:
        return cls(arrays["mean"], arrays["std"], float(arrays["z"]))
