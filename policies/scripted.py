"""Scripted experts: waypoint controllers on privileged object state, the demonstrators for behaviour cloning.

Each expert is a small state machine (approach above the object, descend, close, lift, and for pick-and-place:
carry, lower, release, retreat) with a proportional controller on the end-effector pose. Actions follow robosuite's
default Panda controller: OSC_POSE deltas (3 position, 3 axis-angle) scaled to ±1, then the gripper (+1 closes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from envs.tasks import TaskSpec, get_task

POS_SCALE = 0.05  # metres per unit action (robosuite OSC output_max)
ROT_SCALE = 0.5  # radians per unit action


@dataclass(frozen=True)
class ExpertPlan:
    """Task-specific waypoints of the pick (and place) expert."""

    object_key: str
    """Observation prefix of the object (`<key>_pos`, `<key>_quat`)."""
    grasp_height: float = 0.0
    """Grasp point above the object's origin (m)."""
    hover: float = 0.08
    lift: float = 0.12
    place_xy: tuple[float, float] | None = None
    """Drop point in the world (None: lifting is the task)."""
    place_key: str | None = None
    """Observation prefix of a place target that moves (stacking on another object)."""
    place_height: float = 0.0
    """Release height above the place point (m)."""
    yaw_symmetry: float | None = np.pi / 2
    """The object looks the same after turning by this angle (cube: 90°); grasp yaw is chosen modulo it. None: a
    round object (the can): the hand holds its starting yaw, because any yaw grasps it and a cloned policy cannot
    see the object's yaw well enough to copy turns that follow it."""
    grasp_tolerance: float = 0.008
    """Close once the hand is this near the grasp point (m). Where the hand stalls short of it, the 40-step
    fallback makes the close time unobservable, and cloned policies then hover and never close."""
    grasp_offset: float = 0.0
    """Grasp point along the object's own x axis from its origin (m): the square nut is held by its handle."""
    place_symmetry: float | None = None
    """Set for an object that must go onto something (the nut onto its peg): the hand then steers the held
    object's origin, not itself, over the place point, and turns it to world yaw 0 modulo this angle."""
    place_tolerance: float = 0.01
    """Lowering starts once the hand (or the steered object) is this near above the place point (m)."""
    carry_speed: float = 1.0
    """Largest action per axis while carrying (1: full speed); a held handle swings loose when carried fast."""
    lower_speed: float = 1.0
    """Largest downward action while lowering (1: full speed); slower lets the hand correct sideways on the way."""
    lower_steps: int = 30
    """Release after this many steps of lowering even if the hand has not arrived."""
    max_yaw_jitter: float = np.pi
    """Cap on the expert's grasp-yaw jitter (radians): a handle held at an angle slips out while the nut turns."""


PLANS: dict[str, ExpertPlan] = {
    "lift": ExpertPlan(object_key="cube", grasp_height=-0.002),
    "can": ExpertPlan(
        object_key="Can",
        grasp_height=0.0,
        lift=0.17,
        place_xy=(0.1975, 0.4025),
        place_height=0.12,
        yaw_symmetry=None,
        grasp_tolerance=0.015,
    ),
    "stack": ExpertPlan(object_key="cubeA", grasp_height=-0.002, lift=0.1, place_key="cubeB", place_height=0.055),
    # The square peg stands at a fixed point, 20 cm tall: the nut is lifted clear of it, turned square to it and
    # lowered around it.
    "square": ExpertPlan(
        object_key="SquareNut",
        grasp_offset=0.054,
        lift=0.17,
        place_xy=(0.23, 0.10),
        place_height=0.015,
        yaw_symmetry=np.pi,
        place_symmetry=np.pi / 2,
        place_tolerance=0.004,  # the nut's hole clears the peg by under 7 mm a side
        carry_speed=0.5,
        lower_speed=0.25,
        lower_steps=60,
        max_yaw_jitter=0.0,
    ),
}


def yaw_of_quat_xyzw(quat: np.ndarray) -> float:
    x, y, z, w = quat
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def wrap(angle: float, period: float) -> float:
    """Angle modulo `period`, in [-period/2, period/2)."""
    return float((angle + period / 2) % period - period / 2)


