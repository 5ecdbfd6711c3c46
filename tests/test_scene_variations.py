"""The families SimFails v2 is built from (envs/perturbations/{temporal,moving,triggered}.py), on the live Lift scene
with the scripted expert: what each changes, that per-step edits do not accumulate, and that state-triggered events
fire once, at the moment their condition first holds, as the step event they stand for."""

import numpy as np
import pytest
from fake_policies import Motionless

from envs.perturbations import get_family
from envs.perturbations.composed import compose
from envs.receipts import check_effects
from monitor.variations import monitor_perturbations, variations
from policies.scripted import ScriptedExpert

RNG = np.random.default_rng(0)


def make(family: str, **params):
    return get_family(family)(name=f"test_{family}", description=family, **params)


def test_action_scale_and_pause_change_the_arm_only():
    action = np.array([0.5, -0.8, 0.2, 0.0, 0.0, 0.1, 1.0])
    slow = make("action_scale", scale=0.5).act(action, 0, RNG)
    np.testing.assert_allclose(slow, [0.25, -0.4, 0.1, 0.0, 0.0, 0.05, 1.0])
    fast = make("action_scale", scale=2.0).act(action, 0, RNG)
    assert fast[1] == -1.0 and fast[0] == 1.0 and fast[-1] == 1.0  # clipped to the controller's range
    pause = make("pause", at_step=3, duration=2)
    assert np.array_equal(pause.act(action, 2, RNG), action) and np.array_equal(pause.act(action, 5, RNG), action)
    np.testing.assert_array_equal(pause.act(action, 4, RNG), [0, 0, 0, 0, 0, 0, 1.0])


