"""Scenes that keep changing during the episode in ways that do not touch the task: a shaking camera, flickering
lights, an object passing through the background. Each edits the scene before every frame, around the values the
episode started with (`Scene.episode_start_values`), so it composes with reset-time changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from envs.perturbations.base import Perturbation, param, register_family
from envs.perturbations.placement import Distractor
from envs.scene import distractor_body

if TYPE_CHECKING:
    from envs.scene import Scene


@register_family
@dataclass(frozen=True, kw_only=True)
class CameraJitter(Perturbation):
    """Shakes the policy's camera: every frame its position is off by Gaussian noise of `std` metres per axis from
    where the episode started (from `at_step` on, if given)."""

    family = "camera_jitter"
    std: float = param(low=0.0, high=0.1, positive=True)

    def during(self, scene: Scene, t: int, rng: np.random.Generator) -> None:
        if self.at_step is not None and t < self.at_step:
            return None
        cam = scene.camera_id()
        scene.model.cam_pos[cam] = scene.episode_start_values["cam_pos"][cam] + rng.normal(0.0, self.std, size=3)
        return None


@register_family
@dataclass(frozen=True, kw_only=True)
class LightFlicker(Perturbation):
    """Flickering lights: every frame each light's output is its starting value times a factor drawn uniformly
    from [1 - depth, 1] (from `at_step` on, if given)."""

    family = "light_flicker"
    depth: float = param(low=0.0, high=1.0, positive=True)

    def during(self, scene: Scene, t: int, rng: np.random.Generator) -> None:
        if self.at_step is not None and t < self.at_step:
            return None
        start = scene.episode_start_values
        factor = rng.uniform(1.0 - self.depth, 1.0, size=(len(start["light_diffuse"]), 1))
        scene.model.light_diffuse[:] = start["light_diffuse"] * factor
        scene.model.light_specular[:] = start["light_specular"] * factor
        return None


@register_family
@dataclass(frozen=True, kw_only=True)
class MovingDistractor(Distractor):
    """A distractor that passes through the scene: placed like `distractor` (at `offset` from the primary object),
    then moving at `velocity` (x, y in m/s) every step. It touches nothing (no collisions): it is scenery."""

    family = "moving_distractor"
    velocity: tuple[float, float] = param(low=-1.0, high=1.0, length=2)

    def check_params(self) -> None:
        super().check_params()
        if not any(self.velocity):
            raise ValueError("velocity must be a non-zero vector")

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        super().apply(scene, rng)
        geoms = scene.geoms_of(self._body)
        scene.model.geom_contype[geoms] = 0
        scene.model.geom_conaffinity[geoms] = 0

    @property
    def _body(self) -> str:
        return distractor_body(self.shape)

    def during(self, scene: Scene, t: int, rng: np.random.Generator) -> None:
        if t == 0:
            return None
        mocap = scene.model.body_mocapid[scene.body_id(self._body)]
        scene.data.mocap_pos[mocap][:2] += np.asarray(self.velocity) / scene.task.control_freq
        return None
