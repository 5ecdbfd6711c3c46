"""One function that runs a policy in a (perturbed) task and returns an `Episode`.

A `Runner` keeps one Scene (and renderer) per task alive across episodes: building a robosuite env costs about a
second, an episode of Lift a few. `rollout()` uses a per-process runner for each task.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from envs.perturbations import Perturbation, resolve, validate_composition
from envs.receipts import applied, check_effect, pixel_change
from envs.records import values_equal
from envs.render import CameraRenderer, RenderConfig
from envs.scene import EDITABLE_FIELDS, Scene, SimulationError
from envs.tasks import TaskSpec, get_task
from policies.base import Policy, image_key

OUTCOMES = ("success", "failure", "sim_error")


class FrameMonitor(Protocol):
    """A runtime monitor: reset per episode, one output per camera frame."""

    def reset(self) -> None: ...

    def step(self, frame: np.ndarray) -> Any: ...


@dataclass(eq=False)
class Episode:
    """Everything one rollout produced. Per-step arrays have one row per control step, taken before its action.

    Equal episodes have equal values (arrays compared element-wise); wall time does not count."""

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
    receipts: tuple[dict[str, Any], ...] = ()
    """What each perturbation changed when it acted (envs/receipts.py)."""
    error: str | None = None
    wall_time: float = field(default=0.0, compare=False)

    @property
    def success(self) -> bool:
        return self.outcome == "success"

    def __eq__(self, other: object) -> bool:
        return values_equal(self, other)


class PerturbedEpisode:
    """One perturbed episode, step by step: the single implementation behind `rollout()` and `PerturbedTask`.

    Order within a control step t: events scheduled at t fire, the observation is taken (camera frame rendered
    if wanted, observation filters applied), the policy acts, action filters apply, physics steps.
    """

    def __init__(
        self,
        scene: Scene,
        renderer: CameraRenderer | None,
        perturbations: Sequence[Perturbation],
        seed: int,
    ):
        """`renderer=None` skips camera frames (for policies that read only state)."""
        validate_composition(scene.task, perturbations)
        self.scene, self.renderer = scene, renderer
        self.perturbations = tuple(perturbations)
        self.seed = seed
        self.image_key = image_key(scene.task.camera)
        self.rng = np.random.default_rng([seed, 7919])
        self.events: dict[int, list[Perturbation]] = {}
        for p in self.perturbations:
            if p.at_step is not None:
                self.events.setdefault(p.at_step, []).append(p)
        self.moving = any(p.acts_during for p in self.perturbations)
        """Whether a perturbation edits the scene before every frame (`Perturbation.during`)."""
        self.receipts: list[dict[str, Any]] = []
        """What each perturbation changed when it acted (envs/receipts.py), in the order they acted."""
        self.t = 0
        self.outcome: str | None = None
        self.failure_step: int | None = None
        self.error: str | None = None

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def start(self) -> dict[str, np.ndarray]:
        """Seeded nominal reset, then the reset-time perturbations; returns the first observation. A reset-time
        perturbation that changes nothing is a ValueError (envs/receipts.py)."""
        self.scene.reset(self.seed)
        at_reset = [p for p in self.perturbations if p.at_step is None]
        before = self.renderer.render(self.scene.data) if self.renderer is not None and at_reset else None
        for p in at_reset:
            receipt = self._apply(p)
            check_effect(receipt, self.scene.task.name)
            if before is not None:  # each perturbation's own share of the change from the nominal first frame
                self.scene.forward()
                after = self.renderer.render(self.scene.data)
                receipt["pixels"] = pixel_change(before, after)
                before = after
        if self.moving:
            self.scene.mark_episode_start()
        return self._observe(self.scene.observe())

    def _apply(self, perturbation: Perturbation) -> dict[str, Any]:
        receipt = applied(self.scene, perturbation, lambda: perturbation.apply(self.scene, self.rng), EDITABLE_FIELDS)
        receipt["step"] = perturbation.at_step
        self.receipts.append(receipt)
        return receipt

    def _observe(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        fired = self.t in self.events
        if fired:
            for p in self.events[self.t]:
                self._apply(p)
        moving = self.moving
        if moving:
            for i, p in enumerate(self.perturbations):
                became = p.during(self.scene, self.t, self.rng)
                if became is not None:  # a state-triggered event fires now, as the step event it turns into
                    self.perturbations = (*self.perturbations[:i], became, *self.perturbations[i + 1 :])
                    self._apply(became).update(triggered=True, triggered_at=self.t)
                    self.moving = any(q.acts_during for q in self.perturbations)
                    fired = True
        if fired:  # the state changed: what the policy observes changes with it
            obs = self.scene.observe()
        elif moving:  # only the scenery moved: bring the rendered poses up to date, the observations stand
            self.scene.forward()
        if self.renderer is not None:
            obs[self.image_key] = self.renderer.render(self.scene.data)
        for p in self.perturbations:
            obs = p.observe(obs, self.t, self.rng)
        return obs

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Executes one action; returns the next observation and the action actually executed."""
        if self.done:
            raise RuntimeError("episode is over; start a new one")
        executed = np.asarray(action, dtype=float)
        for p in self.perturbations:
            executed = p.act(executed, self.t, self.rng)
        try:
            obs = self.scene.step(executed)
        except SimulationError as exc:
            self.t += 1
            self.outcome, self.failure_step, self.error = "sim_error", self.t, str(exc)
            return {}, executed
        self.t += 1
        if self.scene.is_success():
            self.outcome = "success"
        elif self.scene.object_off_table():
            self.outcome, self.failure_step = "failure", self.t
        elif self.t >= self.scene.task.horizon:
            self.outcome = "failure"
        return self._observe(obs), executed


