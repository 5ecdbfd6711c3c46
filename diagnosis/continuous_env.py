"""`ContinuousSearchEnv`: RoboMD's continuous failure search (Algorithm 2, reward Eq. 2) as a Gymnasium env.

An action is a point in the learned failure embedding (diagnosis.embedding). It is matched to the nearest known
embedding — a rollout some search already ran — and that rollout's outcome is the verdict; nothing is rolled out, so
a step costs one nearest-neighbour lookup and the search can afford tens of thousands of them. Reward (Eq. 2):

    failure:   c_fail / (penalty + 1) − repeat_cost · N
    success:  −c_success / (horizon · (penalty + 1))

penalty = distance_weight · (distance to the matched embedding) / scale, where scale is the known embeddings' mean
distance to their centroid, so the weight means the same for every embedding; N = how many steps in a row before
this one matched the same perturbations. A failure ends the search episode and `horizon` successes truncate it, so
an episode that finds nothing costs at most c_success.

Two bugs of RoboMD's code are fixed: its success reward divides by the distance (infinite when an action lands on
a known embedding), and its repeat counter compares every action with the run's first one instead of the previous
one. The counter counts repeats of the matched perturbations, as RoboMD's does (its known embeddings carry action
ids): two rollouts of the same perturbation are the same failure mode. It survives the end of a search episode —
a failure ends the episode, so the repeats worth penalising span episodes — and restarts on `reset(seed=...)`.

The observation is constant: there is no scene to look at (RoboMD's observation is the same nominal image every
step), so the search policy is one Gaussian over the embedding, and its density is what ranks perturbations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from scipy.spatial.distance import cdist

from envs.tasks import get_task


@dataclass(frozen=True)
class ContinuousRewards:
    """RoboMD Eq. 2 with its constants."""

    c_fail: float = 1.0
    """Reward of matching a failed rollout at distance 0."""
    c_success: float = 1.0
    """Cost of a search episode of `horizon` successes at distance 0."""
    distance_weight: float = 1.0
    """Penalty per unit of distance to the matched embedding, in units of the known embeddings' spread."""
    repeat_cost: float = 0.1
    """k: cost per consecutive repeat of the same matched perturbations (failures only, as in Eq. 2)."""
    horizon: int = 10
    """Search steps per episode when no failure ends it first."""

    def __call__(self, failed: bool, penalty: float, repeats: int) -> float:
        if penalty < 0:
            raise ValueError(f"the distance penalty must be >= 0, got {penalty}")
        if failed:
            return self.c_fail / (penalty + 1.0) - self.repeat_cost * repeats
        return -self.c_success / (self.horizon * (penalty + 1.0))


@dataclass(frozen=True)
class KnownEmbeddings:
    """Where an action can land: embeddings of rollouts that were run, each with its perturbations and outcome."""

    task: str
    embeddings: np.ndarray
    """(N, dim)."""
    failed: np.ndarray
    """(N,) bool."""
    perturbations: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or len(self.embeddings) == 0:
            raise ValueError(f"known embeddings must be a non-empty (N, dim) array, got shape {self.embeddings.shape}")
        if not len(self.embeddings) == len(self.failed) == len(self.perturbations):
            raise ValueError(
                f"{len(self.embeddings)} embeddings, {len(self.failed)} outcomes and {len(self.perturbations)} "
                "perturbation lists: one of each per known rollout"
            )

    def __len__(self) -> int:
        return len(self.embeddings)

    @classmethod
    def load(cls, directory: str | Path, task: str | None = None, policy: str | None = None) -> KnownEmbeddings:
        """The known embeddings of a saved embedding (python -m diagnosis.embed)."""
        from diagnosis.embed import TrainedEmbedding

        trained = TrainedEmbedding.load(directory, task, policy)
        return cls(trained.task, trained.known, trained.failed, tuple(trained.perturbations))

    @property
    def scale(self) -> float:
        """Mean distance to the centroid: the spread distances are measured against."""
        spread = float(np.linalg.norm(self.embeddings - self.embeddings.mean(axis=0), axis=1).mean())
        return spread if spread > 0 else 1.0

    def bounds(self, widen: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
        """The known embeddings' range per dimension, widened by `widen` of it (and never empty), so the extremes
        lie inside the action space rather than on its faces."""
        low, high = self.embeddings.min(axis=0), self.embeddings.max(axis=0)
        pad = widen * (high - low) + 1e-3
        return (low - pad).astype(np.float32), (high + pad).astype(np.float32)

    def match(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Algorithm 2's lookup: index of and distance to the nearest known embedding, per point."""
        distances = cdist(np.atleast_2d(points).astype(np.float64), self.embeddings.astype(np.float64))
        index = distances.argmin(axis=1)
        return index, distances[np.arange(len(index)), index]

    def rows_of(self, name: str) -> np.ndarray:
        """Rows that tried `name` alone, or every row that involved it when it was never tried alone."""
        alone = np.array([ps == (name,) for ps in self.perturbations])
        return np.flatnonzero(alone) if alone.any() else np.flatnonzero([name in ps for ps in self.perturbations])

    def names(self) -> list[str]:
        return sorted({n for ps in self.perturbations for n in ps})


class ContinuousSearchEnv(gym.Env):
    """Continuous failure search in a learned embedding; see the module docstring.

    `info` of every step: the matched row, its perturbations and outcome, the distance, penalty and repeat count.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        task: str = "lift",
        embedding: KnownEmbeddings | str | Path | None = None,
        policy: str | None = None,
        rewards: ContinuousRewards = ContinuousRewards(),
    ):
        """`embedding`: known embeddings, or a directory written by `python -m diagnosis.embed`; one trained for
        another task (or, when `policy` is given, another policy) is an error."""
        if embedding is None:
            raise ValueError("embedding= is required: a directory written by python -m diagnosis.embed")
        task = get_task(task).name
        known = embedding if isinstance(embedding, KnownEmbeddings) else KnownEmbeddings.load(embedding, task, policy)
        if known.task != task:
            raise ValueError(f"the known embeddings are of task {known.task!r}, not {task!r}")
        if rewards.horizon < 1:
            raise ValueError(f"rewards.horizon must be >= 1, got {rewards.horizon}")
        self.task, self.known, self.rewards = task, known, rewards
        self.scale = known.scale
        low, high = known.bounds()
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (1,), dtype=np.float32)
        self.steps = 0
        self.repeats = 0
        self._last: tuple[str, ...] | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.steps = 0
        if seed is not None:  # a seeded reset starts a new search
            self.repeats, self._last = 0, None
        return self._observation(), {}

    def step(self, action: np.ndarray):
        index, distance = self.known.match(np.asarray(action, dtype=np.float64)[None])
        row, distance = int(index[0]), float(distance[0])
        matched = self.known.perturbations[row]
        self.repeats = self.repeats + 1 if matched == self._last else 0
        self._last = matched
        failed = bool(self.known.failed[row])
        penalty = self.rewards.distance_weight * distance / self.scale
        reward = self.rewards(failed, penalty, self.repeats)
        self.steps += 1
        truncated = not failed and self.steps >= self.rewards.horizon
        info = {
            "row": row,
            "perturbations": list(matched),
            "failed": failed,
            "distance": distance,
            "penalty": penalty,
            "repeats": self.repeats,
        }
        return self._observation(), float(reward), failed, truncated, info

    def _observation(self) -> np.ndarray:
        return np.zeros(1, dtype=np.float32)
