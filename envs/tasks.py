"""One spec per robosuite task: everything task-specific lives here, so no env code is copied per task."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envs.choices import did_you_mean


@dataclass(frozen=True)
class TaskSpec:
    """A robosuite task as FailScope uses it."""

    name: str
    """Short name used on every CLI (`task=lift`)."""
    env_name: str
    """robosuite environment class name."""
    instruction: str
    """Language instruction of the nominal task (for monitors and reports)."""
    horizon: int
    """Control steps before an episode ends as a failure."""
    event_step: int
    """When the default mid-episode events fire: while the nominal policy is still at work."""
    objects: tuple[str, ...]
    """Root bodies of the manipulated objects, the target of object perturbations (first = primary)."""
    object_names: tuple[str, ...]
    """How the objects are called in perturbation descriptions, e.g. 'cube'."""
    surface_bodies: tuple[str, ...]
    """Bodies the objects rest on (table or bins), the target of table perturbations."""
    table_top: float = 0.8
    """World z of the support surface (robosuite's table_offset)."""
    robot: str = "Panda"
    camera: str = "agentview"
    """The policy's camera."""
    image_size: int = 84
    control_freq: int = 20
    lift_success_height: float | None = None
    """If set, success = the primary object's lowest point is this far above the table (size-invariant),
    instead of robosuite's own check, which assumes the nominal object size."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for `robosuite.make`."""

    @property
    def primary_object(self) -> str:
        return self.objects[0]


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="lift",
            env_name="Lift",
            instruction="lift the cube",
            horizon=100,
            event_step=12,
            objects=("cube_main",),
            object_names=("cube",),
            surface_bodies=("table",),
            lift_success_height=0.02,
        ),
        TaskSpec(
            name="can",
            env_name="PickPlaceCan",
            instruction="pick up the can and place it in the bin",
            horizon=400,
            event_step=40,
            objects=("Can_main",),
            object_names=("can",),
            surface_bodies=("bin1",),
            table_top=0.82,
        ),
        TaskSpec(
            name="square",
            env_name="NutAssemblySquare",
            instruction="pick up the square nut and place it on the square peg",
            horizon=400,
            event_step=40,
            objects=("SquareNut_main",),
            object_names=("square nut",),
            surface_bodies=("table",),
            table_top=0.82,
        ),
        TaskSpec(
            name="stack",
            env_name="Stack",
            instruction="stack the red cube on the green cube",
            horizon=400,
            event_step=40,
            objects=("cubeA_main", "cubeB_main"),
            object_names=("red cube", "green cube"),
            surface_bodies=("table",),
        ),
    )
}


def get_task(name: str | TaskSpec) -> TaskSpec:
    """Looks a task up by name; unknown names list the valid ones."""
    if isinstance(name, TaskSpec):
        return name
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(
            f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}{did_you_mean(name, TASKS)}"
        ) from None
