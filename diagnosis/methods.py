"""Search methods behind one interface: RL agents (stable-baselines3 PPO, A2C) and the bandit baselines.

Every method drives the same vectorised `FailureSearchEnv`, so all of them produce the same rollouts, datasets and
reports; they differ in how they choose the next perturbation and in how they read a ranking off what they learned.
`on_step(actions, infos) -> bool` is called after every vectorised step with the finished rollouts; returning
False stops the search (budget spent or interrupted). `on_safe_point()` is called whenever the method's whole state
can be saved so that a resumed search continues exactly as an uninterrupted one would: bandits after every step, RL
agents between a policy update and the next rollout collection (a half-filled rollout buffer is not saved).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from diagnosis.allocations import BANDITS
from diagnosis.bandits import Bandit
from envs.choices import check_choice, unknown_choice

StepHook = Callable[[np.ndarray, list[dict[str, Any]]], bool]
SafePointHook = Callable[[], None]

RL_ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C}
METHODS = (*RL_ALGORITHMS, *BANDITS)


class SearchMethod:
    """How a search chooses perturbations and ranks them; see the module docstring."""

    name: str
    max_depth: int | None = None
    """A depth the method requires (bandits try one perturbation at a time); None: the configured one."""

    def run(self, envs: VecEnv, rollouts: int, on_step: StepHook, on_safe_point: SafePointHook) -> None:
        """Runs `rollouts` more rollouts; a fresh search resets `envs` first, a resumed one (after `load`) does not,
        since its workers' states were restored."""
        raise NotImplementedError

    def scores(self, nominal_observations: Any) -> np.ndarray:
        """Failure score per perturbation (higher = fails more)."""
        raise NotImplementedError

    stops_itself = False
    """Whether the method can tell when its answer is settled (what `search.stop=auto` needs)."""

    def settled(self) -> bool:
        """Whether the search may stop before its budget is spent (methods with `stops_itself` only)."""
        return False

    def answer(self) -> str:
        """What `settled` means, in words."""
        return ""

    def report(self) -> dict[str, Any]:
        """What the method found beyond the ranking, as summary.json keys."""
        return {}

    def save(self, directory: Path) -> None:
        """Writes the state `load` needs into `directory` (called at safe points only)."""
        raise NotImplementedError

    def load(self, directory: Path, envs: VecEnv) -> None:
        raise NotImplementedError


class _StepCallback(BaseCallback):
    def __init__(self, on_step: StepHook, on_safe_point: SafePointHook):
        super().__init__()
        self.hook, self.safe_point = on_step, on_safe_point

    def _on_rollout_start(self) -> None:
        # The previous update is done and the new buffer is empty: nothing is lost by saving here.
        self.safe_point()

    def _on_step(self) -> bool:
        return self.hook(np.asarray(self.locals["actions"]), list(self.locals["infos"]))


