"""What every runtime monitor gives the rollout harness and the failure search.

A monitor is fitted on nominal camera streams, then watches one episode at a time: `reset()` at the start of an
episode, `step(frame)` for every frame the policy sees. `envs.rollout(monitor=...)` stores the per-frame outputs on
the `Episode`; `summarize()` turns them into the per-episode verdict the search rewards and the dataset records.
"""

from __future__ import annotations

from collections.abc import Sequence
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
class MonitorSummary:
    """One episode, as the monitor saw it."""

    frames: int
    max_score: float
    anomaly_frames: int
    failure_frames: int
    first_anomaly: int | None
    """Index of the first anomalous frame, if any."""
    first_failure: int | None
    """Index of the first frame judged a failure, if any."""

    @property
    def failure(self) -> bool:
        """The monitor's episode-level verdict: some frame was judged a failure."""
        return self.first_failure is not None

    def to_dict(self) -> dict:
        return {**self.__dict__, "failure": self.failure}


def summarize(outputs: Sequence[MonitorOutput]) -> MonitorSummary:
    """Per-episode verdict from per-frame outputs."""
    anomalies = [i for i, o in enumerate(outputs) if o.is_anomaly]
    failures = [i for i, o in enumerate(outputs) if o.is_failure]
    return MonitorSummary(
        frames=len(outputs),
        max_score=max((o.score for o in outputs), default=float("nan")),
        anomaly_frames=len(anomalies),
        failure_frames=len(failures),
        first_anomaly=anomalies[0] if anomalies else None,
        first_failure=failures[0] if failures else None,
    )
