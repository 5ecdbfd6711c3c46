"""Search methods behind one interface: RL agents (stable-baselines3 PPO, A2C) and the bandit baselines.

Every method drives the same vectorised `FailureSearchEnv`, so all of them produce the same rollouts, datasets and
reports; they differ in how they choose the next perturbation and in how they read a ranking off what they learned.
`on_step(actions, infos) -> bool` is called after every vectorised step with the finished rollouts; returning
False stops the search (budget spent or interrupted).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from diagnosis.bandits import BANDITS, Bandit

StepHook = Callable[[np.ndarray, list[dict[str, Any]]], bool]

RL_ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C}
METHODS = (*RL_ALGORITHMS, *BANDITS)


class SearchMethod:
    """How a search chooses perturbations and ranks them; see the module docstring."""

    name: str
    max_depth: int | None = None
    """A depth the method requires (bandits try one perturbation at a time); None: the configured one."""

    def run(self, envs: VecEnv, rollouts: int, on_step: StepHook) -> None:
        raise NotImplementedError

    def scores(self, nominal_observations: Any) -> np.ndarray:
        """Failure score per perturbation (higher = fails more)."""
        raise NotImplementedError

    def save(self, directory: Path) -> None:
        raise NotImplementedError

    def load(self, directory: Path, envs: VecEnv, rollouts_done: int) -> None:
        raise NotImplementedError


class _StepCallback(BaseCallback):
    def __init__(self, on_step: StepHook):
        super().__init__()
        self.hook = on_step

    def _on_step(self) -> bool:
        return self.hook(np.asarray(self.locals["actions"]), list(self.locals["infos"]))


class RLSearch(SearchMethod):
    """An SB3 actor-critic on the search env. Its ranking is RoboMD's: the softmax of the policy's logits on the
    first frame of nominal scenes, averaged over a few initial states."""

    def __init__(self, name: str, envs: VecEnv, hyperparameters: Mapping[str, Any], seed: int, tensorboard: Path | None):
        if name not in RL_ALGORITHMS:
            raise ValueError(f"unknown RL method {name!r}; valid: {', '.join(RL_ALGORITHMS)}")
        self.name = name
        params = dict(hyperparameters)
        net_arch = list(params.pop("net_arch"))
        n_steps = int(params.pop("n_steps"))
        if name == "ppo":
            # PPO's minibatch must fit in one update's worth of rollouts.
            params["batch_size"] = min(int(params["batch_size"]), n_steps * envs.num_envs)
        policy = "MultiInputPolicy" if isinstance(envs.observation_space, spaces.Dict) else "CnnPolicy"
        self.agent = RL_ALGORITHMS[name](
            policy, envs, n_steps=n_steps, seed=seed, verbose=0, device="cpu",
            tensorboard_log=str(tensorboard) if tensorboard else None,
            policy_kwargs={"net_arch": {"pi": net_arch, "vf": net_arch}}, **params,
        )

    def run(self, envs: VecEnv, rollouts: int, on_step: StepHook) -> None:
        self.agent.learn(
            total_timesteps=rollouts, callback=_StepCallback(on_step), reset_num_timesteps=False, tb_log_name=self.name
        )

    @torch.no_grad()
    def scores(self, nominal_observations: Any) -> np.ndarray:
        obs, _ = self.agent.policy.obs_to_tensor(nominal_observations)
        probs = self.agent.policy.get_distribution(obs).distribution.probs
        return probs.mean(dim=0).cpu().numpy().astype(float)

    def save(self, directory: Path) -> None:
        self.agent.save(directory / f"{self.name}.zip")

    def load(self, directory: Path, envs: VecEnv, rollouts_done: int) -> None:
        self.agent = RL_ALGORITHMS[self.name].load(
            directory / f"{self.name}.zip", env=envs, device="cpu", tensorboard_log=self.agent.tensorboard_log
        )


class BanditSearch(SearchMethod):
    """One perturbation per rollout, on the nominal scene; ranks by the posterior mean failure rate."""

    max_depth = 1

    def __init__(self, name: str, arms: int, seed: int):
        if name not in BANDITS:
            raise ValueError(f"unknown bandit {name!r}; valid: {', '.join(BANDITS)}")
        self.name = name
        self.bandit: Bandit = BANDITS[name](arms, seed)

    def run(self, envs: VecEnv, rollouts: int, on_step: StepHook) -> None:
        envs.reset()
        done = 0
        while done < rollouts:
            arms = self.bandit.select(envs.num_envs)
            _, _, _, infos = envs.step(arms)
            for arm, info in zip(arms, infos):
                if info["outcome"] != "sim_error":  # an unstable simulation says nothing about the policy
                    self.bandit.update(int(arm), info["failed"])
            done += envs.num_envs
            if not on_step(arms, infos):
                return

    def scores(self, nominal_observations: Any = None) -> np.ndarray:
        return self.bandit.posterior_mean()

    def save(self, directory: Path) -> None:
        (directory / f"{self.name}.json").write_text(json.dumps(self.bandit.state()))

    def load(self, directory: Path, envs: VecEnv, rollouts_done: int) -> None:
        self.bandit.load_state(json.loads((directory / f"{self.name}.json").read_text()), rollouts_done)


def build_method(
    name: str, envs: VecEnv, hyperparameters: Mapping[str, Any], seed: int, tensorboard: Path | None
) -> SearchMethod:
    if name in RL_ALGORITHMS:
        return RLSearch(name, envs, hyperparameters, seed, tensorboard)
    if name in BANDITS:
        return BanditSearch(name, int(envs.action_space.n), seed)
    raise ValueError(f"unknown search method {name!r}; valid: {', '.join(METHODS)}")