def _rng_states() -> dict[str, Any]:
    """The global RNG streams an SB3 agent draws from: torch (action sampling), numpy (minibatch order)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state().numpy().tolist(),
        "numpy": [kind, keys.tolist(), position, has_gauss, cached],
    }


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(torch.tensor(states["torch"], dtype=torch.uint8))
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))


class RLSearch(SearchMethod):
    """An SB3 actor-critic on the search env. Its ranking is RoboMD's: the softmax of the policy's logits on the
    first frame of nominal scenes, averaged over a few initial states."""

    def __init__(
        self, *, name: str, envs: VecEnv, hyperparameters: Mapping[str, Any], seed: int, tensorboard: Path | None
    ):
        check_choice(name, RL_ALGORITHMS, "RL method")
        self.name = name
        params = dict(hyperparameters)
        net_arch = list(params.pop("net_arch"))
        n_steps = int(params.pop("n_steps"))
        if name == "ppo":
            # PPO's minibatch must fit in one update's worth of rollouts.
            params["batch_size"] = min(int(params["batch_size"]), n_steps * envs.num_envs)
        policy = "MultiInputPolicy" if isinstance(envs.observation_space, spaces.Dict) else "CnnPolicy"
        self.agent = RL_ALGORITHMS[name](
            policy,
            envs,
            n_steps=n_steps,
            seed=seed,
            verbose=0,
            device="cpu",
            tensorboard_log=str(tensorboard) if tensorboard else None,
            policy_kwargs={"net_arch": {"pi": net_arch, "vf": net_arch}},
            **params,
        )

    def run(self, envs: VecEnv, rollouts: int, on_step: StepHook, on_safe_point: SafePointHook) -> None:
        self.agent.learn(
            total_timesteps=rollouts,
            callback=_StepCallback(on_step, on_safe_point),
            reset_num_timesteps=False,
            tb_log_name=self.name,
        )

    @torch.no_grad()
    def scores(self, nominal_observations: Any) -> np.ndarray:
        obs, _ = self.agent.policy.obs_to_tensor(nominal_observations)
        probs = self.agent.policy.get_distribution(obs).distribution.probs
        return probs.mean(dim=0).cpu().numpy().astype(float)

    def save(self, directory: Path) -> None:
        """The agent (weights, optimiser), the observation it acts on next and the RNG streams: SB3's own save
        keeps neither of the last two, and without them a resumed search would diverge from an uninterrupted one."""
        self.agent.save(directory / f"{self.name}.zip")
        observation = self.agent._last_obs
        arrays = observation if isinstance(observation, dict) else {"obs": observation}
        np.savez(directory / "agent.npz", episode_starts=self.agent._last_episode_starts, **arrays)
        (directory / "rng.json").write_text(json.dumps(_rng_states()))

    def load(self, directory: Path, envs: VecEnv) -> None:
        self.agent = RL_ALGORITHMS[self.name].load(
            directory / f"{self.name}.zip", env=envs, device="cpu", tensorboard_log=self.agent.tensorboard_log
        )
        with np.load(directory / "agent.npz", allow_pickle=False) as arrays:
            stored = {key: arrays[key] for key in arrays.files}
        self.agent._last_episode_starts = stored.pop("episode_starts")
        # Set, so that learn() continues from this observation instead of resetting the workers.
        self.agent._last_obs = stored["obs"] if set(stored) == {"obs"} else stored
        _set_rng_states(json.loads((directory / "rng.json").read_text()))


class BanditSearch(SearchMethod):
    """One perturbation per rollout, on the nominal scene; ranks by the posterior mean failure rate."""

    max_depth = 1

    def __init__(self, name: str, arms: int, seed: int, hyperparameters: Mapping[str, Any] | None = None):
        check_choice(name, BANDITS, "bandit")
        self.name = name
        allocation = BANDITS[name]
        settings = dict(hyperparameters or {})
        known = {f.name for f in fields(allocation) if f.init} - {"arms", "seed"}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(
                f"search={name}: unknown hyperparameter {unknown[0]!r}; valid: {', '.join(sorted(known)) or 'none'}"
            )
        self.bandit: Bandit = allocation(arms, seed, **settings)
        self.stops_itself = type(self.bandit).settled is not Bandit.settled

    resumed = False

    def run(self, envs: VecEnv, rollouts: int, on_step: StepHook, on_safe_point: SafePointHook) -> None:
        if not self.resumed:
            envs.reset()
        done = 0
        while done < rollouts:
            arms = self.bandit.select(envs.num_envs)
            _, _, _, infos = envs.step(arms)
            for arm, info in zip(arms, infos):
                if info["outcome"] != "sim_error":  # an unstable simulation says nothing about the policy
                    self.bandit.update(int(arm), info["failed"])
            done += envs.num_envs
            keep_going = on_step(arms, infos)
            on_safe_point()
            if not keep_going:
                return

    def scores(self, nominal_observations: Any = None) -> np.ndarray:
        return self.bandit.posterior_mean()

    def settled(self) -> bool:
        return self.bandit.settled()

    def answer(self) -> str:
        return self.bandit.answer()

    def report(self) -> dict[str, Any]:
        return self.bandit.report()

    def save(self, directory: Path) -> None:
        (directory / f"{self.name}.json").write_text(json.dumps(self.bandit.state()))

    def load(self, directory: Path, envs: VecEnv) -> None:
        self.bandit.load_state(json.loads((directory / f"{self.name}.json").read_text()))
        self.resumed = True


def checkpoint_files(name: str) -> tuple[str, ...]:
    """The files a method's checkpoint holds (what a resume checks for before it starts)."""
    if name in RL_ALGORITHMS:
        return f"{name}.zip", "agent.npz", "rng.json"
    if name in BANDITS:
        return (f"{name}.json",)
    raise unknown_choice("search method", name, METHODS)


def build_method(
    name: str, envs: VecEnv, hyperparameters: Mapping[str, Any], seed: int, tensorboard: Path | None
) -> SearchMethod:
    if name in RL_ALGORITHMS:
        return RLSearch(name=name, envs=envs, hyperparameters=hyperparameters, seed=seed, tensorboard=tensorboard)
    if name in BANDITS:
        return BanditSearch(name, int(envs.action_space.n), seed, hyperparameters)
    raise unknown_choice("search method", name, METHODS)
