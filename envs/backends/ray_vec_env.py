"""`RayVecEnv`: SB3's VecEnv over Ray actors, one env per actor, stepped in lockstep as SubprocVecEnv steps its
processes, so an agent or bandit cannot tell the two apart.

Each actor builds its env inside itself (GL contexts never cross processes). After every call the actor returns the
env's snapshot (`snapshot[0]`, a JSON-able state such as FailureSearchEnv.search_state) beside the result; when an
actor dies, a new one is started, given the last snapshot (`snapshot[1]`) and the call is made again, so the
retried step runs the rollout the dead actor was running, with the same seed. After `restarts` deaths of one env's
actors the VecEnv gives up with `WorkerLost`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn
from stable_baselines3.common.vec_env.patch_gym import _patch_env

from envs.backends import DEFAULT_RETRIES, RayOptions, WorkerLost, init_worker
from envs.backends.ray_actors import connect, import_ray

log = logging.getLogger(__name__)


class EnvActor:
    """Holds one env; every method returns (result, snapshot)."""

    def __init__(self, env_fn: Callable[[], gym.Env], threads: int, snapshot: tuple[str, str] | None):
        init_worker(threads)
        self.env = _patch_env(env_fn())
        self.snapshot_method = snapshot[0] if snapshot else None

    def _snapshot(self) -> Any:
        return self.env.get_wrapper_attr(self.snapshot_method)() if self.snapshot_method else None

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        return self.env.observation_space, self.env.action_space

    def step(self, action: Any) -> tuple[tuple, Any]:
        """SubprocVecEnv's worker step: an episode that ends is reset at once, its last observation kept in info."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        done = terminated or truncated
        info["TimeLimit.truncated"] = truncated and not terminated
        reset_info: dict[str, Any] = {}
        if done:
            info["terminal_observation"] = observation
            observation, reset_info = self.env.reset()
        return (observation, reward, done, info, reset_info), self._snapshot()

    def reset(self, seed: int | None, options: dict | None) -> tuple[tuple, Any]:
        return self.env.reset(seed=seed, **({"options": options} if options else {})), self._snapshot()

    def call(self, name: str, args: tuple, kwargs: dict) -> tuple[Any, Any]:
        return self.env.get_wrapper_attr(name)(*args, **kwargs), self._snapshot()

    def get_attr(self, name: str) -> tuple[Any, Any]:
        return self.env.get_wrapper_attr(name), self._snapshot()

    def set_attr(self, name: str, value: Any) -> tuple[None, Any]:
        setattr(self.env, name, value)
        return None, self._snapshot()

    def is_wrapped(self, wrapper_class: type) -> tuple[bool, Any]:
        from stable_baselines3.common.env_util import is_wrapped

        return is_wrapped(self.env, wrapper_class), self._snapshot()

    def render(self) -> tuple[Any, Any]:
        return self.env.render(), self._snapshot()

    def close(self) -> None:
        self.env.close()


