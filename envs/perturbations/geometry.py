"""Families that resize things. Both visual and collision geoms change, so physics feels the new size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import mujoco
import numpy as np

from envs.perturbations.base import Perturbation, param, register_family

if TYPE_CHECKING:
    from envs.scene import Scene
    from envs.tasks import TaskSpec


def _resize_box(model: mujoco.MjModel, geom: int, half_size: np.ndarray) -> None:
    """A box's size, its collision bounds (bounding sphere and box) move together."""
    model.geom_size[geom] = half_size
    model.geom_aabb[geom][3:] = half_size
    model.geom_rbound[geom] = np.linalg.norm(half_size)


@register_family
@dataclass(frozen=True, kw_only=True)
class ObjectSize(Perturbation):
    """Resizes a box-shaped object to `half_size`; mass and inertia follow at constant density.

    The object keeps its bottom where robosuite placed it, so it still rests on the table.
    """

    family = "object_size"
    timing_kinds = frozenset({"reset"})
    half_size: tuple[float, float, float] = param(low=0.0, high=0.08, length=3, positive=True)
    """Metres, at most 0.08: the gripper starts about 0.2 m above the table, and a box reaching it at reset overlaps
    the fingers and the physics blows up at the first step (on Lift, e.g. half sizes (0.19, 0.03, 0.125)); 0.08
    keeps the top of a box 5 cm below them. (The catalogue's largest is 0.04.)"""

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        model = scene.model
        body_name = scene.task.objects[self.target]
        geoms = scene.geoms_of(body_name)
        if np.any(model.geom_type[geoms] != mujoco.mjtGeom.mjGEOM_BOX):
            raise ValueError(f"object_size needs box geoms; {body_name!r} of task {scene.task.name!r} has others")
        collision = scene.geoms_of(body_name, visual=False)
        old_half = model.geom_size[collision[0]].copy()
        new_half = np.asarray(self.half_size, dtype=float)
        for g in geoms:
            _resize_box(model, g, new_half)
        body = scene.body_id(body_name)
        ratio = new_half / old_half
        model.body_mass[body] *= np.prod(ratio)
        # Box inertia about axis i scales with mass and the squares of the other two sides.
        sq_old, sq_new = old_half**2, new_half**2
        for i in range(3):
            j, k = [a for a in range(3) if a != i]
            model.body_inertia[body][i] *= np.prod(ratio) * (sq_new[j] + sq_new[k]) / (sq_old[j] + sq_old[k])
        old_reach = scene.object_half_height(body_name)
        scene.refresh_object_geometry()
        joint_qpos = model.jnt_qposadr[model.body_jntadr[body]]
        scene.data.qpos[joint_qpos + 2] += scene.object_half_height(body_name) - old_reach


@register_family
@dataclass(frozen=True, kw_only=True)
class TableSize(Perturbation):
    """Resizes the table to `full_size` (x, y, thickness) keeping its top surface at the same height."""

    family = "table_size"
    timing_kinds = frozenset({"reset"})
    full_size: tuple[float, float, float] = param(low=0.0, high=3.0, length=3, positive=True)

    def check_task(self, task: TaskSpec) -> None:
        super().check_task(task)
        if task.surface_bodies != ("table",):
            raise ValueError(f"table_size needs a task on a table; {task.name!r} uses {task.surface_bodies}")

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        model = scene.model
        table = scene.body_id("table")
        slabs = [g for g in scene.geoms_of("table") if model.geom_type[g] == mujoco.mjtGeom.mjGEOM_BOX]
        old_half = model.geom_size[slabs[0]].copy()
        new_half = np.asarray(self.full_size, dtype=float) / 2
        for g in slabs:
            _resize_box(model, g, new_half)
        drop = new_half[2] - old_half[2]
        model.body_pos[table][2] -= drop
        for g in scene.geoms_of("table"):
            if g in slabs:
                continue
            # Legs and other decorations: follow the table's corners, stay put vertically.
            model.geom_pos[g][:2] *= new_half[:2] / old_half[:2]
            model.geom_pos[g][2] += drop
        for site in range(model.nsite):
            if model.site_bodyid[site] == table:
                model.site_pos[site][2] = new_half[2]
