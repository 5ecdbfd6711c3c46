"""Families that change where things are: the object's initial pose and extra objects in the scene."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from envs.perturbations.base import Perturbation, param, register_family
from envs.scene import DISTRACTOR_SHAPES, distractor_body

if TYPE_CHECKING:
    from envs.scene import Scene


def free_joint_qpos(scene: Scene, body_name: str) -> slice:
    """The 7 qpos entries (position, quaternion) of a body's free joint."""
    model = scene.model
    start = model.jnt_qposadr[model.body_jntadr[scene.body_id(body_name)]]
    return slice(start, start + 7)


def free_joint_qvel(scene: Scene, body_name: str) -> slice:
    model = scene.model
    start = model.jnt_dofadr[model.body_jntadr[scene.body_id(body_name)]]
    return slice(start, start + 6)


@register_family
@dataclass(frozen=True, kw_only=True)
class InitOffset(Perturbation):
    """Shifts the object's initial position on the table by `offset` (x, y metres) beyond the nominal spread."""

    family = "init_offset"
    timing_kinds = frozenset({"reset"})
    offset: tuple[float, float] = param(low=-0.25, high=0.25, length=2)

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        qpos = free_joint_qpos(scene, scene.task.objects[self.target])
        scene.data.qpos[qpos.start : qpos.start + 2] += self.offset


@register_family
@dataclass(frozen=True, kw_only=True)
class Distractor(Perturbation):
    """Places a fixed extra object of `shape` and colour at `offset` (x, y) from the primary object.

    The distractor is one of the mocap bodies every Scene carries, parked out of view until placed.
    """

    family = "distractor"
    shape: str = "box"
    rgba: tuple[float, float, float, float] = param((0.9, 0.6, 0.1, 1.0), low=0.0, high=1.0, length=4)
    offset: tuple[float, float] = param((0.0, 0.12), low=-0.4, high=0.4, length=2)

    def check_params(self) -> None:
        if not isinstance(self.shape, str) or self.shape not in DISTRACTOR_SHAPES:
            raise ValueError(f"unknown distractor shape {self.shape!r}; valid shapes: {', '.join(DISTRACTOR_SHAPES)}")

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        model, data = scene.model, scene.data
        body = scene.body_id(distractor_body(self.shape))
        geoms = scene.geoms_of(distractor_body(self.shape))
        table_geom = scene.geoms_of(scene.task.surface_bodies[0], visual=False)[0]
        model.geom_contype[geoms] = model.geom_contype[table_geom]
        model.geom_conaffinity[geoms] = model.geom_conaffinity[table_geom]
        model.geom_rgba[geoms] = self.rgba
        anchor = data.xpos[scene.body_id(scene.task.primary_object)]
        half_height = model.geom_aabb[geoms[0]][5]
        position = [anchor[0] + self.offset[0], anchor[1] + self.offset[1], scene.task.table_top + half_height]
        data.mocap_pos[model.body_mocapid[body]] = position
