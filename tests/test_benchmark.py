from tests.test_ranking import write_truth


def test_spread_counts_zero_graded_and_robust_cases():
    from experiments.benchmark import Spread

    spread = Spread.of([0.0, 0.0, 0.1, 0.15, 0.5, 0.85, 0.9, 1.0])
    assert spread == Spread(cases=8, at_zero=2, graded=3, robust=2)  # 0.1 is neither graded nor at zero


def test_benchmark_lists_every_policy_and_the_command_of_a_missing_ground_truth(tmp_path):
    from experiments.benchmark import main, policies_under_test

    rates = {"nominal": 0.9, "a": 0.0, "b": 0.5, "c": 0.95, "d": 0.2, "e": 1.0}
    write_truth(tmp_path / "ground_truth_lift_bc_image.json", rates, policy="lift_bc_image")
    # c+e: two perturbations the policy shrugs off alone that break it together; a+c fails no more than a alone
    pairs = {"a+b": 0.3, "a+c": 0.0, "c+e": 0.0}
    write_truth(tmp_path / "ground_truth_lift_bc_image_pairs.json", pairs, policy="lift_bc_image")
    main([f"results={tmp_path}"])
    table = (tmp_path / "benchmark.md").read_text()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("| ")]
    rows = {row[0]: row for row in cells[1:]}
    assert {f"{p.task}/{p.name}" for p in policies_under_test()} <= set(rows)
    measured = rows["lift/lift_bc_image"]
    # nominal 0.90 (ground truth); 5 singles: 1 at zero, 2 graded, 2 robust; 3 pairs, 1 graded, 1 interacting
    assert measured[3:] == ["0.90", "5", "1 (20%)", "2", "2", "3 (1 graded, 1 interacting)", "—"]
    assert "python -m experiments.ground_truth task=can policy=can_bc_image" in " ".join(rows["can/can_bc_image"])
    assert (tmp_path / "benchmark.png").stat().st_size > 0
