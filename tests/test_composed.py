"""Composed perturbations: parts applied together as one candidate, the seeded pair sample the ground truth and the
search share, definitions that round-trip, and a search over singles and pairs."""

import json

import h5py
import numpy as np
import pytest
from test_search_cli import config

from diagnosis.dataset import restore_first_state
from diagnosis.pair_matrix import pair_matrix
from diagnosis.search import prepare, run_search
from envs.perturbations import task_perturbations
from envs.perturbations.composed import Composed, compose, sampled_pairs
from envs.perturbations.user import perturbation_from_dict, to_dict
from envs.rollout import Runner


@pytest.fixture(scope="module")
def catalogue():
    return task_perturbations("lift")


def test_pair_sample_is_seeded_and_every_pair_can_act_together(catalogue):
    pairs = sampled_pairs(catalogue, 20, seed=0)
    assert [p.name for p in pairs] == [p.name for p in sampled_pairs(catalogue, 20, seed=0)]
    assert [p.name for p in pairs] != [p.name for p in sampled_pairs(catalogue, 20, seed=1)]
    for pair in pairs:
        a, b = pair.parts
        assert pair.name == f"{a.name}+{b.name}" and a.family != b.family and a.at_step is None is b.at_step
    with pytest.raises(ValueError, match=r"pairs must be in \[1, "):
        sampled_pairs(catalogue, 0, seed=0)


def test_a_composed_perturbation_shows_the_scene_its_parts_show_together(catalogue):
    parts = [catalogue["cube_color_red"], catalogue["light_dim"]]
    runner = Runner("lift")
    together = runner.first_frame([compose(parts)], seed=3)
    np.testing.assert_array_equal(together, runner.first_frame(parts, seed=3))
    assert not np.array_equal(together, runner.first_frame(parts[:1], seed=3))
    runner.close()


@pytest.mark.parametrize(
    "parts, message",
    [
        (["cube_color_red"], "needs two or more perturbations"),
        (["cube_color_red", "cube_color_blue"], "two parts change cube_color_red's family on one object"),
    ],
)
def test_parts_that_cannot_act_together_are_refused(catalogue, parts, message):
    with pytest.raises(ValueError, match=message):
        Composed(name="x", description="x", parts=tuple(catalogue[p] for p in parts))


def test_a_step_time_part_is_refused(catalogue):
    event = next(p for p in catalogue.values() if p.at_step is not None)
    with pytest.raises(ValueError, match="must be a single reset-time perturbation"):
        compose([catalogue["cube_color_red"], event])


def test_definition_round_trips_with_its_parts(catalogue):
    pair = compose([catalogue["cube_color_red"], catalogue["light_dim"]])
    definition = json.loads(json.dumps(to_dict(pair)))
    assert definition["family"] == "composed" and [p["name"] for p in definition["parts"]] == [
        "cube_color_red",
        "light_dim",
    ]
    assert perturbation_from_dict(definition) == pair
    with pytest.raises(ValueError, match="part 2: unknown family 'paint'"):
        perturbation_from_dict({**definition, "parts": [definition["parts"][0], {"family": "paint", "name": "p"}]})


def test_search_over_singles_and_pairs_counts_each_pair_as_its_own_mode(tmp_path):
    cfg = config(
        "search=uniform",
        "search.total_rollouts=4",
        "task.perturbations=[table_color_blue,cube_color_red]",
        "task.pairs=2",
    )
    summary = run_search(cfg, tmp_path)
    pairs = [p.name for p in sampled_pairs(task_perturbations("lift"), 2, seed=0)]
    rows = {r["perturbation"]: r for r in summary["ranking"]}
    assert set(rows) == {"table_color_blue", "cube_color_red", *pairs}
    assert all(rows[name]["tried_alone"] == 1 and rows[name]["family"] == "composed" for name in pairs)
    assert '<img src="pairs.png">' in (tmp_path / "report.html").read_text() and (tmp_path / "pairs.png").is_file()
    runner = Runner(prepare(cfg, tmp_path / "again").spec.task)
    with h5py.File(tmp_path / "failures.hdf5", "r") as file:
        demo = next(d for d in file["data"].values() if json.loads(d.attrs["perturbations"]) == [pairs[0]])
        np.testing.assert_array_equal(restore_first_state(runner, demo), demo["obs/agentview_image"][0])
    runner.close()


def test_negative_pairs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="task.pairs must be >= 0, got -1"):
        prepare(config("task.pairs=-1"), tmp_path)


def test_the_pair_matrix_puts_each_pair_off_the_diagonal_and_its_parts_alone_on_it():
    def row(name, failed, tried):
        return {"perturbation": name, "failed_alone": failed, "tried_alone": tried}

    ranking = [row("a+b", 4, 5), row("b", 1, 4), row("a", 0, 3), row("c", 2, 2), row("b+d", 0, 0)]
    matrix = pair_matrix(ranking)
    assert matrix.names == ("b", "a", "d")  # parts the run tried alone first, in ranking order; c is no part
    np.testing.assert_array_equal(matrix.failed, [[1, 4, 0], [4, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(matrix.tried, [[4, 5, 0], [5, 3, 0], [0, 0, 0]])
    rates = matrix.rates
    assert rates[0, 1] == rates[1, 0] == 0.8 and rates[0, 0] == 0.25 and np.isnan(rates[2, 2])
    assert pair_matrix([row("a", 0, 3)]) is None
