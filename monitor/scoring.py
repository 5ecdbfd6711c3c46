"""Runtime monitors scored offline on SimFails: what `monitor.evaluate`, `monitor.train_filter` and the monitor
experiments share.

1. `SimFailsSplit.read`: one split's episodes, frames and labels concatenated over episodes.
2. `CachedEncoder`: every frame encoded once, its features shared by FIDeL, the feature baselines and the filters.
3. `fit_monitor`: one method fitted on the `fit` split (the same episodes for all: FIDeL's memory and calibration,
   the baselines' training and calibration sets).
4. `score_fidel` / `score_baseline` → `Scored`: each frame's score, heatmap, matched reference frame, the
   thresholdings' raw flags and the overrun rule's late frames, kept apart so every decision can be read with and
   without the rule.
5. `flagged_examples` / `trained_verdicts` / `monitor_failures`: the frames a semantic filter learns from, its
   verdicts, and the failure verdicts of a monitor that uses it, with and without the overrun rule.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from monitor.baselines import (
    AutoencoderConfig,
    AutoencoderMonitor,
    Calibration,
    FlowScoreConfig,
    FlowScoreMonitor,
    PadimConfig,
    PadimMonitor,
    PatchCoreConfig,
    PatchCoreMonitor,
)
from monitor.dataset import FAILURE_EVENTS, NON_VISUAL_FAMILIES, read_split
from monitor.fidel import FidelConfig, FidelMonitor, torch_threads
from monitor.semantic.trained import Example

METHODS = ("fidel", "padim", "padim_step", "patchcore", "autoencoder", "logpzo")
LABELS = {
    "fidel": "FIDeL (OT)",
    "padim": "PaDiM (global, LW cov)",
    "padim_step": "PaDiM-step (diag)",
    "patchcore": "PatchCore (kNN, coreset)",
    "autoencoder": "Conv autoencoder",
    "logpzo": "logpZO (policy features, flow)",
}
FIDEL_THRESHOLDS = {"time_space": "CP-time&space", "time": "CP-time", "gaussian": "Gaussian (z=3)"}


@dataclass
class SimFailsSplit:
    """One SimFails split's episodes, with frames and labels concatenated over episodes."""

    episodes: list[dict]
    frames: np.ndarray
    anomaly: np.ndarray
    failure: np.ndarray
    bounds: np.ndarray
    """Episode e's frames are [bounds[e], bounds[e+1])."""

    @classmethod
    def read(cls, path: Path, name: str) -> SimFailsSplit:
        episodes = read_split(path, name)
        return cls(
            episodes=episodes,
            frames=np.concatenate([e["frames"] for e in episodes]),
            anomaly=np.concatenate([e["anomaly"] for e in episodes]),
            failure=np.concatenate([e["failure"] for e in episodes]),
            bounds=np.cumsum([0] + [len(e["anomaly"]) for e in episodes]),
        )

    def episode_frames(self) -> list[np.ndarray]:
        return [self.frames[a:b] for a, b in zip(self.bounds[:-1], self.bounds[1:])]

    def episode_of_frame(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.episodes)), np.diff(self.bounds))


class CachedEncoder:
    """A PatchEncoder that remembers each frame's features (by content): every test frame is encoded once, then
    shared by FIDeL, the feature baselines and the trained filters (which also see the same reference frames often)."""

    def __init__(self, encoder):
        self.encoder, self.config = encoder, encoder.config
        self.num_patches, self.feature_dim = encoder.num_patches, encoder.feature_dim
        self._cache: dict[bytes, torch.Tensor] = {}

    @staticmethod
    def _key(frame: np.ndarray) -> bytes:
        return hashlib.blake2b(np.ascontiguousarray(frame).tobytes(), digest_size=16).digest() + bytes(frame.shape)

    def encode(self, frames: np.ndarray, batch_size: int = 64) -> torch.Tensor:
        keys = [self._key(f) for f in frames]
        missing = {k: i for i, k in enumerate(keys) if k not in self._cache}
        if missing:
            encoded = self.encoder.encode(np.stack([frames[i] for i in missing.values()]), batch_size)
            self._cache.update(zip(missing, encoded))
        return torch.stack([self._cache[k] for k in keys])

    __call__ = encode

    def fingerprint(self, frame_shape: tuple[int, ...]) -> torch.Tensor:
        return self.encoder.fingerprint(frame_shape)


