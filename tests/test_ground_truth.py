import pytest

from diagnosis.estimation import wilson_interval
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
