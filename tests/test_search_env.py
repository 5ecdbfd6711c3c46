import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from fake_policies import BlueAverse

from diagnosis.search_env import FailureSearchEnv, SearchRewards
from envs.perturbations import task_perturbations
from envs.tasks import get_task

TASK = dataclasses.replace(get_task("lift"), horizon=40)
CANDIDATES = ["table_color_blue", "cube_color_red", "cube_color_green", "cube_heavy"]


@pytest.fixture(scope="module")
def env():
    env = FailureSearchEnv(TASK, policy=BlueAverse(TASK), perturbations=CANDIDATES, max_depth=3, record_frames=False)
    yield env
    env.close()


def test_action_space_is_the_candidate_set(env):
    assert env.action_space.n == len(CANDIDATES) and env.names == CANDIDATES
    every = gym.make("failscope/Lift-Search-v0")  # the shipped policy, every perturbation of the task
    assert every.action_space.n == len(task_perturbations("lift"))
    every.close()


def test_rewards_follow_algorithm_1(env):
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(CANDIDATES.index("cube_heavy"))
    assert info["outcome"] == "success" and not (terminated or truncated)
    assert reward == pytest.approx(-info["length"] / TASK.horizon)
    # A second choice of the same perturbation repeats the set and pays the repetition penalty.
    _, reward, _, _, info = env.step(CANDIDATES.index("cube_heavy"))
    assert info["repeated"] and info["perturbations"] == ["cube_heavy"]
    assert reward == pytest.approx(-info["length"] / TASK.horizon - SearchRewards().repeat_penalty)
    # Perturbations accumulate while the policy succeeds; a failure ends the search episode.
    _, reward, terminated, _, info = env.step(CANDIDATES.index("table_color_blue"))
    assert info["perturbations"] == ["cube_heavy", "table_color_blue"]
    assert info["outcome"] == "failure" and terminated and reward == SearchRewards().c_fail
    assert env.applied == []


def test_same_family_replaces_and_depth_truncates(env):
    env.reset(seed=1)
    env.step(CANDIDATES.index("cube_color_red"))
    env.step(CANDIDATES.index("cube_color_green"))
    assert [p.name for p in env.applied] == ["cube_color_green"]  # a cube cannot be red and green at once
    shallow = FailureSearchEnv(
        TASK, policy=BlueAverse(TASK), perturbations=CANDIDATES, max_depth=2, record_frames=False
    )
    shallow.reset(seed=0)
    _, _, terminated, truncated, _ = shallow.step(CANDIDATES.index("cube_heavy"))
    assert not (terminated or truncated)
    _, _, terminated, truncated, info = shallow.step(CANDIDATES.index("cube_color_red"))
    assert info["outcome"] == "success" and truncated and not terminated and shallow.applied == []
    shallow.close()


def test_observation_is_the_scene_as_it_stands():
    env = FailureSearchEnv(
        TASK, policy=BlueAverse(TASK), perturbations=CANDIDATES, max_depth=3, observe_applied=True, record_frames=False
    )
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (84, 84, 3) and not obs["applied"].any()
    obs, *_ = env.step(CANDIDATES.index("cube_heavy"))
    assert obs["applied"].tolist() == [0, 0, 0, 1]
    nominal = env.nominal_frames([5])[0]
    red = env.first_frame(env.candidates[1:2], 5)
    assert not np.array_equal(nominal, red)  # a reset-time colour change shows in the first frame
    env.close()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="valid: sim, monitor, both"):
        FailureSearchEnv(TASK, policy=BlueAverse(TASK), perturbations=CANDIDATES, outcome="vibes")
    with pytest.raises(ValueError, match="needs a monitor"):
        FailureSearchEnv(TASK, policy=BlueAverse(TASK), perturbations=CANDIDATES, outcome="monitor")
    with pytest.raises(ValueError, match="unknown perturbation"):
        FailureSearchEnv(TASK, policy=BlueAverse(TASK), perturbations=["table_colour_blue"])