class _State(NamedTuple):
    """What one step of the expert reads from the observation."""

    obs: Mapping[str, np.ndarray]
    eef: np.ndarray
    eef_yaw: float
    obj: np.ndarray
    obj_yaw: float
    yaw_target: float
    grasp_point: np.ndarray


class ScriptedExpert:
    """Privileged-state expert for one task (reads object poses from the observation)."""

    action_dim = 7

    def __init__(
        self,
        task: str | TaskSpec,
        gain: float = 1.0,
        yaw_jitter: float = 0.0,
        seed: int = 0,
        plan: ExpertPlan | None = None,
    ):
        """`yaw_jitter` (radians): each episode grasps at a random yaw offset up to this size, so that cloned
        policies see (and learn to lift from) imperfect grasps; 0 is the clean expert. Round objects ignore it.
        `plan`: another behaviour in the task's scene (lift the other cube of Stack); default the task's own."""
        self.task = get_task(task)
        self.rng = np.random.default_rng([seed, 4242])
        if plan is None and self.task.name not in PLANS:
            raise ValueError(f"no scripted expert for task {self.task.name!r}; available: {', '.join(PLANS)}")
        self.plan = plan or PLANS[self.task.name]
        self.yaw_jitter = min(yaw_jitter, self.plan.max_yaw_jitter)
        self.gain = gain
        keys = [
            "robot0_eef_pos",
            "robot0_eef_quat",
            "robot0_gripper_qpos",
            f"{self.plan.object_key}_pos",
            f"{self.plan.object_key}_quat",
        ]
        if self.plan.place_key:
            keys.append(f"{self.plan.place_key}_pos")
        self.obs_keys = tuple(keys)
        self.reset()

    def reset(self) -> None:
        self.phase = "approach"
        self.phase_steps = 0
        self.grasp_pos: np.ndarray | None = None
        self.grasp_yaw = 0.0
        self.start_yaw: float | None = None
        self.yaw_offset = self.rng.uniform(-self.yaw_jitter, self.yaw_jitter) if self.yaw_jitter else 0.0

    def _goto(self, phase: str) -> None:
        self.phase, self.phase_steps = phase, 0

    def _action(self, eef: np.ndarray, eef_yaw: float, target: np.ndarray, yaw: float, grip: float) -> np.ndarray:
        delta = np.clip(self.gain * (target - eef) / POS_SCALE, -1.0, 1.0)
        turn = np.clip(wrap(yaw - eef_yaw, 2 * np.pi) / ROT_SCALE, -1.0, 1.0)
        return np.array([*delta, 0.0, 0.0, turn, grip])

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        plan = self.plan
        eef = np.asarray(obs["robot0_eef_pos"], dtype=float)
        # The eef frame's x axis heading; fingers close along its y axis.
        x, y, z, w = obs["robot0_eef_quat"]
        eef_yaw = float(np.arctan2(2 * (x * y + w * z), 1 - 2 * (y * y + z * z)))
        obj = np.asarray(obs[f"{plan.object_key}_pos"], dtype=float)
        obj_yaw = yaw_of_quat_xyzw(np.asarray(obs[f"{plan.object_key}_quat"]))
        if plan.yaw_symmetry is None:
            if self.start_yaw is None:
                self.start_yaw = eef_yaw
            yaw_target = self.start_yaw
        else:
            yaw_target = eef_yaw + wrap(obj_yaw + self.yaw_offset - eef_yaw, plan.yaw_symmetry)
        self.phase_steps += 1
        state = _State(
            obs=obs,
            eef=eef,
            eef_yaw=eef_yaw,
            obj=obj,
            yaw_target=yaw_target,
            obj_yaw=obj_yaw,
            grasp_point=obj
            + [plan.grasp_offset * np.cos(obj_yaw), plan.grasp_offset * np.sin(obj_yaw), plan.grasp_height],
        )
        if self.phase in ("approach", "descend", "close", "lift"):
            return getattr(self, f"_{self.phase}")(state)
        return self._place(state)

    def _approach(self, s: _State) -> np.ndarray:
        target = s.grasp_point + [0.0, 0.0, self.plan.hover]
        err = target - s.eef
        if np.linalg.norm(err[:2]) < 0.01 and abs(err[2]) < 0.02 and abs(s.yaw_target - s.eef_yaw) < 0.08:
            self._goto("descend")
        return self._action(s.eef, s.eef_yaw, target, s.yaw_target, -1.0)

    def _descend(self, s: _State) -> np.ndarray:
        if np.linalg.norm(s.grasp_point - s.eef) < self.plan.grasp_tolerance or self.phase_steps > 40:
            self.grasp_pos, self.grasp_yaw = s.grasp_point.copy(), s.yaw_target
            self._goto("close")
        return self._action(s.eef, s.eef_yaw, s.grasp_point, s.yaw_target, -1.0)

    def _close(self, s: _State) -> np.ndarray:
        if self.phase_steps > 6:
            self._goto("lift")
        return self._action(s.eef, s.eef_yaw, self.grasp_pos, self.grasp_yaw, 1.0)

    def _lift(self, s: _State) -> np.ndarray:
        plan, eef = self.plan, s.eef
        target = self.grasp_pos + [0.0, 0.0, plan.lift]
        # A missed grasp shows as the object staying behind while the hand rises: try again.
        if eef[2] - s.obj[2] > 0.06:
            self._goto("approach")
            return self._action(eef, s.eef_yaw, eef + [0, 0, 0.02], s.eef_yaw, -1.0)
        if plan.place_xy is None and plan.place_key is None:
            return self._action(eef, s.eef_yaw, target, self.grasp_yaw, 1.0)
        if abs(target[2] - eef[2]) < 0.02:
            self._goto("carry")
        return self._action(eef, s.eef_yaw, target, self.grasp_yaw, 1.0)

    def _place(self, s: _State) -> np.ndarray:
        """carry → lower → release → retreat, for tasks that put the object somewhere."""
        eef, eef_yaw = s.eef, s.eef_yaw
        place = self._place_point(s.obs)
        carry_z = self.grasp_pos[2] + self.plan.lift
        yaw = self.grasp_yaw
        if self.plan.place_symmetry is not None:
            # Steer the held object: the hand moves by the object's remaining offset and turn.
            place = place.copy()
            place[:2] = eef[:2] + place[:2] - s.obj[:2]
            yaw = eef_yaw - wrap(s.obj_yaw, self.plan.place_symmetry)
        if self.phase == "carry":
            target = np.array([place[0], place[1], max(carry_z, place[2] + 0.05)])
            aligned = abs(yaw - eef_yaw) < 0.05 if self.plan.place_symmetry is not None else True
            if np.linalg.norm((target - eef)[:2]) < self.plan.place_tolerance and aligned:
                self._goto("lower")
            action = self._action(eef, eef_yaw, target, yaw, 1.0)
            action[:3] = np.clip(action[:3], -self.plan.carry_speed, self.plan.carry_speed)
            return action
        if self.phase == "lower":
            target = np.array([place[0], place[1], place[2]])
            if abs(target[2] - eef[2]) < 0.01 or self.phase_steps > self.plan.lower_steps:
                self._goto("release")
            action = self._action(eef, eef_yaw, target, yaw, 1.0)
            action[2] = max(action[2], -self.plan.lower_speed)
            return action
        if self.phase == "release":
            if self.phase_steps > 6:
                self._goto("retreat")
            return self._action(eef, eef_yaw, eef, yaw, -1.0)
        # retreat: move up and away so the task sees the object left in place
        return self._action(eef, eef_yaw, eef + [0.0, 0.0, 0.05], yaw, -1.0)

    def _place_point(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        plan = self.plan
        if plan.place_key is not None:
            base = np.asarray(obs[f"{plan.place_key}_pos"], dtype=float)
            return base + [0.0, 0.0, plan.place_height - plan.grasp_height]
        return np.array([plan.place_xy[0], plan.place_xy[1], self.task.table_top + plan.place_height])