class RayVecEnv(VecEnv):
    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        options: RayOptions | None = None,
        *,
        snapshot: tuple[str, str] | None = None,
        restarts: int = DEFAULT_RETRIES,
    ):
        """`snapshot`: (method returning the env's state, method restoring it); without it a dead actor's env cannot
        be brought back and its death is `WorkerLost` at once."""
        self.options = options or RayOptions()
        self.started_cluster = connect(self.options, len(env_fns))
        ray = import_ray()
        self.ray, self.env_fns, self.snapshot, self.restarts = ray, list(env_fns), snapshot, restarts
        self.actor_class = ray.remote(num_cpus=self.options.num_cpus, max_restarts=0)(EnvActor)
        self.actors = [self._start(fn) for fn in self.env_fns]
        self.states: list[Any] = [None] * len(self.actors)
        self.deaths = [0] * len(self.actors)
        self.called = [False] * len(self.actors)
        self.closed = False
        observation_space, action_space = ray.get(self.actors[0].spaces.remote())
        super().__init__(len(env_fns), observation_space, action_space)
        self._actions: np.ndarray | None = None

    def _start(self, env_fn: Callable[[], gym.Env]):
        return self.actor_class.remote(env_fn, max(1, int(self.options.num_cpus)), self.snapshot)

    # ---------------------------------------------------------------------------------- calls that survive
    def _calls(self, indices: list[int], method: str, args_of: Callable[[int], tuple]) -> list[Any]:
        """`method(*args_of(i))` on every actor of `indices` at once; an actor that died is replaced, restored and
        called again. Returns the results in the order of `indices`."""
        refs = {i: getattr(self.actors[i], method).remote(*args_of(i)) for i in indices}
        results: dict[int, Any] = {}
        while refs:
            for i, ref in list(refs.items()):
                try:
                    results[i], self.states[i] = self.ray.get(ref)
                    self.called[i] = True
                    del refs[i]
                except self.ray.exceptions.RayActorError as exc:
                    self._replace(i, exc)
                    refs[i] = getattr(self.actors[i], method).remote(*args_of(i))
        return [results[i] for i in indices]

    def _replace(self, index: int, exc: BaseException) -> None:
        """A new actor in place of a dead one, restored to the dead one's last snapshot."""
        self.deaths[index] += 1
        unrestorable = self.called[index] and self.snapshot is None
        if self.deaths[index] > self.restarts or unrestorable:
            raise WorkerLost(f"rollout worker {index} died {self.deaths[index]} times ({type(exc).__name__})")
        log.warning(
            "rollout worker %d died (%s); restarting it where it stood and running its rollout again",
            index,
            type(exc).__name__,
        )
        self.ray.kill(self.actors[index], no_restart=True)
        self.actors[index] = self._start(self.env_fns[index])
        if self.snapshot is None or self.states[index] is None:
            return
        try:
            restore = self.actors[index].call.remote(self.snapshot[1], (self.states[index],), {})
            _, self.states[index] = self.ray.get(restore)
        except self.ray.exceptions.RayActorError as again:
            self._replace(index, again)

    # ------------------------------------------------------------------------------------------- VecEnv
    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        actions, self._actions = self._actions, None
        results = self._calls(list(range(self.num_envs)), "step", lambda i: (actions[i],))
        observations, rewards, dones, infos, self.reset_infos = zip(*results, strict=True)
        return self._stack(observations), np.stack(rewards), np.stack(dones), list(infos)

    def reset(self) -> VecEnvObs:
        results = self._calls(list(range(self.num_envs)), "reset", lambda i: (self._seeds[i], self._options[i]))
        observations, self.reset_infos = zip(*results, strict=True)
        self._reset_seeds()
        self._reset_options()
        return self._stack(observations)

    def _stack(self, observations: Sequence[Any]) -> VecEnvObs:
        if isinstance(self.observation_space, gym.spaces.Dict):
            return {key: np.stack([o[key] for o in observations]) for key in self.observation_space.spaces}
        return np.stack(observations)

    def close(self) -> None:
        if self.closed:
            return
        for actor in self.actors:
            try:
                self.ray.get(actor.close.remote(), timeout=10)
            except Exception:  # noqa: S110 - a dead or stuck actor is killed below all the same
                pass
            self.ray.kill(actor, no_restart=True)
        self.closed = True
        if self.started_cluster:
            self.ray.shutdown()

    def get_images(self) -> Sequence[np.ndarray | None]:
        return self._calls(list(range(self.num_envs)), "render", lambda i: ())

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._calls(list(self._get_indices(indices)), "get_attr", lambda i: (attr_name,))

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._calls(list(self._get_indices(indices)), "set_attr", lambda i: (attr_name, value))

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        return self._calls(
            list(self._get_indices(indices)), "call", lambda i: (method_name, method_args, method_kwargs)
        )

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return self._calls(list(self._get_indices(indices)), "is_wrapped", lambda i: (wrapper_class,))
