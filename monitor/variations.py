"""What SimFails v2 adds to the task's catalogue, and which families it holds out for testing.

A deployed monitor meets things its calibration never showed it. SimFails v2 (`monitor.dataset
design=families`) therefore splits by *family*: the test split holds only families that neither the monitor's fit
and calibration (nominal successes) nor any trained filter (the filter split) has seen a frame of. They are the
variations below, built from the families of envs/perturbations/{temporal,moving,triggered}.py, plus a few catalogue
families (`HELD_OUT_CATALOGUE`):

- failures that are not timeouts: the grasp lost (gripper forced open just after it closes on the object), the
  object pushed away or knocked off the table as the gripper reaches it;
- benign changes of pace (`TEMPORAL`): the same policy 40% slower, 20% slower, 30% faster, pausing a few steps;
- benign changes of the scene (`MOVING`): a shaking camera, flickering lights, an object passing behind the table.

Each variation's language description says what happens, so the semantic filters can be asked about it.
"""

from __future__ import annotations

from envs.perturbations import Perturbation, task_perturbations
from envs.perturbations.moving import CameraJitter, LightFlicker, MovingDistractor
from envs.perturbations.temporal import ActionScale, Pause
from envs.perturbations.triggered import ObjectDrop, ObjectPush
from envs.tasks import TaskSpec, get_task

TEMPORAL = frozenset({"action_scale", "pause"})
"""Families that change only the pace of an execution."""
MOVING = frozenset({"camera_jitter", "light_flicker", "moving_distractor"})
"""Families whose scene keeps changing during the episode without touching the task."""
TRIGGERED_FAILURES = frozenset({"object_drop", "object_push"})
"""Families meant to undo the task at a moment of its own (not a timeout)."""
HELD_OUT_CATALOGUE = frozenset({"table_color", "light_color", "object_teleport"})
"""Catalogue families that only the test split of SimFails v2 shows."""


def variations(task: str | TaskSpec) -> list[Perturbation]:
    """SimFails v2's own perturbations of `task`, in a fixed order."""
    spec = get_task(task)
    obj = spec.object_names[0]
    early, late = spec.event_step // 3, spec.event_step
    items: list[Perturbation] = [
        ActionScale(name="pace_slow_0.6", description="the robot moves 40% slower than usual", scale=0.6),
        ActionScale(name="pace_slow_0.8", description="the robot moves 20% slower than usual", scale=0.8),
        ActionScale(name="pace_fast_1.3", description="the robot moves 30% faster than usual", scale=1.3),
        Pause(name="pause_early", description="the robot stops for 8 steps early on", at_step=early, duration=8),
        Pause(name="pause_late", description="the robot stops for 5 steps mid-task", at_step=late, duration=5),
        CameraJitter(name="camera_shake", description="the camera shakes by a few millimetres", std=0.004),
        LightFlicker(name="light_flicker", description="the lights flicker", depth=0.5),
        MovingDistractor(
            name="distractor_passing",
            description="a ball rolls past behind the table",
            shape="sphere",
            rgba=(0.9, 0.6, 0.1, 1.0),
            offset=(-0.25, 0.25),
            velocity=(0.1, 0.0),
        ),
        ObjectDrop(
            name="grasp_lost", description=f"the gripper lets go of the {obj} as it lifts", delay=0, duration=30
        ),
        ObjectPush(
            name="push_away",
            description=f"the {obj} is pushed away as the gripper reaches it",
            velocity=(0.0, 1.0, 0.0),
            distance=0.06,
        ),
        ObjectPush(
            name="knock_off",
            description=f"the {obj} is knocked off the table as the gripper reaches it",
            velocity=(0.0, -3.0, 0.3),
            distance=0.06,
        ),
    ]
    for item in items:
        item.check_task(spec)
    return items


def monitor_perturbations(task: str | TaskSpec) -> dict[str, Perturbation]:
    """The task's catalogue and SimFails v2's variations, by name (the names SimFails episodes carry)."""
    catalogue = task_perturbations(task)
    extra = {p.name: p for p in variations(task)}
    clash = sorted(set(catalogue) & set(extra))
    if clash:
        raise ValueError(f"SimFails v2 variation names clash with the catalogue: {', '.join(clash)}")
    return {**catalogue, **extra}


def held_out(perturbation: Perturbation) -> bool:
    """Whether SimFails v2 keeps this perturbation's family for its test split only."""
    return perturbation.family in HELD_OUT_CATALOGUE | TEMPORAL | MOVING | TRIGGERED_FAILURES


def family_group(family: str) -> str:
    """The row a family's episodes fall in in SimFails v2's tables."""
    if family == "nominal":
        return "nominal"
    if family in TEMPORAL:
        return "benign: pace"
    if family in MOVING:
        return "benign: moving scene"
    if family in TRIGGERED_FAILURES or family in ("object_nudge", "object_teleport", "gripper_open"):
        return "failure event"
    return "other perturbation"
