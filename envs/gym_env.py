"""`PerturbedTask`: a perturbed robosuite task behind the Gymnasium API, for policies that want one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from envs.perturbations import Perturbation, resolve
from envs.rollout import PerturbedEpisode, Runner
from policies.base import image_key

STATE_KEYS = ("robot0_proprio-state", "object-state")


class PerturbedTask(gym.Env):
    """Observations: the policy camera's upright uint8 frame plus robosuite's proprio and object state vectors.

    Reward is 1 on success (sparse); an episode terminates on success, on an unrecoverable failure (object off
    the table) or a simulation error, and is truncated at the task's horizon. `reset(options={"perturbations":
    [...]})` changes the perturbations for that episode.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        task: str = "lift",
        perturbations: Sequence[Perturbation | str] = (),
        render_mode: str | None = "rgb_array",
    ):
        self.runner = Runner(task)
        self.task = self.runner.task
        self.perturbations = resolve(self.task.name, perturbations)
        self.render_mode = render_mode
        self.image_key = image_key(self.task.camera)
        state = self.runner.scene.reset(0)
        size = self.task.image_size
        self.observation_space = gym.spaces.Dict(
            {
                self.image_key: gym.spaces.Box(0, 255, (size, size, 3), np.uint8),
                **{k: gym.spaces.Box(-np.inf, np.inf, state[k].shape, np.float32) for k in STATE_KEYS},
            }
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        self._episode: PerturbedEpisode | None = None
        self._obs: dict[str, np.ndarray] = {}

    def _convert(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if obs:
            self._obs = obs
        return {
            self.image_key: self._obs[self.image_key],
            **{k: self._obs[k].astype(np.float32) for k in STATE_KEYS},
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options and "perturbations" in options:
            self.perturbations = resolve(self.task.name, options["perturbations"])
        episode_seed = int(self.np_random.integers(2**31)) if seed is None else seed
        self._episode = self.runner.episode(self.perturbations, episode_seed, render_frames=True)
        return self._convert(self._episode.start()), {"perturbations": [p.name for p in self.perturbations]}

    def step(self, action: np.ndarray):
        if self._episode is None:
            raise RuntimeError("call reset() before step()")
        obs, _ = self._episode.step(np.asarray(action, dtype=float))
        episode = self._episode
        success = episode.outcome == "success"
        truncated = episode.outcome == "failure" and episode.failure_step is None
        terminated = episode.done and not truncated
        info = {
            "outcome": episode.outcome,
            "success": success,
            "failure_step": episode.failure_step,
            "error": episode.error,
        }
        return self._convert(obs), float(success), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        return self._obs.get(self.image_key) if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        self.runner.close()
