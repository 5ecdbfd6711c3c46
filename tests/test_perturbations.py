import numpy as np
import pytest

from envs.perturbations import FAMILIES, get_perturbations, task_perturbations, validate_composition
from envs.perturbations.appearance import ObjectColor
from envs.perturbations.events import ObjectTeleport
from envs.perturbations.geometry import ObjectSize, TableSize
from envs.scene import EDITABLE_FIELDS
from envs.tasks import get_task

ROBOMD_LIFT = [
    *(f"cube_color_{c}" for c in ("red", "green", "blue", "gray")),
    *(f"table_color_{c}" for c in ("green", "blue", "red", "gray")),
    "table_size_0.8x0.2x0.025",
    "table_size_0.2x0.8x0.025",
    "cube_size_0.04x0.04x0.04",
    "cube_size_0.01x0.01x0.01",
    "cube_size_0.04x0.01x0.01",
    *(f"robot_color_{c}" for c in ("red", "green", "cyan", "gray")),
    *(f"light_color_{c}" for c in ("red", "green", "blue", "gray")),
]

REQUIRED_FAMILIES = {
    "object_color",
    "table_color",
    "robot_color",
    "light_color",
    "light_intensity",
    "object_size",
    "table_size",
    "camera_pose",
    "object_mass",
    "friction",
    "distractor",
    "init_offset",
    "obs_noise",
    "action_noise",
    "object_nudge",
    "object_teleport",
    "gripper_open",
}


def test_lift_contains_robomds_21_and_every_family():
    lift = task_perturbations("lift")
    assert len(ROBOMD_LIFT) == 21
    assert [n for n in ROBOMD_LIFT if n not in lift] == []
    assert REQUIRED_FAMILIES <= set(FAMILIES)
    assert REQUIRED_FAMILIES <= {p.family for p in lift.values()}
    assert all(p.description for p in lift.values())


@pytest.mark.parametrize("task", ["lift", "can", "square", "stack"])
def test_names_are_unique_and_timed_within_the_horizon(task):
    perturbations = list(task_perturbations(task).values())
    assert len({p.name for p in perturbations}) == len(perturbations)
    validate_composition(task, perturbations)


def test_unknown_perturbation_lists_valid_names():
    with pytest.raises(ValueError, match="valid: cube_color_red"):
        get_perturbations("lift", "cube_color_pink")


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: ObjectColor(name="x", description="x", rgba=(1.2, 0, 0, 1)), r"rgba must be in \[0.0, 1.0\]"),
        (lambda: ObjectSize(name="x", description="x", half_size=(0.02, 0.0, 0.02)), r"half_size must be in \(0"),
        (lambda: TableSize(name="x", description="x", full_size=(0.8, -0.8, 0.05)), r"full_size must be in \(0"),
        (lambda: ObjectColor(name="x", description="x", rgba=(1, 0, 0)), "rgba needs 4 values"),
        (lambda: ObjectTeleport(name="x", description="x", offset=(0.1, 0.0)), "cannot fire at reset"),
        (lambda: ObjectSize(name="x", description="x", half_size=(0.02,) * 3, at_step=5), "cannot fire at step"),
    ],
)
def test_bad_parameters_fail_before_any_sim(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_event_beyond_horizon_is_rejected():
    late = ObjectTeleport(name="late", description="x", offset=(0.1, 0.0), at_step=10_000)
    with pytest.raises(ValueError, match="beyond task 'lift'"):
        validate_composition("lift", [late])


def test_table_size_needs_a_table():
    with pytest.raises(ValueError, match="table_size needs a task on a table"):
        TableSize(name="t", description="t", full_size=(0.8, 0.2, 0.025)).check_task(get_task("can"))


def test_every_lift_perturbation_applies_and_restores_exactly(lift_runner):
    scene = lift_runner.scene
    nominal = {name: getattr(scene.model, name).copy() for name in EDITABLE_FIELDS}
    rng = np.random.default_rng(0)
    changed = set()
    for p in task_perturbations("lift").values():
        scene.reset(seed=3)
        before = {name: getattr(scene.model, name).copy() for name in EDITABLE_FIELDS}
        state = np.concatenate([scene.data.qpos, scene.data.qvel, scene.data.mocap_pos.ravel()])
        p.apply(scene, rng)
        scene.forward()
        assert np.all(np.isfinite(scene.data.qpos))
        new_state = np.concatenate([scene.data.qpos, scene.data.qvel, scene.data.mocap_pos.ravel()])
        model_changed = any(not np.array_equal(getattr(scene.model, n), before[n]) for n in EDITABLE_FIELDS)
        if model_changed or not np.array_equal(state, new_state):
            changed.add(p.family)
    scene.restore()
    for name, value in nominal.items():
        np.testing.assert_array_equal(getattr(scene.model, name), value, err_msg=name)
    # Families that act through hooks (noise, forced gripper) change nothing at apply time.
    assert changed >= REQUIRED_FAMILIES - {"obs_noise", "action_noise", "gripper_open"}


def test_resized_cube_rests_on_the_table_and_physics_feels_it(lift_runner):
    scene = lift_runner.scene
    big = get_perturbations("lift", ["cube_size_0.04x0.04x0.04"])[0]
    scene.reset(seed=1)
    mass = scene.model.body_mass[scene.body_id("cube_main")]
    big.apply(scene, np.random.default_rng(0))
    for _ in range(10):
        scene.step(np.zeros(7))
    cube_z = scene.data.xpos[scene.body_id("cube_main")][2]
    # A 4 cm half-height cube settles with its centre 4 cm above the table top, not at the nominal 2 cm.
    assert abs(cube_z - (0.8 + 0.04)) < 0.005
    assert scene.model.body_mass[scene.body_id("cube_main")] == pytest.approx(mass * 8, rel=0.2)


def test_every_family_declares_its_parameter_space_and_lists_it(capsys):
    from envs.list import main as list_main
    from envs.perturbations import FAMILIES
    from envs.perturbations.base import Bounds, parameter_space

    assert parameter_space(FAMILIES["object_color"]) == {"rgba": Bounds(0.0, 1.0, 4)}
    assert parameter_space(FAMILIES["gripper_open"])["duration"].describe() == "integer in [1, 10000]"
    # Every family but `composed`, whose parameters are its parts' own, declares a parameter space.
    assert [name for name, cls in FAMILIES.items() if not parameter_space(cls)] == ["composed"]
    list_main(["families=true"])
    assert "rgba: 4 × [0, 1]" in capsys.readouterr().out
