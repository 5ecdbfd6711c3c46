"""Families that change how objects respond to forces: mass and friction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from envs.perturbations.base import Perturbation, param, register_family

if TYPE_CHECKING:
    from envs.scene import Scene


@register_family
@dataclass(frozen=True, kw_only=True)
class ObjectMass(Perturbation):
    """Multiplies the object's mass (and inertia, so its shape's mass distribution stays the same)."""

    family = "object_mass"
    scale: float = param(low=0.0, high=100.0, positive=True)

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        body = scene.body_id(scene.task.objects[self.target])
        scene.model.body_mass[body] *= self.scale
        scene.model.body_inertia[body] *= self.scale


@register_family
@dataclass(frozen=True, kw_only=True)
class Friction(Perturbation):
    """Multiplies the sliding friction of the object's collision geoms (a slippery or sticky object)."""

    family = "friction"
    scale: float = param(low=0.0, high=100.0, positive=True)

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        geoms = scene.geoms_of(scene.task.objects[self.target], visual=False)
        scene.model.geom_friction[geoms, 0] *= self.scale
