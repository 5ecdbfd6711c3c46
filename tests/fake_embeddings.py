"""Tiny stand-ins for the continuous search's inputs: failure datasets in the real file layout, frozen encoders
that cost nothing, and known embeddings with two well-separated outcomes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from diagnosis.continuous_env import KnownEmbeddings

FAILING = ("cube_color_green", "table_color_blue", "light_color_red")
"""Perturbations the fake datasets fail under (their frames are reddish)."""
PASSING = ("cube_heavy", "camera_noise", "robot_color_cyan")
"""Perturbations the fake datasets succeed under (their frames are bluish)."""


def write_dataset(
    directory: Path,
    rows: Sequence[tuple[Sequence[str], bool]],
    task: str = "lift",
    policy: str = "lift_bc_image",
    seed: int = 0,
    frames: int = 3,
) -> Path:
    """A finished search run directory: failures.hdf5 with `rows` (perturbations, failed) and a summary.json.
    A failed rollout's frames are reddish and a successful one's bluish, plus noise, so outcomes are learnable."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    with h5py.File(directory / "failures.hdf5", "w") as file:
        data = file.create_group("data")
        data.attrs["task"] = task
        for i, (perturbations, failed) in enumerate(rows):
            group = data.create_group(f"demo_{i}")
            base = np.array([170, 60, 60] if failed else [60, 60, 170], dtype=float)
            video = np.clip(base + rng.normal(0, 25, (frames, 84, 84, 3)), 0, 255).astype(np.uint8)
            group.create_dataset("obs/agentview_image", data=video)
            group.attrs.update(
                {
                    "seed": i,
                    "outcome": "failure" if failed else "success",
                    "perturbations": json.dumps(list(perturbations)),
                    "failed": bool(failed),
                    "sim_failure": bool(failed),
                    "num_samples": frames,
                    "search_step": i,
                    "depth": len(perturbations),
                    "monitor": "null",
                }
            )
    (directory / "summary.json").write_text(json.dumps({"status": "complete", "task": task, "policy": policy}))
    return directory


def separable_rows(n: int, seed: int = 0) -> list[tuple[tuple[str, ...], bool]]:
    """n rollouts, each of one perturbation; FAILING ones fail, PASSING ones succeed."""
    rng = np.random.default_rng(seed)
    names = FAILING + PASSING
    picks = rng.integers(0, len(names), n)
    picks[:2] = [0, len(FAILING)]  # both outcomes, whatever n
    return [((names[p],), names[p] in FAILING) for p in picks]


def colour_features(frames: np.ndarray) -> np.ndarray:
    """A frozen 'image encoder': each frame's mean colour, scaled to about [0, 1]."""
    return np.asarray(frames, dtype=np.float32).mean(axis=(1, 2)) / 255.0


def hashed_text(texts: Sequence[str], dim: int = 8) -> np.ndarray:
    """A frozen 'sentence encoder': a fixed pseudo-random unit vector per sentence."""
    rows = []
    for text in texts:
        rng = np.random.default_rng(int(hashlib.sha256(text.encode()).hexdigest()[:8], 16))
        vector = rng.normal(size=dim)
        rows.append(vector / np.linalg.norm(vector))
    return np.asarray(rows, dtype=np.float32)


def known_embeddings(task: str = "lift", n: int = 40, dim: int = 8, seed: int = 0) -> KnownEmbeddings:
    """Two Gaussian clusters, failures around +1 and successes around −1 on the first axis."""
    rng = np.random.default_rng(seed)
    rows = separable_rows(n, seed)
    failed = np.array([f for _, f in rows])
    points = rng.normal(0, 0.2, (n, dim)).astype(np.float32)
    points[:, 0] += np.where(failed, 1.0, -1.0)
    return KnownEmbeddings(task, points, failed, tuple(ps for ps, _ in rows))
