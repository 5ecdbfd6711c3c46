"""`FailureSearchEnv`: RoboMD's failure search as a Gymnasium env (Algorithm 1).

One step = one rollout of the policy under test: the chosen perturbation joins the perturbations already applied,
the policy runs a full episode under all of them (with the runtime monitor watching, if one is given), and the
reward says whether it failed. While the policy keeps succeeding the perturbations accumulate (up to `max_depth`);
a failure ends the search episode. The observation is the policy camera's first frame of the scene as it stands,
so a search policy conditioned on the nominal frame ranks single perturbations.

Unlike RoboMD's own env, every rollout starts from an exact restore of the nominal model and resets the policy
(`envs.rollout.Runner` does both), and the action space is the task's whole perturbation set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from envs.choices import check_choice
from envs.perturbations import Perturbation, resolve, task_perturbations
from envs.rollout import Episode, Runner
from envs.tasks import TaskSpec, get_task
from monitor.base import Monitor, summarize
from policies.base import Policy
from policies.registry import default_policy, load_policy

OUTCOME_SOURCES = ("sim", "monitor", "both")


@dataclass(frozen=True)
class SearchRewards:
    """RoboMD's reward: `c_fail` on failure, `-c_success * t / horizon` on success (t = rollout length)."""

    c_fail: float = 1.0
    c_success: float = 1.0
    repeat_penalty: float = 0.1
    """Subtracted when the chosen perturbation is already applied (the rollout runs with the set unchanged)."""

    def __call__(self, failed: bool, length: int, horizon: int, repeated: bool) -> float:
        reward = self.c_fail if failed else -self.c_success * length / horizon
        return reward - (self.repeat_penalty if repeated else 0.0)


def conflict_key(p: Perturbation) -> tuple[str, int, str]:
    """Perturbations with the same key overwrite each other in the scene (a cube cannot be red and blue):
    choosing one replaces the other in the accumulated set, so the set always says what the scene shows."""
    return p.family, p.target, p.timing_kind


MOTION_M = 0.01
"""End-effector travel (m) from its start after which the robot has acted: a failure verdict before it is a
prediction from the scene, not the detection of something the robot did."""


def first_motion(episode: Episode, key: str = "robot0_eef_pos") -> int:
    """First step at which the end effector is more than MOTION_M from where it started (the episode's length if
    it never moves, 0 if the episode does not record its position)."""
    if key not in episode.observations or episode.length == 0:
        return 0
    positions = episode.observations[key]
    moved = np.linalg.norm(positions - positions[0], axis=1) > MOTION_M
    return int(np.argmax(moved)) if moved.any() else episode.length


def load_search_policy(policy: Policy | Callable[[], Policy] | str | None, task: TaskSpec) -> Policy:
    if isinstance(policy, Policy):
        return policy
    if policy is None or isinstance(policy, str):
        return load_policy(policy or default_policy(task), task)[0]
    return policy()


