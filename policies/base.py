"""What FailScope needs from a policy under test."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Policy(Protocol):
    """A closed-loop policy: reset at the start of every episode, then one action per control step.

    `obs_keys` names what the policy reads from the observation dict (robosuite's keys, plus
    `<camera>_image` for the upright uint8 HWC camera frame); the harness renders images only when asked.
    """

    obs_keys: tuple[str, ...]
    action_dim: int

    def reset(self) -> None: ...

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray: ...


def image_key(camera: str) -> str:
    """The observation key of a camera's frame, as robosuite names it."""
    return f"{camera}_image"
