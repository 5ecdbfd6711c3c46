"""One function that runs a policy in a (perturbed) task and returns an `Episode`.

A `Runner` keeps one Scene (and renderer) per task alive across episodes: building a robosuite env costs about a
second, an episode of Lift a few. `rollout()` uses a per-process runner for each task.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

import numpy as np

from envs.perturbations import Perturbation, get_perturbations, validate_composition
from envs.render import CameraRenderer, RenderConfig
from envs.scene import Scene, SimulationError
from envs.tasks import TaskSpec, get_task
from policies.base import Policy, image_key

OUTCOMES = ("success", "failure", "sim_error")


class FrameMonitor(Protocol):
    """A runtime monitor: reset per episode, one output per camera frame."""

    def reset(self) -> None: ...

    def step(self, frame: np.ndarray) -> Any: ...


@dataclass
class Episode:
    """Everything one rollout produced. Per-step arrays have one row per control step, taken before its action."""

    task: str
    seed: int
    perturbations: tuple[str, ...]
    outcome: str
    """'success', 'failure' (horizon reached or object lost) or 'sim_error'."""
    length: int
    failure_step: int | None
    """The step where an unrecoverable failure was seen (object off the table, sim error), if any."""
    actions: np.ndarray
    states: np.ndarray
    """robomimic-style flattened MuJoCo states, for replay."""
    observations: dict[str, np.ndarray]
    """Low-dimensional observations by key, stacked over steps."""
    frames: np.ndarray | None = None
    """Camera frames (T, H, W, 3) uint8 upright, when recorded."""
    monitor_outputs: list[Any] = field(default_factory=list)
    error: str | None = None
    wall_time: float = 0.0

    @property
    def success(self) -> bool:
        return self.outcome == "success"


class Runner:
    """Runs episodes of one task; owns the Scene and the renderer."""

    def __init__(self, task: str | TaskSpec, render_config: RenderConfig = RenderConfig()):
        self.task = get_task(task)
        self.scene = Scene(self.task)
        self.renderer = CameraRenderer(self.scene.model, self.task.camera, self.task.image_size, config=render_config)
        self.image_key = image_key(self.task.camera)

    def run(
        self,
        policy: Policy,
        perturbations: Sequence[Perturbation] = (),
        seed: int = 0,
        monitor: FrameMonitor | None = None,
        record: bool = False,
    ) -> Episode:
        """One episode; `record=True` keeps the camera frames."""
        started = time.perf_counter()
        validate_composition(self.task, perturbations)
        scene, rng = self.scene, np.random.default_rng([seed, 7919])
        at_reset = [p for p in perturbations if p.at_step is None]
        events = {}
        for p in perturbations:
            if p.at_step is not None:
                events.setdefault(p.at_step, []).append(p)
        needs_frames = record or monitor is not None or self.image_key in policy.obs_keys

        scene.reset(seed)
        for p in at_reset:
            p.apply(scene, rng)
        obs = scene.observe()
        policy.reset()
        if monitor is not None:
            monitor.reset()

        actions, states, lowdim, frames, monitor_outputs = [], [], [], [], []
        outcome, failure_step, error = "failure", None, None
        for t in range(self.task.horizon):
            for p in events.get(t, ()):
                p.apply(scene, rng)
            if t in events:
                obs = scene.observe()
            if needs_frames:
                obs[self.image_key] = self.renderer.render(scene.data)
            for p in perturbations:
                obs = p.observe(obs, t, rng)
            states.append(scene.get_state())
            lowdim.append({k: v for k, v in obs.items() if k != self.image_key})
            if needs_frames:
                frame = obs[self.image_key]
                if record:
                    frames.append(frame)
                if monitor is not None:
                    monitor_outputs.append(monitor.step(frame))
            action = np.asarray(policy.act(obs), dtype=float)
            for p in perturbations:
                action = p.act(action, t, rng)
            actions.append(action)
            try:
                obs = scene.step(action)
            except SimulationError as exc:
                outcome, failure_step, error = "sim_error", t + 1, str(exc)
                break
            if scene.is_success():
                outcome = "success"
                break
            if scene.object_off_table():
                failure_step = t + 1
                break

        return Episode(
            task=self.task.name,
            seed=seed,
            perturbations=tuple(p.name for p in perturbations),
            outcome=outcome,
            length=len(actions),
            failure_step=failure_step,
            actions=np.asarray(actions),
            states=np.asarray(states),
            observations={k: np.stack([step[k] for step in lowdim]) for k in lowdim[0]},
            frames=np.stack(frames) if frames else None,
            monitor_outputs=monitor_outputs,
            error=error,
            wall_time=time.perf_counter() - started,
        )

    def close(self) -> None:
        self.renderer.close()
        self.scene.close()


@lru_cache(maxsize=None)
def get_runner(task: str) -> Runner:
    """This process's runner for a task (renderers are per process: never share one across a fork)."""
    return Runner(task)


def rollout(
    task: str | TaskSpec,
    policy: Policy,
    perturbations: Sequence[Perturbation | str] = (),
    seed: int = 0,
    monitor: FrameMonitor | None = None,
    record: bool = False,
) -> Episode:
    """Runs `policy` for one episode of `task` under `perturbations` (objects or names)."""
    spec = get_task(task)
    names = [p for p in perturbations if isinstance(p, str)]
    resolved = iter(get_perturbations(spec, names)) if names else iter(())
    chosen = [next(resolved) if isinstance(p, str) else p for p in perturbations]
    return get_runner(spec.name).run(policy, chosen, seed=seed, monitor=monitor, record=record)
