"""What a person reads: the progress line in a log, the radar at many candidates, the monitor's captions."""

import io

import matplotlib.pyplot as plt
import pytest
from rich.console import Console

from diagnosis.printout import monitor_lines
from diagnosis.progress import SearchProgress, clock
from diagnosis.report import RADAR_LABELS, monitor_caption, radar_plot


def test_progress_off_a_terminal_prints_plain_lines_every_n_rollouts():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with SearchProgress(console, total=100, done=0, every=20) as progress:
        for done in range(2, 101, 2):
            progress.update(done, failures=done // 2, info="top: a, b")
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 5
    assert lines[0].startswith("search 20/100 rollouts, 10 failures, elapsed 0:00:0")
    assert "ETA" in lines[0] and lines[-1].startswith("search 100/100 rollouts, 50 failures")
    assert "━" not in out.getvalue()  # no bar fragments in a log


def test_progress_line_estimates_time_left_from_this_sessions_rate():
    progress = SearchProgress(Console(file=io.StringIO()), total=400, done=100)
    assert progress.line(150, 7, 60.0).endswith("elapsed 0:01:00, ETA 0:05:00")
    assert clock(3725) == "1:02:05"
    with pytest.raises(ValueError, match="every must be >= 1"):
        SearchProgress(Console(), total=1, done=0, every=0)


def summary_with(candidates: int) -> dict:
    ranking = [
        {
            "rank": i + 1,
            "perturbation": f"perturbation_with_a_long_name_{i:03d}",
            "search_score": 1.0 / (i + 2),
            "failure_rate": 0.5,
            "failure_rate_low": 0.2,
            "failure_rate_high": 0.8,
            "failed_alone": 5,
            "tried_alone": 10,
            "ground_truth_success": 0.4,
        }
        for i in range(candidates)
    ]
    total = sum(r["search_score"] for r in ranking)
    for r in ranking:
        r["search_score"] /= total
    return {"ranking": ranking, "method": "ppo", "policy": "p", "task": "lift", "budget": {"rollouts_done": 400}}


@pytest.mark.parametrize("candidates", [36, 100])
def test_radar_names_only_the_top_modes_and_lists_them_in_bars(tmp_path, monkeypatch, candidates):
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to inspect it
    radar_plot(summary_with(candidates), tmp_path / "radar.png")
    assert (tmp_path / "radar.png").stat().st_size > 10_000
    polar, bars = figures[0].axes
    named = [label.get_text() for label in polar.get_xticklabels() if label.get_text()]
    assert len(named) == RADAR_LABELS and "perturbation_with_a_long_name_000" in named
    listed = [label.get_text() for label in bars.get_yticklabels()]
    assert listed[0] == "1. perturbation_with_a_long_name_000" and len(listed) == min(candidates, 25)


def test_monitor_text_tells_prediction_from_detection_and_the_overrun_rule_apart():
    caption = monitor_caption(
        {"first_anomaly": 0, "acting_from": 6, "first_failure_acting": 14, "first_late": 49, "failure": True}
    )
    assert caption == (
        "first anomaly at step 0 (before the robot moved); first failure verdict once the robot moved (step 6) at "
        "step 14; overrun rule from step 49"
    )
    agreement = {
        "true_positive": 9,
        "sim_failures": 10,
        "tpr": 0.9,
        "true_negative": 3,
        "sim_successes": 5,
        "tnr": 0.6,
        "without_overrun": {"true_positive": 4, "tpr": 0.4, "tnr": 0.8},
        "predicted": 7,
        "median_first_anomaly": 0.0,
        "median_first_failure_acting": 12.0,
    }
    first, second = monitor_lines(agreement)
    assert "TPR 0.90; without the overrun rule 4, TPR 0.40" in first and "without the rule 0.80" in first
    assert second.startswith("failure prediction vs detection: 7 of the 9 caught failures were flagged before")


def test_plain_summary_counts_failing_robust_and_unsettled_modes_by_family():
    from diagnosis.estimation import failure_rate
    from diagnosis.printout import plain_summary

    def row(name, family, failed, tried):
        return {"perturbation": name, "family": family, "tried_alone": tried, **failure_rate(failed, tried)}

    summary = {
        "policy": "p",
        "budget": {"rollouts_done": 80},
        "ranking": [
            row("red", "cube_color", 20, 20),
            row("blue", "cube_color", 19, 20),
            row("dim", "light", 18, 20),
            row("heavy", "object_mass", 0, 20),
            row("shift", "camera_pose", 1, 2),
            row("tilt", "camera_pose", 0, 0),
        ],
    }
    assert plain_summary(summary) == (
        "Of 6 perturbations, 3 make p fail more often than not (95% interval of the failure rate above 0.5): "
        "cube_color (2), light (1); 1 leave it failing less than 20% of the time (interval below 0.2); 1 are not yet "
        "settled either way at 80 rollouts, and 1 were never tried alone."
    )
