"""Synthetic camera streams for monitor tests: a textured scene whose block moves with the task's progress, and an
anomaly that no nominal stream shows."""

import numpy as np


def scene(progress: float, jitter: int) -> np.ndarray:
    """One 84×84 frame: a fixed texture with a block whose position follows the task's progress."""
    y, x = np.mgrid[0:84, 0:84]
    frame = np.stack([80 + 40 * np.sin(x / 6.0), 90 + 30 * np.cos(y / 5.0), 100 + 0 * x], -1)
    top, left = 20 + jitter, int(10 + 50 * progress) + jitter
    frame[top : top + 18, left : left + 14] = (200, 60, 40)
    return frame.astype(np.uint8)


def stream(seed: int) -> np.ndarray:
    """A nominal episode of 12–16 frames, its block jittered by a pixel per frame."""
    rng = np.random.default_rng(seed)
    length = int(rng.integers(12, 17))
    return np.stack([scene(k / (length - 1), int(rng.integers(-1, 2))) for k in range(length)])


def anomalous(frame: np.ndarray) -> np.ndarray:
    out = frame.copy()
    out[50:80, 5:45] = (20, 220, 240)  # something that never appears in the nominal streams
    return out
