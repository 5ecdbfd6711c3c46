"""What every baseline shares with FIDeL, so that comparisons are fair: the nominal episodes are split exactly as
FIDeL splits them (`monitor.conformal.split_episodes`, same seed and memory fraction: the baseline learns from FIDeL's
memory episodes Y and is calibrated on its calibration episodes Z = E_A ∪ E_B), and the threshold makes the same
promise as FIDeL's bands — a new nominal episode raises any alarm with probability at most α. It is the
⌈(n+1)(1−α)⌉-th smallest of the n calibration episodes' maximum frame scores (split conformal prediction on the
per-episode maximum), so no anomalies are needed to pick it.

`ThresholdMonitor` wraps a per-frame scorer and that threshold in the Monitor protocol (`reset`, `step`), and
saves / loads a fitted baseline as JSON + safetensors (no pickle), refusing another task or a changed encoder.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from monitor.base import MonitorOutput, SemanticFilter, judge_frame
from monitor.config_dicts import config_from_dict
from monitor.conformal import EpisodeSplit, conformal_rank, min_calibration_episodes, overrun_step, split_episodes
from monitor.encoders import PatchEncoder
from monitor.fidel import TORCH_THREADS, torch_threads


@dataclass(frozen=True)
class Calibration:
    """How the nominal episodes are split and the threshold chosen (defaults are FIDeL's)."""

    alpha: float = 0.1
    """At most this share of nominal episodes raises any alarm."""
    memory_fraction: float = 0.4
    """Share of the nominal episodes the baseline learns from; the rest calibrate its threshold."""
    split_seed: int = 0
    """Seed of the random split (FIDeL's `split_seed`: the same seed gives the same partition)."""
    overrun: bool = True
    """Frames after the end of the longest calibration episode are anomalies and failures (FidelConfig.overrun)."""

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")

    def split(self, episodes: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(learning episodes, calibration episodes): FIDeL's Y and E_A ∪ E_B."""
        split: EpisodeSplit = split_episodes(episodes, self.alpha, self.memory_fraction, self.split_seed)
        return split.memory, split.centre + split.width


def calibrated_threshold(episode_scores: Sequence[np.ndarray], alpha: float) -> float:
    """The ⌈(n+1)(1−α)⌉-th smallest per-episode maximum score of n nominal calibration episodes."""
    needed = min_calibration_episodes(alpha)
    if len(episode_scores) < needed:
        raise ValueError(f"alpha={alpha} needs at least {needed} calibration episodes, got {len(episode_scores)}")
    maxima = np.sort([float(np.max(s)) for s in episode_scores])
    return float(maxima[conformal_rank(len(maxima), alpha) - 1])


class FrameScorer(Protocol):
    """Scores frames one by one; `steps` is each frame's index in its episode (scorers without time ignore it)."""

    def score(self, frames: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B,) float64 scores and (B, grid, grid) float32 heatmaps of uint8 frames (B, H, W, 3)."""
        ...

    def tensors(self) -> dict[str, torch.Tensor]:
        """What the fitted scorer learned, for safetensors; `from_tensors(tensors, config)` rebuilds it."""
        ...


class FeatureScorer(FrameScorer, Protocol):
    """A scorer over PatchEncoder features: evaluations encode each frame once and share it between monitors."""

    encoder: PatchEncoder

    def score_features(self, features: torch.Tensor, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like `score`, from patch features (B, P, F)."""
        ...


def reference_sequence(episodes: Sequence[np.ndarray]) -> np.ndarray:
    """Frames of the median-length episode: what a semantic filter is shown as 'nominal at this step'."""
    order = np.argsort([len(e) for e in episodes])
    return episodes[int(order[len(order) // 2])]


def check_frames(frames: np.ndarray, shape: tuple[int, ...] | None = None) -> None:
    """uint8 (T, H, W, 3) frames, of `shape` (H, W, 3) when given; the error names what was expected and given."""
    given = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {given}")
    if shape is not None and frames.shape[1:] != shape:
        raise ValueError(f"frames must be uint8 {shape} (the nominal episodes' shape), got {given}")


def check_nominal(episodes: Sequence[np.ndarray]) -> tuple[int, ...]:
    """The common frame shape of nominal episodes, or an error."""
    if not episodes:
        raise ValueError("no nominal episodes given")
    for episode in episodes:
        check_frames(episode)
        if len(episode) == 0:
            raise ValueError("a nominal episode has no frames")
    shapes = sorted({tuple(e.shape[1:]) for e in episodes})
    if len(shapes) > 1:
        raise ValueError(f"nominal episodes have different frame shapes: {shapes}")
    return shapes[0]


FORMAT_VERSION = 1


class ThresholdMonitor:
    """A per-frame scorer with a calibrated score threshold, as a runtime monitor. Subclasses name their `kind`,
    config class and scorer class, which `save` / `load` use."""

    kind: ClassVar[str] = ""
    config_class: ClassVar[type]
    scorer_class: ClassVar[Any]
    """Has `from_tensors(tensors, config)`."""

    def __init__(
        self,
        *,
        task: str,
        instruction: str,
        config: Any,
        scorer: FrameScorer,
        threshold: float,
        reference_frames: np.ndarray,
        uses_time: bool = False,
        overrun_step: int | None = None,
        semantic_filter: SemanticFilter | None = None,
    ):
        self.task, self.instruction, self.config = task, instruction, config
        self.scorer, self.threshold = scorer, threshold
        self.reference_frames = reference_frames
        """(T, H, W, 3): the nominal frame shown to the semantic filter at step t (clamped to the last)."""
        self.uses_time = uses_time
        """Whether the scorer compares step t with nominal step t (then t_min reports that step)."""
        self.overrun_step = overrun_step
        """Frame index from which the episode is late (None: no such rule); see Calibration.overrun."""
        self.semantic_filter = semantic_filter
        """Called on anomalous frames to decide `is_failure`; None = every anomaly is a failure."""
        self.torch_threads: int | None = TORCH_THREADS
        self.frame_shape = tuple(reference_frames.shape[1:])
        self.t = 0
        self.failed_by_look = False

    @classmethod
    def fit_scorer(
        cls,
        task: str,
        nominal_episodes: Sequence[np.ndarray],
        config: Any,
        build: Callable[[list[int]], FrameScorer],
        *,
        uses_time: bool = False,
        semantic_filter: SemanticFilter | None = None,
        score_nominal: Callable[[FrameScorer, int], np.ndarray] | None = None,
    ) -> ThresholdMonitor:
        """Splits the episodes as `config.calibration` says, builds the scorer from the learning episodes' indices,
        calibrates the threshold on the others (`score_nominal(scorer, i)`: episode i's frame scores, when they can
        be had faster than from its frames, e.g. from features already computed)."""
        from envs.tasks import get_task

        check_nominal(nominal_episodes)
        calibration: Calibration = config.calibration
        learn, calibrate = calibration.split(len(nominal_episodes))
        with torch_threads(TORCH_THREADS):
            scorer = build(list(learn))
            score = score_nominal or (lambda scorer, i: score_episode(scorer, nominal_episodes[i])[0])
            scores = [score(scorer, i) for i in calibrate]
        threshold = calibrated_threshold(scores, calibration.alpha)
        references = reference_sequence([nominal_episodes[i] for i in learn])
        late = overrun_step([len(nominal_episodes[i]) for i in calibrate]) if calibration.overrun else None
        instruction = get_task(task).instruction
        return cls(
            task=task,
            instruction=instruction,
            config=config,
            scorer=scorer,
            threshold=threshold,
            reference_frames=references,
            uses_time=uses_time,
            overrun_step=late,
            semantic_filter=semantic_filter,
        )

    def reset(self) -> None:
        """Start of an episode: the step count restarts."""
        self.t = 0
        self.failed_by_look = False

    def step(self, frame: np.ndarray) -> MonitorOutput:
        """Reads one camera frame (H, W, 3) uint8, upright, as the policy sees it."""
        if not isinstance(frame, np.ndarray) or frame.shape != self.frame_shape or frame.dtype != np.uint8:
            given = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ValueError(f"frame must be uint8 {self.frame_shape} (the nominal episodes' shape), got {given}")
        with torch_threads(self.torch_threads):
            scores, heatmaps = self.scorer.score(frame[None], np.array([self.t]))
        score, heatmap = float(scores[0]), heatmaps[0]
        is_anomaly = score > self.threshold
        ask_filter = None
        if self.semantic_filter is not None:
            ask_filter = partial(self.semantic_filter, self.instruction, self.reference(self.t), frame, heatmap)
        late = self.is_late(self.t)
        verdict = judge_frame(bool(is_anomaly), late, self.t, ask_filter, judge_late=not self.failed_by_look)
        self.failed_by_look = self.failed_by_look or bool(verdict.visual_failure)
        output = MonitorOutput(
            score=score,
            threshold=self.threshold,
            is_anomaly=verdict.is_anomaly,
            is_failure=verdict.is_failure,
            heatmap=heatmap,
            t_min=min(self.t, len(self.reference_frames) - 1) if self.uses_time else -1,
            explanation=verdict.explanation,
            late=verdict.late,
            visual_failure=verdict.visual_failure,
        )
        self.t += 1
        return output

    def is_late(self, frame_index: int) -> bool:
        """Whether frame `frame_index` of an episode lies past every calibration episode's end."""
        return self.overrun_step is not None and frame_index >= self.overrun_step

    def reference(self, t: int) -> np.ndarray:
        """The nominal frame for step t (the last one past the reference episode's end)."""
        return self.reference_frames[min(t, len(self.reference_frames) - 1)]

    def score_episode(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores and heatmaps of a whole episode at once, exactly as `step` would give them frame by frame."""
        check_frames(frames, self.frame_shape)
        with torch_threads(self.torch_threads):
            return score_episode(self.scorer, frames)

    # -- persistence -----------------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Writes `monitor.json` and `monitor.safetensors` into the folder `path` (created if needed)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {f"scorer.{k}": v.contiguous() for k, v in self.scorer.tensors().items()}
        tensors["reference_frames"] = torch.from_numpy(np.ascontiguousarray(self.reference_frames))
        encoder = getattr(self.scorer, "encoder", None)
        if encoder is not None:
            with torch_threads(TORCH_THREADS):
                tensors["fingerprint"] = encoder.fingerprint(self.frame_shape)
        save_file(tensors, path / "monitor.safetensors")
        meta = {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "task": self.task,
            "instruction": self.instruction,
            "threshold": self.threshold,
            "uses_time": self.uses_time,
            "overrun_step": self.overrun_step,
            "config": asdict(self.config),
        }
        (path / "monitor.json").write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(
        cls, path: str | Path, task: str | None = None, semantic_filter: SemanticFilter | None = None
    ) -> ThresholdMonitor:
        """A saved baseline (of the kind saved there; called on a subclass, only that kind); `task`, when given,
        must be the one it was fitted for."""
        path = Path(path)
        if not (path / "monitor.json").is_file():
            raise FileNotFoundError(
                f"no saved monitor in {str(path)!r} (expected monitor.json and monitor.safetensors)"
            )
        meta = json.loads((path / "monitor.json").read_text())
        kinds = {k.kind: k for k in ThresholdMonitor.__subclasses__() if k.kind}
        if meta.get("format") != FORMAT_VERSION or meta.get("kind") not in kinds:
            raise ValueError(
                f"{str(path)!r} holds format {meta.get('format')!r} kind {meta.get('kind')!r}; this code reads format "
                f"{FORMAT_VERSION} kinds {', '.join(sorted(kinds))}"
            )
        kind = kinds[meta["kind"]]
        if cls is not ThresholdMonitor and kind is not cls:
            raise ValueError(f"{str(path)!r} holds a {meta['kind']} monitor, not {cls.kind}")
        if task is not None and task != meta["task"]:
            raise ValueError(f"monitor in {str(path)!r} was fitted for task {meta['task']!r}, not {task!r}")
        config = config_from_dict(kind.config_class, meta["config"])
        tensors = load_file(path / "monitor.safetensors")
        scorer = kind.scorer_class.from_tensors(
            {k[len("scorer.") :]: v for k, v in tensors.items() if k.startswith("scorer.")}, config
        )
        references = tensors["reference_frames"].numpy()
        encoder = getattr(scorer, "encoder", None)
        if encoder is not None:
            with torch_threads(TORCH_THREADS):
                encoder.check_fingerprint(tensors["fingerprint"], references.shape[1:], f"the monitor in {str(path)!r}")
        return kind(
            task=meta["task"],
            instruction=meta["instruction"],
            config=config,
            scorer=scorer,
            threshold=float(meta["threshold"]),
            reference_frames=references,
            uses_time=bool(meta["uses_time"]),
            overrun_step=meta["overrun_step"],
            semantic_filter=semantic_filter,
        )


def score_episode(scorer: FrameScorer, frames: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A scorer over one episode, `batch_size` frames at a time (frame i is at step i)."""
    parts = [
        scorer.score(frames[i : i + batch_size], np.arange(i, min(i + batch_size, len(frames))))
        for i in range(0, len(frames), batch_size)
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def finite(features: torch.Tensor, what: str) -> torch.Tensor:
    """NaN or infinite features are an error, never a silent score."""
    if not torch.isfinite(features).all():
        raise FloatingPointError(f"the encoder returned NaN or infinite features for {what}")
    return features


def nominal_features(
    encoder: PatchEncoder, episodes: Sequence[np.ndarray], features: Sequence[torch.Tensor] | None
) -> list[torch.Tensor]:
    """Patch features (T_i, P, F) of each nominal episode: `features` when given (checked), else encoded here."""
    if features is None:
        with torch_threads(TORCH_THREADS):
            return [finite(encoder.encode(e), "nominal frames") for e in episodes]
    expected = (encoder.num_patches, encoder.feature_dim)
    if len(features) != len(episodes):
        raise ValueError(f"{len(features)} feature sequences for {len(episodes)} episodes")
    for f, e in zip(features, episodes):
        if tuple(f.shape) != (len(e), *expected):
            raise ValueError(
                f"features must be (T, P, F) = ({len(e)}, {expected[0]}, {expected[1]}), got {tuple(f.shape)}"
            )
    return [finite(f.float(), "nominal frames") for f in features]
