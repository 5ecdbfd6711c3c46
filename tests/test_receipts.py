"""Receipts: what each perturbation changed, kept with every rollout; a perturbation that changes nothing is refused."""

import json

import h5py
import pytest

from envs.perturbations import task_perturbations
from envs.perturbations.dynamics import ObjectMass
from envs.receipts import check_effects
from envs.rollout import rollout
from envs.tasks import TASKS
from policies.scripted import ScriptedExpert

UNIT_MASS = ObjectMass(name="cube_same_mass", description="the cube weighs what it weighs", scale=1.0)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_catalogue_perturbation_changes_something(task):
    check_effects(task, list(task_perturbations(task).values()))


def test_a_rollout_keeps_what_each_perturbation_changed(lift_runner):
    episode = rollout("lift", ScriptedExpert("lift"), ["light_dim", "event_cube_nudge"], seed=0, record=True)
    dim, nudge = episode.receipts
    assert dim["perturbation"] == "light_dim" and dim["step"] is None and set(dim["model"]) >= {"light_diffuse"}
    assert dim["pixels"] > 10  # a dimmer scene: grey levels, mean over the frame, from the nominal first frame
    assert nudge["perturbation"] == "event_cube_nudge" and nudge["step"] == 12 and nudge["state"]["qvel"] > 0
    assert not nudge["model"] and "pixels" not in nudge  # events act mid-episode: no first-frame comparison


def test_a_perturbation_that_changes_nothing_is_refused():
    with pytest.raises(ValueError, match="perturbation 'cube_same_mass' changes nothing in task 'lift'"):
        check_effects("lift", [UNIT_MASS])
    with pytest.raises(ValueError, match="changes nothing"):
        rollout("lift", ScriptedExpert("lift"), [UNIT_MASS], seed=0)


def test_the_search_refuses_a_no_op_candidate_and_stores_receipts_with_each_rollout(tmp_path):
    from test_search_cli import config

    from diagnosis.search import run_search

    mine = tmp_path / "mine.yaml"
    mine.write_text("- {name: cube_same_mass, family: object_mass, description: same mass, scale: 1.0}\n")
    with pytest.raises(ValueError, match="'cube_same_mass' changes nothing"):
        run_search(config(f"task.perturbation_file={mine}", "task.perturbations=[cube_same_mass]"), tmp_path / "a")
    run_search(config("search=uniform", "search.total_rollouts=4"), tmp_path / "b")
    with h5py.File(tmp_path / "b" / "failures.hdf5", "r") as file:
        receipts = json.loads(file["data/demo_0"].attrs["receipts"])
        names = json.loads(file["data/demo_0"].attrs["perturbations"])
    assert [r["perturbation"] for r in receipts] == names and receipts[0]["model"]
    report = (tmp_path / "b" / "report.html").read_text()
    assert "<p class=receipt>" in report and "grey levels on average" in report  # the top modes show what changed


def test_a_receipt_reads_as_one_line():
    from envs.receipts import describe

    receipt = {"perturbation": "light_dim", "model": {"light_diffuse": [3, 0.455]}, "state": {}, "filters": []}
    assert describe({**receipt, "step": None, "pixels": 56.49}) == (
        "light_dim: light_diffuse ×3 (by up to 0.455); the first frame moved 56.5 grey levels on average"
    )
    nudge = {"perturbation": "shove", "model": {}, "state": {"qvel": 0.6}, "filters": [], "step": 12}
    assert describe(nudge) == "shove at step 12: qvel moved by up to 0.6"
