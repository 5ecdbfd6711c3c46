"""Composed perturbations: several reset-time perturbations applied together, as one candidate (`a+b`).

A search over singles cannot see a failure that appears only when two changes meet (a dim light on a grey cube);
a composed candidate lets every method try the combination as one arm, and its rollouts are counted as its own.
Its parts act in order with the episode's random stream, as a list of perturbations would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from envs.perturbations.base import Perturbation, register_family
from envs.perturbations.triggered import Triggered

if TYPE_CHECKING:
    from envs.scene import Scene
    from envs.tasks import TaskSpec


@register_family
@dataclass(frozen=True, kw_only=True)
class Composed(Perturbation):
    """`parts` (two or more reset-time perturbations of different families or targets) applied together."""

    family = "composed"
    timing_kinds = frozenset({"reset"})
    parts: tuple[Perturbation, ...] = ()

    def check_params(self) -> None:
        if len(self.parts) < 2 or not all(isinstance(p, Perturbation) for p in self.parts):
            raise ValueError(f"composed perturbation {self.name!r} needs two or more perturbations as parts")
        for part in self.parts:
            if isinstance(part, (Composed, Triggered)) or part.at_step is not None:
                raise ValueError(
                    f"composed perturbation {self.name!r}: part {part.name!r} must be a single reset-time perturbation"
                )
        keys = [(p.family, p.target) for p in self.parts]
        clash = next((p.name for p, k in zip(self.parts, keys) if keys.count(k) > 1), None)
        if clash is not None:
            raise ValueError(
                f"composed perturbation {self.name!r}: two parts change {clash}'s family on one object; one would "
                "overwrite the other"
            )

    def check_task(self, task: TaskSpec) -> None:
        for part in self.parts:
            part.check_task(task)

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        for part in self.parts:
            part.apply(scene, rng)

    def act(self, action: np.ndarray, t: int, rng: np.random.Generator) -> np.ndarray:
        for part in self.parts:
            action = part.act(action, t, rng)
        return action

    def observe(self, obs: dict[str, np.ndarray], t: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        for part in self.parts:
            obs = part.observe(obs, t, rng)
        return obs

    def during(self, scene: Scene, t: int, rng: np.random.Generator) -> None:
        for part in self.parts:
            part.during(scene, t, rng)

    @property
    def acts_during(self) -> bool:
        return any(part.acts_during for part in self.parts)


def compose(parts: Sequence[Perturbation]) -> Composed:
    """The parts as one perturbation, named `a+b` and described `a's description, and b's`."""
    return Composed(
        name="+".join(p.name for p in parts),
        description=", and ".join(p.description for p in parts),
        parts=tuple(parts),
    )


def sampled_pairs(catalogue: dict[str, Perturbation], count: int, seed: int) -> list[Composed]:
    """A seeded sample of `count` pairs of reset-time perturbations that can act together (different families: two
    colours of one cube cannot); the same seed gives the same pairs for every policy."""
    items = [p for p in catalogue.values() if p.at_step is None and not isinstance(p, Composed)]
    pairs = [(a, b) for i, a in enumerate(items) for b in items[i + 1 :] if a.family != b.family]
    if not 1 <= count <= len(pairs):
        raise ValueError(f"pairs must be in [1, {len(pairs)}] (the task's compatible pairs), got {count}")
    chosen = sorted(np.random.default_rng(seed).choice(len(pairs), size=count, replace=False))
    return [compose(pairs[i]) for i in chosen]
