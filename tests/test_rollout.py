from dataclasses import dataclass

import numpy as np
import pytest

from envs.perturbations import Perturbation, get_perturbations
from envs.rollout import rollout
from envs.tasks import get_task
from policies.scripted import ScriptedExpert


class HoldStill:
    """Sends zero motion with an open gripper: never succeeds."""

    obs_keys = ("agentview_image",)
    action_dim = 7

    def __init__(self):
        self.resets = 0
        self.seen_frames = []

    def reset(self):
        self.resets += 1

    def act(self, obs):
        self.seen_frames.append(obs["agentview_image"])
        return np.array([0, 0, 0, 0, 0, 0, -1.0])


@dataclass(frozen=True, kw_only=True)
class Explode(Perturbation):
    """Test-only: injects a non-finite velocity to provoke a simulation error."""

    family = "test_explode"

    def apply(self, scene, rng):
        scene.data.qvel[:] = np.inf


def test_scripted_expert_lifts_and_episode_is_complete():
    episode = rollout("lift", ScriptedExpert("lift"), seed=0, record=True)
    assert episode.success and episode.failure_step is None
    assert episode.actions.shape == (episode.length, 7)
    assert episode.states.shape[0] == episode.length == episode.frames.shape[0]
    assert episode.observations["cube_pos"].shape == (episode.length, 3)


def test_square_expert_turns_the_nut_square_and_lowers_it_around_the_peg():
    from policies.scripted import wrap, yaw_of_quat_xyzw

    expert = ScriptedExpert("square", yaw_jitter=0.785)
    assert expert.yaw_jitter == 0.0  # capped: a handle held at an angle slips out while the nut turns
    episode = rollout("square", expert, seed=1)
    assert episode.success
    nut_yaw = yaw_of_quat_xyzw(episode.observations["SquareNut_quat"][-1])
    assert abs(wrap(nut_yaw, np.pi / 2)) < 0.1  # square to the peg, or it would not have gone down
    assert np.linalg.norm(episode.observations["SquareNut_pos"][-1][:2] - [0.23, 0.10]) < 0.01


def test_same_seed_same_episode_even_with_noise():
    noisy = get_perturbations("lift", ["action_noise", "camera_noise"])
    first = rollout("lift", ScriptedExpert("lift"), noisy, seed=5, record=True)
    second = rollout("lift", ScriptedExpert("lift"), noisy, seed=5, record=True)
    np.testing.assert_array_equal(first.states, second.states)
    np.testing.assert_array_equal(first.frames, second.frames)
    other = rollout("lift", ScriptedExpert("lift"), noisy, seed=6)
    assert not np.array_equal(first.states[0], other.states[0])


def test_horizon_failure_resets_policy_and_frames_are_the_policys():
    policy = HoldStill()
    episode = rollout("lift", policy, seed=1, record=True)
    assert episode.outcome == "failure" and episode.length == get_task("lift").horizon
    assert policy.resets == 1
    np.testing.assert_array_equal(np.stack(policy.seen_frames), episode.frames)


def test_event_fires_at_its_step():
    teleport = get_perturbations("lift", ["event_cube_teleport"])[0]
    episode = rollout("lift", HoldStill(), [teleport], seed=2)
    cube_y = episode.observations["cube_pos"][:, 1]
    step = teleport.at_step
    assert abs(cube_y[step - 1] - cube_y[0]) < 1e-3
    assert cube_y[step] - cube_y[step - 1] == pytest.approx(0.08, abs=5e-3)


def test_gripper_forced_open_overrides_the_gripper_command():
    event = get_perturbations("lift", ["event_gripper_open"])[0]
    episode = rollout("lift", ScriptedExpert("lift"), [event], seed=0)
    window = episode.actions[event.at_step : min(event.at_step + event.duration, episode.length), -1]
    assert len(window) and np.all(window == -1.0)


def test_simulation_error_ends_the_episode_without_raising():
    episode = rollout("lift", ScriptedExpert("lift"), [Explode(name="explode", description="x", at_step=3)], seed=0)
    assert episode.outcome == "sim_error" and episode.failure_step == 4 and episode.error
    # The next episode on the same scene is healthy again.
    assert rollout("lift", ScriptedExpert("lift"), seed=0).success


def test_rollout_honours_a_custom_horizon():
    import dataclasses

    short = dataclasses.replace(get_task("lift"), horizon=30)  # past every catalogue event
    episode = rollout(short, HoldStill(), seed=0)
    assert episode.outcome == "failure" and episode.length == 30