class FailureSearchEnv(gym.Env):
    """Discrete failure search over a task's perturbations; see the module docstring.

    `info` of every step carries the rollout: outcome, length, perturbations, seed, the monitor's summary, and the
    `Episode` itself under "rollout" (frames included when `record_frames`), which the search writes to its failure
    dataset.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        task: str | TaskSpec = "lift",
        *,
        policy: Policy | Callable[[], Policy] | str | None = None,
        perturbations: Sequence[str] | None = None,
        monitor: Monitor | Callable[[], Monitor] | None = None,
        outcome: str = "sim",
        max_depth: int = 1,
        rewards: SearchRewards = SearchRewards(),
        observe_applied: bool = False,
        record_frames: bool = True,
        render_mode: str | None = "rgb_array",
    ):
        """`policy`: a Policy, a factory, a name or path (policies.registry), or None for the task's shipped one.
        `policy`/`monitor` may be factories, so that vectorised workers build their own (GL, torch threads).

        `perturbations`: names from the task's set (default: all of them) — the action space, in this order.
        `outcome`: 'sim' rewards the simulator's success check; 'monitor' the monitor's failure verdict (tasks
        without a success check); 'both' records both and rewards the simulator's.
        `observe_applied`: observations become {"image", "applied"} with a 0/1 mask of the applied perturbations.
        """
        self.task = get_task(task)
        check_choice(outcome, OUTCOME_SOURCES, "outcome")
        if outcome != "sim" and monitor is None:
            raise ValueError(f"outcome={outcome!r} needs a monitor")
        if max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {max_depth}")
        names = list(task_perturbations(self.task)) if perturbations is None else list(perturbations)
        if not names:
            raise ValueError("the search needs at least one perturbation")
        self.candidates: list[Perturbation] = resolve(self.task, names)
        self.policy = load_search_policy(policy, self.task)
        self.monitor = monitor if monitor is None or isinstance(monitor, Monitor) else monitor()
        self.outcome_source, self.max_depth, self.rewards = outcome, max_depth, rewards
        self.observe_applied, self.record_frames = observe_applied, record_frames
        self.render_mode = render_mode
        self.runner = Runner(self.task)

        size = self.task.image_size
        image = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.observation_space = (
            gym.spaces.Dict({"image": image, "applied": gym.spaces.MultiBinary(len(self.candidates))})
            if observe_applied
            else image
        )
        self.action_space = gym.spaces.Discrete(len(self.candidates))
        self.applied: list[Perturbation] = []
        self._next_seed = 0
        self._frame: np.ndarray | None = None

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.candidates]

    # ------------------------------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.applied = []
        return self._observe(), {}

    def step(self, action: int):
        chosen = self.candidates[int(action)]
        repeated = chosen in self.applied
        if not repeated:
            self.applied = [p for p in self.applied if conflict_key(p) != conflict_key(chosen)] + [chosen]
        episode = self.rollout(self.applied, self._next_seed)
        failed, info = self._judge(episode)
        reward = self.rewards(failed, episode.length, self.task.horizon, repeated)
        info.update(action=int(action), repeated=repeated, depth=len(self.applied))
        terminated = failed or episode.outcome == "sim_error"
        truncated = not terminated and len(self.applied) >= self.max_depth
        if terminated or truncated:
            self.applied = []
        return self._observe(), float(reward), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """The first frame of the next rollout's scene."""
        return self._frame if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        self.runner.close()

    # ---------------------------------------------------------------------------------------- internals
    def rollout(self, perturbations: Sequence[Perturbation], seed: int) -> Episode:
        return self.runner.run(self.policy, perturbations, seed=seed, monitor=self.monitor, record=self.record_frames)

    def _judge(self, episode: Episode) -> tuple[bool, dict[str, Any]]:
        """Whether the rollout counts as a failure, and the info the search records about it."""
        sim_failed = episode.outcome == "failure"
        summary = summarize(episode.monitor_outputs, first_motion(episode)) if self.monitor is not None else None
        monitor_failed = summary.failure if summary is not None else None
        failed = monitor_failed if self.outcome_source == "monitor" else sim_failed
        info = {
            "outcome": episode.outcome,
            "length": episode.length,
            "seed": episode.seed,
            "perturbations": list(episode.perturbations),
            "sim_failure": sim_failed,
            "monitor": summary.to_dict() if summary is not None else None,
            "failed": bool(failed),
            "rollout": episode,
        }
        return bool(failed), info

    def first_frame(self, perturbations: Sequence[Perturbation], seed: int) -> np.ndarray:
        """The policy camera's view of the scene at the start of an episode (reset-time perturbations applied)."""
        return self.runner.first_frame(perturbations, seed)

    def nominal_frames(self, seeds: Sequence[int]) -> np.ndarray:
        """First frames of unperturbed episodes: where the search policy's ranking is read off."""
        return np.stack([self.first_frame([], s) for s in seeds])

    def search_state(self) -> dict[str, Any]:
        """Where this env stands between rollouts (JSON-able): the applied set, the next rollout's seed and the
        generator that draws the seeds after it. A resumed search restores it, so its rollouts are those an
        uninterrupted search would have run."""
        return {
            "applied": [p.name for p in self.applied],
            "next_seed": self._next_seed,
            "rng": self.np_random.bit_generator.state,
        }

    def restore_search_state(self, state: dict[str, Any]) -> None:
        by_name = {p.name: p for p in self.candidates}
        unknown = [n for n in state["applied"] if n not in by_name]
        if unknown:
            raise ValueError(f"the saved search state applies {unknown}, which are not among this env's candidates")
        self.applied = [by_name[n] for n in state["applied"]]
        self.np_random.bit_generator.state = state["rng"]
        self._next_seed = int(state["next_seed"])
        self._frame = self.first_frame(self.applied, self._next_seed)

    def model_xml(self) -> str:
        """The MuJoCo model every rollout starts from (stored with each rollout so it can be replayed)."""
        return self.runner.scene.env.sim.model.get_xml()

    def _observe(self):
        self._next_seed = int(self.np_random.integers(2**31 - 1))
        self._frame = self.first_frame(self.applied, self._next_seed)
        if not self.observe_applied:
            return self._frame
        applied = np.zeros(len(self.candidates), dtype=np.int8)
        for p in self.applied:
            applied[self.candidates.index(p)] = 1
        return {"image": self._frame, "applied": applied}
