"""The search comparison end to end on a fake fast policy: rows per budget, a self-stopping method's `at stop` row,
failure-rate error against the ground truth, and the verdict lines naming each target as met or missed."""

import json

import numpy as np
import pytest
from test_ranking import write_truth
from test_search_cli import FAKE

from experiments import search_comparison


@pytest.mark.slow  # an experiment script end to end (several searches)
def test_comparison_reports_every_method_at_every_budget_and_where_lucb_stopped(tmp_path, monkeypatch, capsys):
    truth = write_truth(
        tmp_path / "truth.json", {"table_color_blue": 0.0, "cube_color_red": 1.0}, policy=FAKE
    )  # success
    monkeypatch.setattr(search_comparison, "default_ground_truth_path", lambda policy, task: truth)
    overrides = (
        "task.horizon=40 task.perturbations=[table_color_blue,cube_color_red] lucb:search.hyperparameters.top_k=1"
    )
    search_comparison.main(
        [
            f"policy={FAKE}",
            "methods=uniform,lucb",
            "budgets=10",
            "seeds=1",
            "reference_per_perturbation=6",
            "n_envs=1",
            f"out={tmp_path}",
            f"runs={tmp_path / 'runs'}",
            f"overrides={overrides}",
        ]
    )
    (written,) = tmp_path.glob("search_*.json")  # named after the policy
    results = json.loads(written.read_text())["results"]
    assert set(results["uniform"]["budgets"]) == {"10", "12"}  # the reference: 6 rollouts per perturbation
    lucb = results["lucb"]
    stopped = lucb["budgets"]["at stop"]
    # The fake policy fails exactly the blue scene: 4 rollouts of each arm settle the top 1 at tolerance 0.2.
    assert lucb["settled_at"] == [8] and stopped["rollouts"] == 8 and set(lucb["budgets"]) == {"at stop"}
    assert stopped["rate_mae"][0] == 0.0 and stopped["top5_precision"][0] == 1.0
    report = written.with_suffix(".md").read_text()
    assert "**Reference:** uniform with 6 rollouts per perturbation (12 rollouts)" in report
    assert "- uniform: reaches both with 10 rollouts (83% of the reference)" not in report  # more than half of it
    assert "- lucb: does not reach both within 50% of the reference's rollouts; at 8 rollouts" in report
    assert "failure-rate error 0.000 (met: <= 0.1)" in report
    printed = capsys.readouterr().out
    assert (
        "top 1 settled at confidence 95% (tolerance 0.2) after 8 rollouts: 4 of the 12-rollout budget saved" in printed
    )


def test_allocation_simulation_scores_each_allocation_against_drawn_truths(tmp_path):
    from experiments.allocation_simulation import main, top_k_precision

    assert top_k_precision(np.array([0.9, 0.8, 0.1]), np.array([1.0, 0.0, 0.5]), k=2) == 0.5
    main(["policies=lift:lift_bc_colour", "methods=uniform,lucb", "per_mode=2", "repetitions=2", f"out={tmp_path}"])
    table = (tmp_path / "allocation_simulation.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| lift/lift_bc_colour")]
    assert [row.split("|")[2].strip() for row in rows] == ["true rates (ceiling)", "uniform", "lucb"]
    assert "2 per mode (72)" in rows[1]
