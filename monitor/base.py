"""What every runtime monitor gives the rollout harness and the failure search.

A monitor is fitted on nominal camera streams, then watches one episode at a time: `reset()` at the start of an
episode, `step(frame)` for every frame the policy sees. `envs.rollout(monitor=...)` stores the per-frame outputs on
the `Episode`; `summarize()` turns them into the per-episode verdict the search rewards and the dataset records.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from envs.records import values_equal


@dataclass(frozen=True, eq=False)
class MonitorOutput:
    """The monitor's reading of one frame (equal outputs have equal values, heatmaps compared element-wise)."""

    score: float
    """Anomaly score (higher = less like the nominal demonstrations)."""
    threshold: float
    """The score the frame had to exceed to count as anomalous (NaN where the decision is per patch)."""
    is_anomaly: bool
    is_failure: bool
    """An anomaly the semantic filter judged a task failure (always False when `is_anomaly` is False)."""
    heatmap: np.ndarray | None = None
    """Per-patch anomaly (h, w), float32, aligned with the frame; None for monitors without spatial output."""
    t_min: int = -1
    """Best-matching memory timestep (-1 when the monitor has no notion of time)."""
    explanation: str = ""
    """The semantic filter's reason, when it gave one."""
    late: bool = False
    """The frame lies past every calibration episode's end: a failure by the overrun rule, whatever it shows."""
    visual_failure: bool | None = None
    """The verdict without the overrun rule (the band and the semantic filter only); None: same as `is_failure`."""

    @property
    def failure_by_look(self) -> bool:
        """`is_failure` without the overrun rule: what the frame's appearance alone says."""
        return self.is_failure if self.visual_failure is None else self.visual_failure

    def __eq__(self, other: object) -> bool:
        return values_equal(self, other)


@runtime_checkable
class Monitor(Protocol):
    """A fitted runtime monitor for one task's camera."""

    task: str

    def reset(self) -> None: ...

    def step(self, frame: np.ndarray) -> MonitorOutput: ...


class SemanticFilter(Protocol):
    """Decides whether an anomaly is a task failure (FIDeL's D_F): a person's or a VLM's second look.

    Given the task instruction, the nominal reference frame at the matched memory time, the current frame and the
    monitor's heatmap (h, w), it answers (is_failure, explanation). Benign anomalies (a light change, a distractor
    that does not interfere) should come back False.
    """

    def __call__(
        self, task_text: str, reference_frame: np.ndarray, frame: np.ndarray, heatmap: np.ndarray
    ) -> tuple[bool, str]: ...


@dataclass(frozen=True)
class FrameVerdict:
    is_anomaly: bool
    is_failure: bool
    late: bool
    visual_failure: bool | None
    explanation: str


def judge_frame(
    is_anomaly: bool,
    late: bool,
    frame_index: int,
    ask_filter: Callable[[], tuple[bool, str]] | None,
    judge_late: bool = True,
) -> FrameVerdict:
    """A band's decision through the semantic filter (`ask_filter`, None: every anomaly is a failure) and the
    overrun rule. On a late frame the filter is still asked while `judge_late` (the caller clears it once the
    episode has a failure by look), so that the episode's verdict without the rule is known and the rule's share
    of the detections can be reported apart, at no more filter calls than needed for it."""
    if late and not judge_late:
        reason = f"still acting at frame {frame_index}: every calibration episode had ended by then"
        return FrameVerdict(True, True, True, None, reason)
    visual_failure, explanation = bool(is_anomaly), ""
    if is_anomaly and ask_filter is not None:
        visual_failure, explanation = ask_filter()
    if late:
        reason = f"still acting at frame {frame_index}: every calibration episode had ended by then"
        return FrameVerdict(True, True, True, bool(visual_failure), reason)
    return FrameVerdict(bool(is_anomaly), bool(visual_failure), False, bool(visual_failure), explanation)


def _first(flags: Sequence[bool], start: int = 0) -> int | None:
    return next((i for i in range(start, len(flags)) if flags[i]), None)


@dataclass(frozen=True)
class MonitorSummary:
    """One episode, as the monitor saw it.

    A failure verdict before the robot has moved is failure *prediction* from the scene (a recoloured table looks
    unlike the demonstrations from frame 0); detection is the first verdict once the robot is at work. Both are
    kept, as are the verdicts with and without the overrun rule (a stuck policy is caught by the clock, not by
    what the camera shows)."""

    frames: int
    max_score: float
    anomaly_frames: int
    failure_frames: int
    first_anomaly: int | None
    """Index of the first anomalous frame, if any."""
    first_failure: int | None
    """Index of the first frame judged a failure, if any."""
    first_visual_failure: int | None = None
    """Index of the first frame judged a failure without the overrun rule, if any."""
    first_late: int | None = None
    """Index of the first frame past every calibration episode's end, if the episode ran that long."""
    acting_from: int = 0
    """First frame at which the robot had moved (before it, a verdict predicts rather than detects)."""
    first_failure_acting: int | None = None
    """Index of the first failure verdict at or after `acting_from`, if any."""

    @property
    def failure(self) -> bool:
        """The monitor's episode-level verdict: some frame was judged a failure."""
        return self.first_failure is not None

    @property
    def visual_failure(self) -> bool:
        """The episode verdict without the overrun rule."""
        return self.first_visual_failure is not None

    @property
    def predicted(self) -> bool:
        """A failure verdict came before the robot had moved."""
        return self.first_failure is not None and self.first_failure < self.acting_from

    def to_dict(self) -> dict:
        return {
            **self.__dict__,
            "failure": self.failure,
            "visual_failure": self.visual_failure,
            "predicted": self.predicted,
        }


def summarize(outputs: Sequence[MonitorOutput], acting_from: int = 0) -> MonitorSummary:
    """Per-episode verdict from per-frame outputs; `acting_from`: the first frame at which the robot had moved."""
    anomalies = [o.is_anomaly for o in outputs]
    failures = [o.is_failure for o in outputs]
    return MonitorSummary(
        frames=len(outputs),
        max_score=max((o.score for o in outputs), default=float("nan")),
        anomaly_frames=sum(anomalies),
        failure_frames=sum(failures),
        first_anomaly=_first(anomalies),
        first_failure=_first(failures),
        first_visual_failure=_first([o.failure_by_look for o in outputs]),
        first_late=_first([o.late for o in outputs]),
        acting_from=acting_from,
        first_failure_acting=_first(failures, acting_from),
    )
