"""The default perturbation set of each task, built from the families by one set of builders (no per-task copies).

Lift's set starts with RoboMD's 21 Lift perturbations (cube/table/robot/light colours, table and cube sizes).
"""

from __future__ import annotations

from envs.perturbations.appearance import CameraPose, LightColor, LightIntensity, ObjectColor, RobotColor, TableColor
from envs.perturbations.base import COLORS, Perturbation
from envs.perturbations.dynamics import Friction, ObjectMass
from envs.perturbations.events import GripperForcedOpen, ObjectNudge, ObjectTeleport
from envs.perturbations.geometry import ObjectSize, TableSize
from envs.perturbations.noise import ActionNoise, ObsNoise
from envs.perturbations.placement import Distractor, InitOffset
from envs.tasks import TaskSpec

BOX_OBJECT_TASKS = {"lift", "stack"}  # object_size resizes box geoms only


def _dims(values: tuple[float, ...]) -> str:
    return "x".join(f"{v:g}" for v in values)


def robomd_appearance(task: TaskSpec) -> list[Perturbation]:
    """RoboMD's colour and size perturbations, for any task (sizes where the task allows them)."""
    obj = task.object_names[0]
    key = obj.replace(" ", "_")
    items: list[Perturbation] = []
    for color in ("red", "green", "blue", "gray"):
        items.append(ObjectColor(name=f"{key}_color_{color}", description=f"the {obj} is {color}", rgba=COLORS[color]))
    for color in ("green", "blue", "red", "gray"):
        items.append(TableColor(name=f"table_color_{color}", description=f"the table is {color}", rgba=COLORS[color]))
    if task.surface_bodies == ("table",):
        for size in ((0.8, 0.2, 0.025), (0.2, 0.8, 0.025)):
            shape = "long and narrow" if size[0] > size[1] else "short and deep"
            items.append(
                TableSize(
                    name=f"table_size_{_dims(size)}",
                    description=f"the table is {shape} ({_dims(size)} m)",
                    full_size=size,
                )
            )
    if task.name in BOX_OBJECT_TASKS:
        for half, words in (
            ((0.04, 0.04, 0.04), "twice as large"),
            ((0.01, 0.01, 0.01), "half as large"),
            ((0.04, 0.01, 0.01), "a long thin bar"),
        ):
            items.append(
                ObjectSize(name=f"{key}_size_{_dims(half)}", description=f"the {obj} is {words}", half_size=half)
            )
    for color in ("red", "green", "cyan", "gray"):
        items.append(RobotColor(name=f"robot_color_{color}", description=f"the robot is {color}", rgba=COLORS[color]))
    for color in ("red", "green", "blue", "gray"):
        rgb = COLORS[color][:3] if color != "gray" else (0.5, 0.5, 0.5)
        items.append(LightColor(name=f"light_color_{color}", description=f"the light is {color}", rgb=rgb))
    return items


def scene_and_dynamics(task: TaskSpec) -> list[Perturbation]:
    """Camera, lighting, dynamics, clutter and noise: the rest of the families at reset."""
    obj = task.object_names[0]
    key = obj.replace(" ", "_")
    return [
        CameraPose(
            name="camera_shift_left", description="the camera is moved 5 cm to the left", offset=(0.0, -0.05, 0.0)
        ),
        CameraPose(
            name="camera_tilt_down", description="the camera is tilted down by 8 degrees", rotation_deg=(-8.0, 0.0, 0.0)
        ),
        LightIntensity(name="light_dim", description="the room is dim", scale=0.35),
        LightIntensity(
            name="light_bright_side",
            description="a bright light shines from the side",
            scale=1.6,
            direction=(1.0, 0.0, -0.4),
        ),
        ObjectMass(name=f"{key}_heavy", description=f"the {obj} is ten times heavier", scale=10.0),
        Friction(name=f"{key}_slippery", description=f"the {obj} is slippery", scale=0.1),
        Distractor(
            name="distractor_box", description="an orange box stands next to the object", shape="box", offset=(0.0, 0.1)
        ),
        InitOffset(name=f"{key}_offset_far", description=f"the {obj} starts 10 cm further away", offset=(0.1, 0.0)),
        ObsNoise(name="camera_noise", description="the camera image is noisy", image_std=25.0),
        ActionNoise(name="action_noise", description="the arm's motion is jittery", std=0.3),
    ]


def mid_episode_events(task: TaskSpec, at_step: int) -> list[Perturbation]:
    """Events at one step of the episode: two harmless for the scene, three that undo the task."""
    obj = task.object_names[0]
    key = obj.replace(" ", "_")
    return [
        LightIntensity(name="event_light_dim", description="the light dims mid-task", scale=0.35, at_step=at_step),
        Distractor(
            name="event_distractor",
            description="a ball appears next to the object mid-task",
            shape="sphere",
            rgba=(0.2, 0.4, 0.9, 1.0),
            offset=(0.0, -0.12),
            at_step=at_step,
        ),
        ObjectNudge(
            name=f"event_{key}_nudge",
            description=f"the {obj} is bumped mid-task",
            velocity=(0.0, 0.6, 0.0),
            at_step=at_step,
        ),
        ObjectTeleport(
            name=f"event_{key}_teleport",
            description=f"the {obj} jumps 8 cm mid-task",
            offset=(0.0, 0.08),
            at_step=at_step,
        ),
        GripperForcedOpen(
            name="event_gripper_open",
            description="the gripper opens by itself mid-task",
            duration=15,
            at_step=at_step + 10,
        ),
    ]


def default_perturbations(task: TaskSpec) -> list[Perturbation]:
    """Every perturbation a task offers, in a fixed order (the search's action space)."""
    items = robomd_appearance(task) + scene_and_dynamics(task) + mid_episode_events(task, at_step=task.event_step)
    for item in items:
        item.check_task(task)
    return items