@dataclass
class Scored:
    """One method's readings of one split's frames, concatenated over episodes."""

    score: np.ndarray
    heatmap: np.ndarray
    """(N, grid, grid) float32."""
    reference: np.ndarray
    """(N,) index into the method's reference frames, for the semantic filter."""
    late: np.ndarray
    """(N,) bool: frames past every calibration episode's end, failures by the overrun rule."""
    flags: dict[str, np.ndarray] = field(default_factory=dict)
    """Thresholding name → (N,) bool: the score out of its band, late frames not included."""

    def is_anomaly(self, decision: str, overrun: bool = True) -> np.ndarray:
        """The monitor's is_anomaly per frame under thresholding `decision`, with or without the overrun rule."""
        return self.flags[decision] | self.late if overrun else self.flags[decision].copy()

    def to_judge(self, decision: str) -> np.ndarray:
        """Indices of the frames a deployed monitor's semantic filter judges: anomalous under `decision` and not late
        (the overrun rule decides those)."""
        return np.flatnonzero(self.flags[decision] & ~self.late)


def score_fidel(monitor, features: Sequence[torch.Tensor]) -> Scored:
    """FIDeL frame by frame, online (windowed search, warm starts), exactly as `FidelMonitor.step` reads frames."""
    scores, heatmaps, t_mins, flags = [], [], [], {name: [] for name in FIDEL_THRESHOLDS}
    grid = monitor.config.encoder.grid
    with torch_threads(1):
        for episode in features:
            monitor.scorer.reset()
            for x in episode:
                match = monitor.scorer(x)
                heatmap = match.heatmap.numpy()
                scores.append(match.score)
                heatmaps.append(heatmap.reshape(grid, grid).astype(np.float32))
                t_mins.append(match.t_min)
                for name in FIDEL_THRESHOLDS:
                    flags[name].append(monitor.decide(match.score, match.t_min, heatmap, name)[0])
    return Scored(
        score=np.array(scores),
        heatmap=np.stack(heatmaps),
        reference=np.array(t_mins),
        late=late_frames(monitor, [len(e) for e in features]),
        flags={name: np.array(values, dtype=bool) for name, values in flags.items()},
    )


def late_frames(monitor, lengths: Sequence[int]) -> np.ndarray:
    """Per frame of episodes of these lengths, concatenated: whether the monitor calls it late (`is_late`)."""
    return np.array([monitor.is_late(k) for n in lengths for k in range(n)], dtype=bool)


def score_baseline(monitor, episodes: Sequence[np.ndarray], features: Sequence[torch.Tensor] | None) -> Scored:
    """A ThresholdMonitor over whole episodes (from shared features when the scorer takes them)."""
    scores, heatmaps, steps = [], [], []
    with torch_threads(1):
        for i, frames in enumerate(episodes):
            if features is not None and hasattr(monitor.scorer, "score_features"):
                s, h = monitor.scorer.score_features(features[i], np.arange(len(frames)))
            else:
                s, h = monitor.score_episode(frames)
            scores.append(s)
            heatmaps.append(h)
            steps.append(np.minimum(np.arange(len(frames)), len(monitor.reference_frames) - 1))
    score = np.concatenate(scores)
    return Scored(
        score=score,
        heatmap=np.concatenate(heatmaps),
        reference=np.concatenate(steps),
        late=late_frames(monitor, [len(e) for e in episodes]),
        flags={"calibrated": score > monitor.threshold},
    )