class Runner:
    """Runs episodes of one task; owns the Scene and the renderer."""

    def __init__(self, task: str | TaskSpec, render_config: RenderConfig = RenderConfig()):
        self.task = get_task(task)
        self.scene = Scene(self.task)
        self.render_config = render_config
        self.image_key = image_key(self.task.camera)
        self._renderer: CameraRenderer | None = None

    @property
    def renderer(self) -> CameraRenderer:
        """Created on first use, so that building a Runner opens no GL context (safe before forking workers)."""
        if self._renderer is None:
            self._renderer = CameraRenderer(
                self.scene.model, self.task.camera, self.task.image_size, config=self.render_config
            )
        return self._renderer

    def episode(self, perturbations: Sequence[Perturbation], seed: int, render_frames: bool) -> PerturbedEpisode:
        return PerturbedEpisode(self.scene, self.renderer if render_frames else None, perturbations, seed)

    def first_frame(self, perturbations: Sequence[Perturbation], seed: int) -> np.ndarray:
        """The policy camera's view at the start of an episode (reset-time perturbations applied), no rollout."""
        return self.episode(perturbations, seed, render_frames=True).start()[self.image_key]

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
        needs_frames = record or monitor is not None or self.image_key in policy.obs_keys
        episode = self.episode(perturbations, seed, needs_frames)
        obs = episode.start()
        policy.reset()
        if monitor is not None:
            monitor.reset()
        actions, states, lowdim, frames, monitor_outputs = [], [], [], [], []
        while not episode.done:
            states.append(self.scene.get_state())
            lowdim.append({k: v for k, v in obs.items() if k != self.image_key})
            if needs_frames:
                frame = obs[self.image_key]
                if record:
                    frames.append(frame)
                if monitor is not None:
                    monitor_outputs.append(monitor.step(frame))
            obs, executed = episode.step(policy.act(obs))
            actions.append(executed)

        return Episode(
            task=self.task.name,
            seed=seed,
            perturbations=tuple(p.name for p in perturbations),
            outcome=episode.outcome,
            length=len(actions),
            failure_step=episode.failure_step,
            actions=np.asarray(actions),
            states=np.asarray(states),
            observations={k: np.stack([step[k] for step in lowdim]) for k in lowdim[0]},
            frames=np.stack(frames) if frames else None,
            monitor_outputs=monitor_outputs,
            receipts=tuple(episode.receipts),
            error=episode.error,
            wall_time=time.perf_counter() - started,
        )

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
        self.scene.close()


_RUNNERS: dict[str, Runner] = {}


def get_runner(task: str | TaskSpec) -> Runner:
    """This process's runner for a task (renderers are per process: never share one across a fork).

    A spec that differs from the registered one (e.g. another horizon) gets a runner of its own: the scene is
    built from the spec, so reusing the registered task's runner would silently ignore the change."""
    spec = get_task(task)
    key = repr(spec)  # every field, so two specs share a runner only when they are equal
    if key not in _RUNNERS:
        _RUNNERS[key] = Runner(spec)
    return _RUNNERS[key]


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
    chosen = resolve(spec, perturbations)
    return get_runner(spec).run(policy, chosen, seed=seed, monitor=monitor, record=record)
