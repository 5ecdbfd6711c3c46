import json

import pytest

from diagnosis.estimation import wilson_interval
from envs.perturbations import task_perturbations
from envs.tasks import get_task
from experiments.ground_truth import entry


@pytest.mark.parametrize(
    "k, n, expected",
    [(0, 20, (0.0, 0.1611)), (10, 20, (0.2993, 0.7007)), (20, 20, (0.8389, 1.0)), (3, 10, (0.1078, 0.6032))],
)
def test_wilson_interval_matches_published_values(k, n, expected):
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(expected[0], abs=1e-4) and high == pytest.approx(expected[1], abs=1e-4)


def test_entry_records_rate_interval_and_outcomes():
    row = entry("cube_color_red", "the cube is red", "object_color", [True, False, True, True])
    assert row["success_rate"] == 0.75 and row["episodes"] == 4 and row["outcomes"] == [1, 0, 1, 1]
    assert row["wilson95"][0] < 0.75 < row["wilson95"][1]


@pytest.mark.slow  # rollouts of pairs; composed candidates are rolled out in test_composed
def test_pairs_are_a_seeded_sample_of_compatible_pairs_evaluated_like_singles(tmp_path):
    from experiments.ground_truth import main, pair_cases

    catalogue = task_perturbations("lift")
    first, again = pair_cases(catalogue, 5, seed=0), pair_cases(catalogue, 5, seed=0)
    assert first == again and len({c.name for c in first}) == 5  # the same pairs for every policy
    assert all(a.family != b.family and a.at_step is None is b.at_step for a, b in (c.perturbations for c in first))
    with pytest.raises(SystemExit, match=r"pairs must be in \[1, \d+\]"):
        main(["task=lift", "policy=scripted", "kind=pairs", "pairs=100000", f"out={tmp_path}"])
    main(["task=lift", "policy=scripted", "episodes=1", "workers=1", "kind=pairs", "pairs=2", f"out={tmp_path}"])
    rows = json.loads((tmp_path / "ground_truth_lift_scripted_pairs.json").read_text())["perturbations"]
    assert [r["perturbation"] for r in rows] == [c.name for c in pair_cases(catalogue, 2, seed=0)]
    assert all(len(r["parts"]) == 2 and r["episodes"] == 1 for r in rows)


def test_sweeps_walk_seven_points_along_each_parameter_inside_its_bounds():
    from envs.receipts import check_effects
    from experiments.ground_truth import sweep_cases

    cases = sweep_cases(get_task("lift"), task_perturbations("lift"))
    by_parameter = {}
    for case in cases:
        by_parameter.setdefault((case.family, dict(case.extra)["parameter"]), []).append(case)
    assert len(by_parameter) >= 6 and all(len(points) == 7 for points in by_parameter.values())
    assert len({c.name for c in cases}) == len(cases)
    check_effects("lift", [c.perturbations[0] for c in cases])  # no point is the nominal value
