"""Families that change only what the camera sees: colours, lights, camera pose."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import mujoco
import numpy as np

from envs.perturbations.base import Perturbation, param, register_family

if TYPE_CHECKING:
    from envs.scene import Scene


def paint(scene: Scene, geoms: np.ndarray, rgba: tuple[float, ...]) -> None:
    # A geom with a material shows the material's colour and texture; drop it so the rgba shows.
    scene.model.geom_matid[geoms] = -1
    scene.model.geom_rgba[geoms] = rgba


@dataclass(frozen=True, kw_only=True)
class _Recolor(Perturbation):
    rgba: tuple[float, float, float, float] = param(low=0.0, high=1.0, length=4)


@register_family
@dataclass(frozen=True, kw_only=True)
class ObjectColor(_Recolor):
    """Paints the task's object (`target`) `rgba`."""

    family = "object_color"

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        paint(scene, scene.geoms_of(scene.task.objects[self.target], visual=True), self.rgba)


@register_family
@dataclass(frozen=True, kw_only=True)
class TableColor(_Recolor):
    """Paints the table (the task's surfaces) `rgba`."""

    family = "table_color"

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        for body in scene.task.surface_bodies:
            paint(scene, scene.geoms_of(body, visual=True), self.rgba)


@register_family
@dataclass(frozen=True, kw_only=True)
class RobotColor(_Recolor):
    """Paints the robot's visual geoms `rgba`."""

    family = "robot_color"

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        paint(scene, scene.robot_visual_geoms(), self.rgba)


@register_family
@dataclass(frozen=True, kw_only=True)
class LightColor(Perturbation):
    """Every light's diffuse colour becomes `rgb` (scaled by the light's nominal brightness)."""

    family = "light_color"
    rgb: tuple[float, float, float] = param(low=0.0, high=1.0, length=3)

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        brightness = scene.model.light_diffuse.max(axis=1, keepdims=True)
        scene.model.light_diffuse[:] = brightness * np.asarray(self.rgb)


@register_family
@dataclass(frozen=True, kw_only=True)
class LightIntensity(Perturbation):
    """Scales every light's diffuse and specular output; optionally points the lights along `direction`."""

    family = "light_intensity"
    scale: float = param(low=0.0, high=10.0)
    direction: tuple[float, float, float] | None = param(None, low=-100.0, high=100.0, length=3)
    """Any length: it is normalised."""

    def check_params(self) -> None:
        if self.direction is not None and np.linalg.norm(np.asarray(self.direction, dtype=float)) == 0:
            raise ValueError("direction must be a non-zero vector")

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        model = scene.model
        model.light_diffuse[:] = np.clip(model.light_diffuse * self.scale, 0.0, 1.0)
        model.light_specular[:] = np.clip(model.light_specular * self.scale, 0.0, 1.0)
        if self.direction is not None:
            model.light_dir[:] = np.asarray(self.direction) / np.linalg.norm(self.direction)


@register_family
@dataclass(frozen=True, kw_only=True)
class CameraPose(Perturbation):
    """Moves the policy's camera by `offset` (metres, world frame) and turns it by `rotation_deg` (x, y, z)."""

    family = "camera_pose"
    offset: tuple[float, float, float] = param((0.0, 0.0, 0.0), low=-0.5, high=0.5, length=3)
    rotation_deg: tuple[float, float, float] = param((0.0, 0.0, 0.0), low=-45.0, high=45.0, length=3)

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        cam = scene.camera_id()
        model = scene.model
        body_rot = np.empty(9)
        mujoco.mju_quat2Mat(body_rot, model.body_quat[model.cam_bodyid[cam]])
        # cam_pos is in the parent body's frame; the offset is given in the world frame.
        model.cam_pos[cam] += body_rot.reshape(3, 3).T @ np.asarray(self.offset)
        turn = np.empty(4)
        mujoco.mju_euler2Quat(turn, np.deg2rad(self.rotation_deg), "xyz")
        result = np.empty(4)
        mujoco.mju_mulQuat(result, model.cam_quat[cam].copy(), turn)
        model.cam_quat[cam] = result
