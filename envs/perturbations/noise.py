"""Families that corrupt the policy's inputs or outputs at every step (from `at_step` on, if given)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.perturbations.base import Perturbation, param, register_family


@register_family
@dataclass(frozen=True, kw_only=True)
class ObsNoise(Perturbation):
    """Gaussian noise on camera images (`image_std`, in 0–255 pixel units) and on proprioception (`state_std`)."""

    family = "obs_noise"
    image_std: float = param(0.0, low=0.0, high=128.0)
    state_std: float = param(0.0, low=0.0, high=1.0)

    def observe(self, obs: dict[str, np.ndarray], t: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        if self.at_step is not None and t < self.at_step:
            return obs
        noisy = dict(obs)
        for key, value in obs.items():
            if key.endswith("_image") and self.image_std > 0:
                noise = rng.normal(0.0, self.image_std, size=value.shape)
                noisy[key] = np.clip(value + noise, 0, 255).astype(np.uint8)
            elif key.startswith("robot0_") and self.state_std > 0:
                noisy[key] = value + rng.normal(0.0, self.state_std, size=np.shape(value))
        return noisy


@register_family
@dataclass(frozen=True, kw_only=True)
class ActionNoise(Perturbation):
    """Gaussian noise of `std` on the arm part of every action (the gripper command is left alone)."""

    family = "action_noise"
    std: float = param(low=0.0, high=2.0, positive=True)

    def act(self, action: np.ndarray, t: int, rng: np.random.Generator) -> np.ndarray:
        if self.at_step is not None and t < self.at_step:
            return action
        noisy = action.copy()
        noisy[:-1] = np.clip(noisy[:-1] + rng.normal(0.0, self.std, size=len(noisy) - 1), -1.0, 1.0)
        return noisy
