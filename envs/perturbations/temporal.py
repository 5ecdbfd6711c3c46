"""Executions at another pace than the demonstrations': the same policy moving faster or slower, or pausing.

These change no pixel a single frame shows, only when things happen: a monitor that matches each frame against
the demonstrations at the same step calls a slower success a failure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.perturbations.base import Perturbation, param, register_family


@register_family
@dataclass(frozen=True, kw_only=True)
class ActionScale(Perturbation):
    """Scales the arm part of every action by `scale` (under 1: slower motion, over 1: faster), clipped to the
    controller's range; the gripper command is left alone."""

    family = "action_scale"
    scale: float = param(low=0.0, high=5.0, positive=True)

    def check_params(self) -> None:
        if self.scale == 1.0:
            raise ValueError("scale 1 changes nothing")

    def act(self, action: np.ndarray, t: int, rng: np.random.Generator) -> np.ndarray:
        if self.at_step is not None and t < self.at_step:
            return action
        scaled = action.copy()
        scaled[:-1] = np.clip(scaled[:-1] * self.scale, -1.0, 1.0)
        return scaled


@register_family
@dataclass(frozen=True, kw_only=True)
class Pause(Perturbation):
    """The arm holds still for `duration` steps from `at_step` (zero motion commands; the gripper command is the
    policy's), then the policy carries on."""

    family = "pause"
    timing_kinds = frozenset({"step"})
    duration: int = param(low=1, high=10_000, integer=True)

    def act(self, action: np.ndarray, t: int, rng: np.random.Generator) -> np.ndarray:
        if self.at_step <= t < self.at_step + self.duration:
            action = action.copy()
            action[:-1] = 0.0
        return action
