"""The search's rollout workers: one `FailureSearchEnv` per process or Ray actor, built inside it, and their
orderly end.

Each worker builds its own policy, monitor and renderer (a GL context must never cross a fork). Workers step in
lockstep (SB3's SubprocVecEnv, or envs.backends.ray_vec_env.RayVecEnv for backend=ray), so results arrive in worker
order whatever finishes first, and every worker's state between rollouts can be saved and restored
(`worker_states`), which is what makes a resumed search identical to an uninterrupted one, and lets a Ray actor
that died be replaced in the middle of a search.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor

from diagnosis.search_env import FailureSearchEnv, SearchRewards
from envs.backends import BACKENDS, RayOptions, WorkerLost
from envs.choices import check_choice
from envs.perturbations import Perturbation
from envs.tasks import TaskSpec
from monitor.base import Monitor

WORKER_LOST = (EOFError, BrokenPipeError, ConnectionError, WorkerLost)
"""What reading from or writing to a worker raises once its process has died (killed, out of memory, crashed), and
what RayVecEnv raises once an actor cannot be brought back."""
SNAPSHOT = ("search_state", "restore_search_state")
"""FailureSearchEnv's state between rollouts: what a replaced Ray actor is restored to."""


@dataclass(frozen=True)
class EnvSpec:
    """Everything a worker needs to build its own search env (picklable: workers build policy and monitor)."""

    task: TaskSpec
    policy: str
    candidates: tuple[Perturbation, ...]
    monitor: Callable[[], Monitor] | None
    outcome: str
    max_depth: int
    rewards: SearchRewards
    observe_applied: bool


def make_env(spec: EnvSpec, in_worker: bool) -> FailureSearchEnv:
    """Builds a search env; inside a worker process Ctrl-C is left to the parent and torch gets one thread."""
    from policies.registry import load_policy

    if in_worker:
        import torch

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        torch.set_num_threads(1)
    policy, _ = load_policy(spec.policy, spec.task)
    return FailureSearchEnv(
        spec.task,
        policy=policy,
        perturbations=list(spec.candidates),
        monitor=spec.monitor,
        outcome=spec.outcome,
        max_depth=spec.max_depth,
        rewards=spec.rewards,
        observe_applied=spec.observe_applied,
    )


def make_vec_env(spec: EnvSpec, n_envs: int, backend: str = "processes", ray: RayOptions | None = None) -> VecEnv:
    """`n_envs` workers (processes: 1 runs in this process; ray: always actors); VecMonitor adds search-episode
    returns to the agent's logs."""
    check_choice(backend, BACKENDS, "backend")
    if backend == "ray":
        from envs.backends.ray_vec_env import RayVecEnv

        return VecMonitor(RayVecEnv([partial(make_env, spec, True)] * n_envs, ray, snapshot=SNAPSHOT))
    if n_envs == 1:
        return VecMonitor(DummyVecEnv([partial(make_env, spec, False)]))
    # forkserver: workers start from a clean process, never inheriting a GL context or torch threads.
    return VecMonitor(SubprocVecEnv([partial(make_env, spec, True)] * n_envs, start_method="forkserver"))


def worker_states(envs: VecEnv) -> list[dict[str, Any]]:
    """Each worker's `FailureSearchEnv.search_state()`, in worker order."""
    return envs.env_method("search_state")


def restore_worker_states(envs: VecEnv, states: list[dict[str, Any]]) -> None:
    if len(states) != envs.num_envs:
        raise ValueError(f"the checkpoint holds {len(states)} worker states, the search has {envs.num_envs} workers")
    for index, state in enumerate(states):
        envs.env_method("restore_search_state", state, indices=[index])


def close_workers(envs: VecEnv, timeout_s: float = 10.0) -> None:
    """Closes the workers without waiting for a result: SubprocVecEnv.close() reads the pending result of every
    worker it believes busy, which hangs on a worker whose result was already read (a step interrupted halfway)
    and fails on one that died. Workers that do not exit within `timeout_s` are terminated."""
    base = envs.unwrapped
    if not isinstance(base, SubprocVecEnv):
        envs.close()
        return
    if base.closed:
        return
    for remote in base.remotes:
        with contextlib.suppress(*WORKER_LOST):
            remote.send(("close", None))
    for process in base.processes:
        process.join(timeout_s)
        if process.is_alive():
            process.terminate()
            process.join(timeout_s)
    base.closed = True
