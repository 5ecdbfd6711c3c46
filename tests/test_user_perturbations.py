"""User-defined perturbations (a YAML file): built and validated by their family, accepted by every CLI that takes a
catalogue name, stored with the search's rollouts so a replay needs neither catalogue nor file."""

import json

import h5py
import numpy as np
import pytest

from envs.perturbations import get_perturbations, task_perturbations
from envs.perturbations.user import load_perturbation_file, perturbation_from_dict, to_dict

TEAL = """\
- name: cube_color_teal
  family: object_color
  description: the cube is teal
  rgba: [0.0, 0.5, 0.5, 1.0]
- name: table_color_deep_blue
  family: table_color
  description: the table is deep blue
  rgba: [0.05, 0.1, 0.9, 1.0]
"""


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(TEAL)
    return path


def test_a_file_adds_its_perturbations_after_the_catalogue(user_file):
    catalogue = task_perturbations("lift")
    extended = task_perturbations("lift", str(user_file))
    assert list(extended)[: len(catalogue)] == list(catalogue)
    assert list(extended)[len(catalogue) :] == ["cube_color_teal", "table_color_deep_blue"]
    teal = extended["cube_color_teal"]
    assert teal.family == "object_color" and teal.rgba == (0.0, 0.5, 0.5, 1.0)  # a tuple: hashable, frozen
    assert perturbation_from_dict(to_dict(teal)) == teal
    assert get_perturbations("lift", "cube_color_teal,cube_color_red", [user_file])[0] == teal


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("family: object_colour\n  rgba: [0, 0, 0, 1]", r"unknown family 'object_colour'.*did you mean 'object_color'"),
        ("family: object_color\n  rgb: [0, 0, 0]", r"family object_color has no field 'rgb' \(did you mean 'rgba'\?\)"),
        ("family: object_color\n  rgba: [2, 0, 0, 1]", r"rgba must be in \[0.0, 1.0\], got \(2.0, 0.0, 0.0, 1.0\)"),
        ("family: object_color", "family object_color needs rgba"),
        ("family: object_nudge\n  velocity: [0, 1, 0]", "cannot fire at reset; allowed: step"),
        ("family: object_nudge\n  at_step: 500\n  velocity: [0, 1, 0]", "fires at step 500, beyond task 'lift'"),
    ],
)
def test_every_error_names_the_file_the_entry_and_the_field(tmp_path, entry, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"- name: mine\n  description: mine\n  {entry}\n")
    with pytest.raises(ValueError, match=rf"^{path}: (entry 0 \(mine\): )?.*{message}"):
        task_perturbations("lift", str(path))


def test_a_name_the_catalogue_has_or_a_repeated_name_is_refused(tmp_path):
    path = tmp_path / "clash.yaml"
    path.write_text("- {name: cube_color_red, family: object_color, description: red, rgba: [1, 0, 0, 1]}\n")
    with pytest.raises(ValueError, match="perturbation 'cube_color_red' is already defined"):
        task_perturbations("lift", str(path))
    path.write_text(TEAL + TEAL)
    with pytest.raises(ValueError, match=r"entry 2 \(cube_color_teal\): the name 'cube_color_teal' is defined twice"):
        load_perturbation_file(path)
    with pytest.raises(FileNotFoundError, match="perturbation file .*missing.yaml does not exist"):
        task_perturbations("lift", str(tmp_path / "missing.yaml"))


def test_envs_list_and_policies_evaluate_take_the_file(user_file, capsys):
    from envs.list import main as list_main
    from policies.evaluate import PolicyEvaluateConfig, evaluate

    list_main(["task=lift", f"perturbation_file={user_file}"])
    printed = capsys.readouterr().out
    assert "cube_color_teal" in printed and "the table is deep blue" in printed
    assert printed.strip().endswith(f"{len(task_perturbations('lift')) + 2} perturbations")
    episodes = evaluate(
        PolicyEvaluateConfig(
            policy="scripted",
            task="lift",
            episodes=1,
            perturbations="cube_color_teal",
            perturbation_file=str(user_file),
        )
    )
    assert episodes[0].perturbations == ("cube_color_teal",) and episodes[0].success


@pytest.mark.slow  # rollouts; the search test takes the same file
def test_ground_truth_evaluates_a_user_perturbation_into_its_own_file(user_file, tmp_path):
    from experiments.ground_truth import main as ground_truth

    argv = [
        "task=lift", "policy=scripted", "episodes=1", "workers=1", f"out={tmp_path}",
        f"perturbation_file={user_file}", "perturbations=cube_color_teal",
    ]  # fmt: skip
    ground_truth(argv)
    (written,) = tmp_path.glob("ground_truth_lift_scripted_subset_*.json")  # never the full ground truth's file
    rows = json.loads(written.read_text())["perturbations"]
    assert [(r["perturbation"], r["description"], r["episodes"]) for r in rows] == [
        ("cube_color_teal", "the cube is teal", 1)
    ]


def test_the_search_takes_the_file_and_stores_what_each_name_meant(user_file, tmp_path):
    from test_search_cli import config

    from diagnosis.dataset import restore_first_state
    from diagnosis.search import prepare, run_search
    from envs.rollout import Runner

    cfg = config(
        "search=uniform",
        "search.total_rollouts=2",
        f"task.perturbation_file={user_file}",
        "task.perturbations=[cube_color_teal,table_color_deep_blue]",
    )
    summary = run_search(cfg, tmp_path)
    failed = {r["perturbation"]: r["failed"] for r in summary["ranking"]}
    assert failed == {"cube_color_teal": 0, "table_color_deep_blue": 1}  # BlueAverse freezes on blue scenes
    runner = Runner(prepare(cfg, tmp_path / "again").spec.task)
    with h5py.File(tmp_path / "failures.hdf5", "r") as file:
        definitions = json.loads(file["data"].attrs["definitions"])
        assert [d["name"] for d in definitions] == ["cube_color_teal", "table_color_deep_blue"]
        assert definitions[0]["rgba"] == [0.0, 0.5, 0.5, 1.0]
        user_file.unlink()  # the replay reads the definitions stored in the dataset
        frame = restore_first_state(runner, file["data"]["demo_0"])
        np.testing.assert_array_equal(frame, file["data"]["demo_0"]["obs/agentview_image"][0])
    runner.close()
