"""Failure boundaries: the grid along a sweep, the logistic model's crossing and its bisection, and the CLI."""

import numpy as np
import pytest
from test_search_cli import config

from diagnosis.boundary import BoundarySearch
from diagnosis.search import prepare, run_search
from envs.perturbations import task_perturbations
from envs.perturbations.sweeps import SWEEPS, boundary_grid, sweep_points
from experiments.boundary_comparison import sweep_crossing


def test_grid_runs_from_the_nominal_side_outwards_and_holds_the_sweep_points():
    catalogue = task_perturbations("lift")
    grid = boundary_grid("lift", catalogue, "camera_pose", side="below", points=9)
    sweep_names = {p.name for sweep, _, p in sweep_points("lift", catalogue) if sweep.family == "camera_pose"}
    on_side = {n for n in sweep_names if "offset_-" in n}
    assert on_side <= {p.name for p in grid.perturbations}
    assert grid.scalars[0] == -0.02 and grid.scalars[-1] == -0.15  # nearest the nominal 0 first
    assert grid.positions[0] == 0.0 and grid.positions[-1] == 1.0 and np.all(np.diff(grid.positions) > 0)
    assert all(p.offset[0] == x for p, x in zip(grid.perturbations, grid.scalars))


@pytest.mark.parametrize(
    "family, side, message",
    [
        ("gripper", None, "no sweep for family 'gripper'; valid: " + ", ".join(s.family for s in SWEEPS)),
        ("action_noise", "sideways", "boundary side must be one of above, below, got 'sideways'"),
        ("action_noise", "below", "fewer than two points below its nominal value 0"),
    ],
)
def test_grid_refuses_what_it_cannot_build(family, side, message):
    with pytest.raises(ValueError, match=message):
        boundary_grid("lift", task_perturbations("lift"), family, side)


def search_on(curve, allocation, rollouts=400, seed=0):
    positions = np.linspace(0.0, 1.0, 11)
    bandit = BoundarySearch(
        arms=11, seed=seed, positions=tuple(positions), values=tuple(1 + positions), allocation=allocation
    )
    rng = np.random.default_rng(seed)
    spent = 0
    while spent < rollouts and not bandit.settled():
        for arm in bandit.select(2):
            bandit.update(int(arm), failed=bool(rng.random() >= curve(positions[arm])))
        spent += 2
    return bandit, spent


def test_bisection_settles_on_the_crossing_with_rollouts_gathered_around_it():
    def logistic(t):
        return 1.0 / (1.0 + np.exp(-(4.0 - 10.0 * t)))  # success crosses one half at t = 0.4

    bandit, spent = search_on(logistic, "bisection")
    assert bandit.settled() and spent < 400
    crossing = bandit.crossing()
    assert crossing["low"] <= 0.4 <= crossing["high"] and crossing["width"] <= 0.1
    assert bandit.pulls[3:6].sum() > bandit.pulls[8:].sum()  # around t = 0.4, not at the far end
    report = bandit.report()["boundary"]
    assert report["verdict"] == "success falls below one half inside the grid"
    assert report["crossing_low"] <= 1.4 <= report["crossing_high"]  # in the parameter's units (1 + t)
    uniform, _ = search_on(logistic, allocation="uniform", rollouts=44)
    assert np.all(uniform.pulls == 4)


def test_a_policy_that_never_falls_below_one_half_is_said_to_stay_above_it():
    bandit, spent = search_on(lambda t: 0.95, "uniform")
    assert bandit.settled() and spent < 400 and bandit.crossing()["p_beyond"] >= 0.95
    assert bandit.report()["boundary"]["verdict"] == "success stays above one half over the whole grid"


def test_sweep_crossing_interpolates_where_success_first_falls_below_one_half():
    assert sweep_crossing([0.0, 0.5, 1.0], [0.9, 0.7, 0.3]) == pytest.approx(0.75)
    assert sweep_crossing([0.0, 1.0], [0.4, 0.1]) == 0.0 and sweep_crossing([0.0, 1.0], [0.9, 0.6]) is None


def test_cli_boundary_search_writes_the_crossing_and_the_named_curve(tmp_path):
    summary = run_search(
        config(
            "search=boundary",
            "search.family=action_noise",
            "search.points=5",
            "search.total_rollouts=6",
            "search.hyperparameters.warmup=1",
        ),
        tmp_path,
    )
    boundary = summary["boundary"]
    assert len(boundary["curve"]) == 5 and boundary["curve"][0]["perturbation"] == "action_noise_std_0.02"
    assert boundary["crossing_low"] <= boundary["crossing"] <= boundary["crossing_high"]
    assert (tmp_path / "boundary.png").stat().st_size > 0
    assert 'src="boundary.png"' in (tmp_path / "report.html").read_text()
    assert summary["budget"]["rollouts_done"] == 6 and {r["perturbation"] for r in summary["ranking"]} == {
        p["perturbation"] for p in boundary["curve"]
    }


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["search.family=gripper"], "no sweep for family 'gripper'"),
        (["+search.hyperparameters.positions=[0,1]"], "search.hyperparameters.positions comes from search.family"),
        (["search.hyperparameters.allocation=greedy"], "unknown allocation 'greedy'; valid: bisection, uniform"),
    ],
)
def test_bad_boundary_input_is_refused_before_any_rollout(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        prepare(config("search=boundary", *overrides), tmp_path)


@pytest.mark.slow  # two searches of full-horizon rollouts; the boundary CLI itself is tested above
def test_boundary_comparison_judges_both_allocations_on_the_sweep(tmp_path, monkeypatch):
    from test_ranking import write_truth
    from test_search_cli import FAKE

    from experiments import boundary_comparison

    sweep = next(s for s in SWEEPS if s.family == "action_noise")
    success = dict(zip(sweep.values, (1.0, 1.0, 0.9, 0.6, 0.2, 0.0, 0.0)))
    rates = {f"action_noise_std_{v:g}": rate for v, rate in success.items()}
    write_truth(tmp_path / "gt_sweeps.json", rates, policy=FAKE)
    monkeypatch.setattr(boundary_comparison, "default_ground_truth_path", lambda policy, task: tmp_path / "gt.json")
    boundary_comparison.main(
        [
            f"policy={FAKE}",
            "families=action_noise:above",
            "seeds=1",
            "budget_share=0.05",
            "n_envs=1",
            f"out={tmp_path}",
            f"runs={tmp_path / 'runs'}",
        ]
    )
    (written,) = tmp_path.glob("boundary_*.md")
    rows = [[c.strip() for c in line.split("|")] for line in written.read_text().splitlines()]
    rows = [row for row in rows if len(row) > 2 and row[1].startswith("action_noise")]
    assert [row[2] for row in rows] == ["uniform", "bisection"]
    assert all(row[3] == "7 of 7 (140 in the sweep)" for row in rows)  # capped at 5% of the sweep's rollouts
    assert all(0.2 < float(row[5]) < 0.4 for row in rows)  # the sweep falls from 0.6 at 0.2 to 0.2 at 0.4