def fit_monitor(
    *,
    method: str,
    task: str,
    frames: list[np.ndarray],
    features: list[torch.Tensor],
    encoder,
    alpha: float,
    autoencoder_epochs: int,
    policy: str = "",
    fidel: FidelConfig | None = None,
):
    """One method fitted on the fit split's frames (feature baselines reuse the shared features; logpzo reads the
    features of `policy`, the policy under test; FIDeL uses `fidel`'s settings, the defaults when None, at `alpha`)."""
    calibration = Calibration(alpha=alpha)
    if method == "fidel":
        return FidelMonitor.fit(task, frames, replace(fidel or FidelConfig(), alpha=alpha))
    if method in ("padim", "padim_step"):
        padim = PadimConfig(time="global" if method == "padim" else "step", calibration=calibration)
        return PadimMonitor.fit(task, frames, padim, encoder, features)
    if method == "patchcore":
        return PatchCoreMonitor.fit(task, frames, PatchCoreConfig(calibration=calibration), encoder, features)
    if method == "logpzo":
        return FlowScoreMonitor.fit(task, frames, FlowScoreConfig(policy=policy, calibration=calibration))
    return AutoencoderMonitor.fit(task, frames, AutoencoderConfig(epochs=autoencoder_epochs, calibration=calibration))


def score_split(method: str, monitor, split: SimFailsSplit, features: list[torch.Tensor]) -> Scored:
    """`score_fidel` or `score_baseline`, whichever `method` needs."""
    if method == "fidel":
        return score_fidel(monitor, features)
    return score_baseline(monitor, split.episode_frames(), features)


def primary_thresholding(method: str) -> str:
    """The decision a deployed monitor would use: CP-time&space for FIDeL, the calibrated threshold otherwise."""
    return "time_space" if method == "fidel" else "calibrated"


def reference_frames(method: str, monitor) -> np.ndarray:
    return monitor.memory.reference_frames if method == "fidel" else monitor.reference_frames


def episode_group(item: dict) -> str:
    """Which kind of episode (for tables per kind)."""
    kind, family = item["kind"], item["family"]
    if kind == "nominal":
        return "nominal"
    if kind == "reset":
        return "reset: dynamics/noise (invisible)" if family in NON_VISUAL_FAMILIES else "reset: visual"
    return "event: failure-inducing" if family in FAILURE_EVENTS else "event: benign (light, distractor)"


def filter_examples(scored: Scored, bounds: np.ndarray, decision: str, per_episode: int) -> np.ndarray:
    """Indices of up to `per_episode` frames per episode that a semantic filter would judge (`Scored.to_judge`),
    evenly spaced (long failed episodes would drown the rest)."""
    judged, picks = scored.to_judge(decision), []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        flagged = judged[(judged >= start) & (judged < stop)]
        if len(flagged) > per_episode:
            flagged = flagged[np.rint(np.linspace(0, len(flagged) - 1, per_episode)).astype(int)]
        picks.extend(flagged.tolist())
    return np.array(picks, dtype=int)


def flagged_examples(
    references: np.ndarray, scored: Scored, split: SimFailsSplit, decision: str, per_episode: int
) -> list[Example]:
    """Training examples for a trained semantic filter: up to `per_episode` frames per episode that the monitor
    flagged (thresholding `decision`), each with the monitor's reference frame and heatmap, labelled by the frame's
    simulator `failure` label."""
    picks = filter_examples(scored, split.bounds, decision, per_episode)
    return [
        Example(references[scored.reference[i]], split.frames[i], scored.heatmap[i], bool(split.failure[i]))
        for i in picks
    ]


def trained_verdicts(trained, references: np.ndarray, scored: Scored, frames: np.ndarray, decision: str) -> np.ndarray:
    """(N,) bool: the trained filter's verdict on every frame anomalous under `decision`, late ones included (so the
    same verdicts serve with and without the overrun rule); False on the other frames."""
    verdicts, where = np.zeros_like(scored.late), np.flatnonzero(scored.flags[decision])
    for start in range(0, len(where), 256):
        chunk = where[start : start + 256]
        p = trained.predict_proba(references[scored.reference[chunk]], frames[chunk], scored.heatmap[chunk])
        verdicts[chunk] = p > trained.config.threshold
    return verdicts


def monitor_failures(scored: Scored, verdicts: np.ndarray, overrun: bool = True) -> np.ndarray:
    """is_failure per frame of a monitor whose semantic filter gave `verdicts` (False where it was not asked): with
    the overrun rule late frames are failures whatever the filter says; without it the filter alone decides."""
    return verdicts | scored.late if overrun else verdicts.copy()


class Timer:
    """Wall seconds per stage (summed over calls): `with timer("fit fidel"): ...`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started
