"""The behaviours of semantic-misalignment data: several tasks of one type in one scene, each with an instruction,
a scripted expert that can do it, and a check of whether it was done.

The scene is robosuite's Stack (two cubes, `cubeA` the smaller) with the cubes painted from a palette, so one
trajectory image can be paired with its own instruction ("lift the blue cube") or with that of the other task of the
same type ("lift the yellow cube"): the robot did something sensible, but not what it was told.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.perturbations.appearance import paint
from envs.scene import Scene
from policies.scripted import PLANS, ExpertPlan

SCENE_TASK = "stack"
CUBES = ("cubeA", "cubeB")
PALETTE: dict[str, tuple[float, float, float, float]] = {
    "red": (0.80, 0.10, 0.10, 1.0),
    "green": (0.10, 0.65, 0.15, 1.0),
    "blue": (0.10, 0.25, 0.85, 1.0),
    "yellow": (0.90, 0.80, 0.10, 1.0),
}
LIFT_CLEARANCE = 0.04
"""A lifted cube's bottom is this far above the table (m)."""


@dataclass(frozen=True)
class Behaviour:
    """One task of the scene: lift `cube`, or stack `cube` on `support`."""

    kind: str
    cube: str
    support: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("lift", "stack") or self.cube not in CUBES or (self.kind == "stack") != bool(self.support):
            raise ValueError(f"not a behaviour of the scene: {self}")

    @property
    def name(self) -> str:
        return f"lift_{self.cube}" if self.kind == "lift" else f"stack_{self.cube}_on_{self.support}"

    def instruction(self, colours: dict[str, str]) -> str:
        if self.kind == "lift":
            return f"lift the {colours[self.cube]} cube"
        return f"stack the {colours[self.cube]} cube on the {colours[self.support]} cube"

    def plan(self) -> ExpertPlan:
        stack = PLANS[SCENE_TASK]
        if self.kind == "lift":
            return ExpertPlan(object_key=self.cube, grasp_height=stack.grasp_height, lift=0.12)
        return ExpertPlan(
            object_key=self.cube,
            grasp_height=stack.grasp_height,
            lift=stack.lift,
            place_key=self.support,
            place_height=stack.place_height,
        )

    def done(self, scene: Scene) -> bool:
        """Whether the scene now shows this behaviour done (lifted clear; or resting on the support, let go)."""
        table = scene.task.table_top
        pos = {c: scene.data.xpos[scene.body_id(f"{c}_main")] for c in CUBES}
        half = {c: scene.object_half_height(f"{c}_main") for c in CUBES}
        if self.kind == "lift":
            return bool(pos[self.cube][2] - half[self.cube] > table + LIFT_CLEARANCE)
        top, below = pos[self.cube], pos[self.support]
        resting = abs(top[2] - below[2] - half[self.cube] - half[self.support]) < 0.01
        hand = scene.data.site_xpos[scene.env.robots[0].eef_site_id["right"]]
        return bool(np.linalg.norm(top[:2] - below[:2]) < 0.02 and resting and hand[2] - top[2] > 0.03)


BEHAVIOURS: tuple[Behaviour, ...] = (
    Behaviour("lift", "cubeA"),
    Behaviour("lift", "cubeB"),
    Behaviour("stack", "cubeA", "cubeB"),
    Behaviour("stack", "cubeB", "cubeA"),
)


def counterpart(behaviour: Behaviour) -> Behaviour:
    """The other task of the same type in the scene: the source of a misaligned instruction."""
    if behaviour.kind == "lift":
        return Behaviour("lift", CUBES[1 - CUBES.index(behaviour.cube)])
    return Behaviour("stack", behaviour.support, behaviour.cube)


def paint_cubes(scene: Scene, colours: dict[str, str]) -> None:
    for cube in CUBES:
        paint(scene, scene.geoms_of(f"{cube}_main", visual=True), PALETTE[colours[cube]])
