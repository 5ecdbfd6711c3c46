import dataclasses
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from fake_embeddings import known_embeddings
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import diagnosis  # noqa: F401  (registers the search ids)
import envs  # noqa: F401  (registers the task ids)
from envs.perturbations import task_perturbations
from envs.tasks import get_task
from policies.scripted import ScriptedExpert

FAILSCOPE_IDS = sorted(env_id for env_id in gym.registry if env_id.startswith("failscope/"))


def fast_kwargs(env_id: str) -> dict:
    """Search envs roll a policy out per step: check them with a state-based policy (no frames to render), a short
    horizon and a few actions."""
    if "-ContinuousSearch-" in env_id:  # searches known embeddings: give it a small fake set
        return {"embedding": known_embeddings(gym.spec(env_id).kwargs["task"])}
    if "-Search-" not in env_id:
        return {}
    task = dataclasses.replace(get_task(gym.spec(env_id).kwargs["task"]), horizon=60)  # after every event step
    return {
        "task": task,
        "policy": ScriptedExpert(task),
        "max_depth": 3,
        "record_frames": False,
        "perturbations": list(task_perturbations(task))[:3],
    }


def test_every_task_is_registered():
    assert {"failscope/Lift-v0", "failscope/Can-v0", "failscope/Square-v0", "failscope/Stack-v0"} <= set(FAILSCOPE_IDS)
    assert "failscope/Lift-Search-v0" in FAILSCOPE_IDS


DEFAULT_CHECKED = {"failscope/Lift-v0", "failscope/Lift-Search-v0", "failscope/Lift-ContinuousSearch-v0"}
"""Every id is checked in the slow suite; the default one checks Lift's (each of the other tasks' envs is the same
class on another scene)."""


@pytest.mark.parametrize(
    "env_id", [i if i in DEFAULT_CHECKED else pytest.param(i, marks=pytest.mark.slow) for i in FAILSCOPE_IDS]
)
def test_check_env(env_id):
    env = gym.make(env_id, **fast_kwargs(env_id))
    check_env(env.unwrapped, skip_render_check=False)
    sb3_check_env(env.unwrapped, warn=False)
    env.close()


def test_perturbed_task_steps_until_truncation():
    env = gym.make("failscope/Lift-v0", perturbations=["cube_color_blue"])
    obs, info = env.reset(seed=0)
    assert info["perturbations"] == ["cube_color_blue"]
    assert obs["agentview_image"].shape == (84, 84, 3)
    for t in range(1000):  # noqa: B007 (t is checked after the loop)
        obs, reward, terminated, truncated, info = env.step(np.zeros(7, dtype=np.float32))
        if terminated or truncated:
            break
    assert truncated and not terminated and t == get_task("lift").horizon - 1 and reward == 0.0
    env.close()


def test_readme_make_works_in_a_fresh_interpreter():
    """README: `gymnasium.make("envs:failscope/Lift-v0", perturbations=[...])` with nothing imported first."""
    code = (
        "import gymnasium\n"
        "env = gymnasium.make('envs:failscope/Lift-v0', perturbations=['cube_color_blue'])\n"
        "obs, info = env.reset(seed=0)\n"
        "print(info['perturbations'], obs['agentview_image'].shape)\n"
        "env.close()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "['cube_color_blue'] (84, 84, 3)"