@pytest.mark.parametrize(
    ("family", "params", "message"),
    [
        ("action_scale", {"scale": 1.0}, "changes nothing"),
        ("action_scale", {"scale": 0.0}, "scale must be in (0, 5"),
        ("pause", {"duration": 3}, "cannot fire at reset"),
        ("object_push", {"velocity": (0.0, 0.0, 0.0)}, "non-zero"),
        ("moving_distractor", {"velocity": (0.0, 0.0)}, "non-zero"),
        ("camera_jitter", {"std": 0.5}, "std must be in (0, 0.1]"),
    ],
)
def test_bad_parameters_are_refused_by_name(family, params, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        make(family, **params)


def test_triggered_events_cannot_be_parts_of_a_composition():
    with pytest.raises(ValueError, match="single reset-time"):
        compose([make("object_drop"), make("light_flicker", depth=0.5)])


def test_every_variation_changes_something_and_names_do_not_clash():
    check_effects("lift", variations("lift"))
    check_effects("can", variations("can"))
    assert set(p.name for p in variations("lift")) <= set(monitor_perturbations("lift"))


def test_camera_jitter_and_flicker_vary_around_the_start_without_accumulating(lift_runner):
    scene = lift_runner.scene
    shift = make("camera_pose", offset=(0.0, 0.05, 0.0))
    jitter, flicker = make("camera_jitter", std=0.01), make("light_flicker", depth=0.5)
    episode = lift_runner.episode([shift, jitter, flicker], seed=0, render_frames=False)
    episode.start()
    cam = scene.camera_id()
    start = scene.episode_start_values
    assert not np.allclose(start["cam_pos"][cam], scene._nominal["cam_pos"][cam])  # the reset-time shift stays in
    offsets = []
    for _ in range(30):
        offsets.append(scene.model.cam_pos[cam] - start["cam_pos"][cam])
        factor = scene.model.light_diffuse / np.maximum(start["light_diffuse"], 1e-12)
        assert ((factor >= 0.5 - 1e-9) & (factor <= 1.0 + 1e-9))[start["light_diffuse"] > 0].all()
        episode.step(np.zeros(7))
    offsets = np.array(offsets)
    assert 0.005 < offsets.std() < 0.02 and np.abs(offsets.mean()) < 0.005  # noise around the start, no drift
    assert len({tuple(o) for o in offsets.round(6)}) == 30  # a new draw every frame


def test_moving_distractor_passes_through_without_touching_anything(lift_runner):
    scene = lift_runner.scene
    passing = make("moving_distractor", shape="sphere", offset=(-0.2, 0.25), velocity=(0.2, 0.0))
    episode = lift_runner.episode([passing], seed=0, render_frames=False)
    episode.start()
    from envs.scene import distractor_body

    mocap = scene.model.body_mocapid[scene.body_id(distractor_body("sphere"))]
    first = scene.data.mocap_pos[mocap].copy()
    for _ in range(10):
        episode.step(np.zeros(7))
    moved = scene.data.mocap_pos[mocap] - first
    np.testing.assert_allclose(moved, [10 * 0.2 / scene.task.control_freq, 0.0, 0.0], atol=1e-9)
    assert not scene.model.geom_contype[scene.geoms_of(distractor_body("sphere"))].any()


def run(lift_runner, perturbation, seed=0):
    return lift_runner.run(ScriptedExpert("lift"), [perturbation], seed=seed)


def test_grasp_lost_fires_once_when_the_gripper_first_holds_the_object(lift_runner):
    drop = make("object_drop", delay=0, duration=30)
    episode = run(lift_runner, drop)
    fired = [r for r in episode.receipts if r.get("triggered")]
    assert len(fired) == 1 and fired[0]["step"] == fired[0]["triggered_at"] and fired[0]["filters"] == ["act"]
    at = fired[0]["triggered_at"]
    nominal = lift_runner.run(ScriptedExpert("lift"), [], seed=0)
    np.testing.assert_array_equal(episode.actions[:at], nominal.actions[:at])  # nothing changed before it fired
    assert (episode.actions[at:, -1] == -1.0).all()  # then the gripper is held open (whether the task survives
    # depends on the policy: Lift succeeds 1 cm up, so a fast lift can still make it)


def test_knock_off_pushes_the_object_off_the_table_as_the_gripper_reaches_it(lift_runner):
    knock = monitor_perturbations("lift")["knock_off"]
    episode = run(lift_runner, knock)
    (fired,) = [r for r in episode.receipts if r.get("triggered")]
    eef, cube = episode.observations["robot0_eef_pos"], episode.observations["cube_pos"]
    at = fired["triggered_at"]
    assert np.linalg.norm(eef[at] - cube[at]) <= knock.distance < np.linalg.norm(eef[at - 1] - cube[at - 1])
    assert episode.outcome == "failure" and episode.failure_step is not None  # off the table, not a timeout


def test_a_trigger_that_never_holds_leaves_the_episode_nominal(lift_runner):
    still = Motionless("lift")  # never reaches the cube, so the push never fires
    pushed = lift_runner.run(still, [make("object_push", velocity=(0.0, 1.0, 0.0), distance=0.05)], seed=0)
    assert not any(r.get("triggered") for r in pushed.receipts)
    plain = lift_runner.run(still, [], seed=0)
    np.testing.assert_array_equal(pushed.states, plain.states)
    assert pushed.outcome == plain.outcome


def test_new_families_come_from_yaml_like_any_other(tmp_path):
    from envs.perturbations.user import load_perturbation_file

    good = tmp_path / "good.yaml"
    good.write_text(
        "- {name: slow_down, family: action_scale, description: half speed, scale: 0.5}\n"
        "- {name: shove, family: object_push, description: shoved, velocity: [0, 1, 0], distance: 0.05}\n"
    )
    slow, shove = load_perturbation_file(good)
    assert (
        slow.scale == 0.5 and shove.velocity == (0, 1, 0) and shove.timing == "when the gripper is 5 cm from the object"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {name: early_drop, family: object_drop, description: d, at_step: 3}\n")
    with pytest.raises(ValueError, match="early_drop.*cannot fire at step"):
        load_perturbation_file(bad)
