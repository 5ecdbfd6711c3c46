"""I-FailSense inside the runtime monitor: `monitor.semantic=failsense` (FIDeL's semantic filter) and a verdict on
a finished rollout.

The classifier reads a trajectory image of T tiles. As a filter it is shown what the monitor has at the anomalous
frame: the first half of the tiles the episode's reference frame, the rest the current one (a before/after
trajectory); on a finished rollout, T frames evenly spaced from its first to its last.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monitor.failsense.dataset import tile
from monitor.failsense.model import FailSense


class FailSenseFilter:
    """Anomaly → failure when the classifier's weighted vote says the trajectory fails the instruction."""

    def __init__(self, model: FailSense):
        if model.config.views != 1:
            raise ValueError(f"the monitor sees one camera; this classifier reads {model.config.views} views")
        self.model = model
        self.features = model.features

    @classmethod
    def load(cls, path: str | Path) -> FailSenseFilter:
        return cls(FailSense.load(path))

    def verdict(self, trajectory: np.ndarray, instruction: str) -> tuple[bool, str]:
        """(fails, why) for one trajectory image (H, T·W, 3)."""
        out = self.model.predict(self.features(trajectory[None]), [instruction])
        blocks = ", ".join(f"{p:.2f}" for p in out["blocks"][0])
        fails = bool(out["vote"][0])
        why = f"I-FailSense {'failure' if fails else 'success'}: head p={out['head'][0]:.2f}, blocks p=[{blocks}]"
        return fails, why

    def __call__(
        self, task_text: str, reference_frame: np.ndarray, frame: np.ndarray, heatmap: np.ndarray
    ) -> tuple[bool, str]:
        tiles = self.model.config.frames
        before = tiles // 2
        frames = np.stack([reference_frame] * before + [frame] * (tiles - before))[None]  # (1 view, T, H, W, 3)
        return self.verdict(tile(frames, tiles), task_text)

    def episode(self, frames: np.ndarray, instruction: str) -> tuple[bool, str]:
        """Verdict on a finished rollout's frames (S, H, W, 3)."""
        if frames.ndim != 4 or len(frames) < 1:
            raise ValueError(f"need frames (S, H, W, 3), got {frames.shape}")
        return self.verdict(tile(frames[None], self.model.config.frames), instruction)
