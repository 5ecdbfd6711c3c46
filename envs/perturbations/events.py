"""Mid-episode events: things that happen to the scene at one control step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from envs.perturbations.base import Perturbation, param, register_family
from envs.perturbations.placement import free_joint_qpos, free_joint_qvel

if TYPE_CHECKING:
    from envs.scene import Scene


@dataclass(frozen=True, kw_only=True)
class _Event(Perturbation):
    timing_kinds = frozenset({"step"})


@register_family
@dataclass(frozen=True, kw_only=True)
class ObjectNudge(_Event):
    """Gives the object a sudden linear velocity (m/s), as if something bumped it."""

    family = "object_nudge"
    velocity: tuple[float, float, float] = param(low=-3.0, high=3.0, length=3)

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        qvel = free_joint_qvel(scene, scene.task.objects[self.target])
        scene.data.qvel[qvel.start : qvel.start + 3] += self.velocity


@register_family
@dataclass(frozen=True, kw_only=True)
class ObjectTeleport(_Event):
    """Moves the object instantly by `offset` (x, y metres on the table), dropping it if held."""

    family = "object_teleport"
    offset: tuple[float, float] = param(low=-0.3, high=0.3, length=2)

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        body_name = scene.task.objects[self.target]
        qpos, qvel = free_joint_qpos(scene, body_name), free_joint_qvel(scene, body_name)
        scene.data.qpos[qpos.start : qpos.start + 2] += self.offset
        # Put it back down on the table, at rest, so the event is a displacement and not a throw.
        scene.data.qpos[qpos.start + 2] = scene.task.table_top + scene.object_half_height(body_name) + 0.002
        scene.data.qvel[qvel] = 0.0


@register_family
@dataclass(frozen=True, kw_only=True)
class GripperForcedOpen(_Event):
    """Overrides the gripper command with 'open' for `duration` steps from `at_step`."""

    family = "gripper_open"
    duration: int = param(low=1, high=10_000, integer=True)

    def act(self, action: np.ndarray, t: int, rng: np.random.Generator) -> np.ndarray:
        if self.at_step <= t < self.at_step + self.duration:
            action = action.copy()
            action[-1] = -1.0
        return action
