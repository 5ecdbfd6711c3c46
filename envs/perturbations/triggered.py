"""Events triggered by what the scene shows, not by a step number: the object dropped once it is held, the object
pushed away as the gripper reaches it. A fixed step cannot place such an event in a phase of the task, since
every execution runs at its own pace.

A triggered perturbation is armed at reset and checks its condition before every frame (`Perturbation.during`);
the first time it holds, it turns into a plain step event at that step (`fires_as`), which acts in its place from
then on and is recorded in the episode's receipts with `triggered: true`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from envs.perturbations.base import Perturbation, param, register_family
from envs.perturbations.events import GripperForcedOpen, ObjectNudge

if TYPE_CHECKING:
    from envs.scene import Scene


@dataclass(frozen=True, kw_only=True)
class Triggered(Perturbation):
    """Base of the state-triggered events: `triggered(scene)` says when, `fires_as(step)` what happens then."""

    timing_kinds = frozenset({"reset"})

    @property
    def timing(self) -> str:
        return f"when {self.condition}"

    @property
    def condition(self) -> str:
        raise NotImplementedError

    def triggered(self, scene: Scene) -> bool:
        raise NotImplementedError

    def fires_as(self, step: int) -> Perturbation:
        raise NotImplementedError

    def during(self, scene: Scene, t: int, rng: np.random.Generator) -> Perturbation | None:
        return self.fires_as(t) if self.triggered(scene) else None


@register_family
@dataclass(frozen=True, kw_only=True)
class ObjectDrop(Triggered):
    """Forces the gripper open for `duration` steps, `delay` steps after it first grasps the object: the grasp is
    lost as the object is being lifted."""

    family = "object_drop"
    delay: int = param(1, low=0, high=10_000, integer=True)
    duration: int = param(20, low=1, high=10_000, integer=True)

    @property
    def condition(self) -> str:
        return f"{self.delay} steps after the gripper grasps the object"

    def triggered(self, scene: Scene) -> bool:
        return scene.is_grasped(scene.task.objects[self.target])

    def fires_as(self, step: int) -> GripperForcedOpen:
        return GripperForcedOpen(
            name=self.name,
            description=self.description,
            at_step=step + self.delay,
            target=self.target,
            duration=self.duration,
        )


@register_family
@dataclass(frozen=True, kw_only=True)
class ObjectPush(Triggered):
    """Gives the object a sudden `velocity` (m/s) once the gripper comes within `distance` metres of it."""

    family = "object_push"
    velocity: tuple[float, float, float] = param(low=-3.0, high=3.0, length=3)
    distance: float = param(0.05, low=0.005, high=1.0)

    def check_params(self) -> None:
        if not any(self.velocity):
            raise ValueError("velocity must be a non-zero vector")

    @property
    def condition(self) -> str:
        return f"the gripper is {self.distance * 100:g} cm from the object"

    def triggered(self, scene: Scene) -> bool:
        body = scene.data.xpos[scene.body_id(scene.task.objects[self.target])]
        return bool(np.linalg.norm(scene.eef_position() - body) <= self.distance)

    def fires_as(self, step: int) -> ObjectNudge:
        return ObjectNudge(
            name=self.name, description=self.description, at_step=step, target=self.target, velocity=self.velocity
        )
