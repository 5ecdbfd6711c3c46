import json

import numpy as np
import pytest

from diagnosis.bandits import RandomAllocation, ThompsonSampling, TopKIdentification, UniformAllocation
from diagnosis.evaluation import compare, load_ground_truth, significant_pairs, top_k_hits
from diagnosis.ranking import Ranking


def write_truth(path, rates, episodes=20, task="lift", policy="p"):
    from experiments.ground_truth import entry

    rows = [
        entry(name, name, "f", [i < round(rate * episodes) for i in range(episodes)]) for name, rate in rates.items()
    ]
    path.write_text(json.dumps({"task": task, "policy": policy, "episodes": episodes, "perturbations": rows}))
    return path


def test_metrics_of_a_peaked_and_a_flat_ranking():
    peaked = Ranking(("a", "b", "c", "d"), np.array([1.0, 0.0, 0.0, 0.0]))
    assert peaked.entropy() == 0 and peaked.severity_index() == 1.0 and peaked.failure_modes() == ["a"]
    flat = Ranking(("a", "b", "c", "d"), np.full(4, 0.3))
    assert flat.entropy() == pytest.approx(np.log(4)) and flat.severity_index() == pytest.approx(
        (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4
    )
    assert flat.failure_modes() == []  # nothing is more failure-prone than uniform
    assert Ranking(("a", "b"), np.array([0.2, 0.6])).probabilities == pytest.approx([0.25, 0.75])


def test_bad_rankings_are_refused():
    with pytest.raises(ValueError, match="2 names but 1 scores"):
        Ranking(("a", "b"), np.array([1.0]))
    with pytest.raises(ValueError, match="finite and non-negative"):
        Ranking(("a",), np.array([np.nan]))


def test_pairwise_accuracy_counts_only_significant_pairs(tmp_path):
    truth = load_ground_truth(write_truth(tmp_path / "gt.json", {"a": 0.0, "b": 0.05, "c": 0.9, "d": 1.0}))
    assert set(significant_pairs(truth, ["a", "b", "c", "d"])) == {("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")}
    right = Ranking(("a", "b", "c", "d"), np.array([0.4, 0.3, 0.2, 0.1]))
    assert compare(right, truth)["pairwise_accuracy"] == 1.0
    # Swapping a and b (not significantly different) costs nothing; swapping b and c costs one pair of four.
    assert compare(Ranking(("a", "b", "c", "d"), np.array([0.3, 0.4, 0.2, 0.1])), truth)["pairwise_accuracy"] == 1.0
    result = compare(Ranking(("a", "b", "c", "d"), np.array([0.4, 0.2, 0.3, 0.1])), truth)
    assert result["pairwise_accuracy"] == 0.75 and result["significant_pairs"] == 4
    tied = compare(Ranking(("a", "b", "c", "d"), np.full(4, 0.25)), truth)
    assert tied["pairwise_accuracy"] == 0.5  # ties count half
    assert compare(right, truth)["kendall_tau"] > 0.9


def test_top_k_hits_count_ties_at_the_boundary_as_truly_worst(tmp_path):
    # a, b and c always fail: all three are the "true top 2".
    truth = load_ground_truth(write_truth(tmp_path / "gt.json", {"a": 0.0, "b": 0.0, "c": 0.0, "d": 1.0}))
    one_hit = top_k_hits(Ranking(("a", "b", "c", "d"), np.array([0.1, 0.2, 0.3, 0.4])), truth, 2)
    assert one_hit == {"precision": 0.5, "recall": pytest.approx(1 / 3)}
    two_hits = top_k_hits(Ranking(("a", "b", "c", "d"), np.array([0.1, 0.4, 0.3, 0.2])), truth, 2)
    assert two_hits == {"precision": 1.0, "recall": pytest.approx(2 / 3)}
    metrics = compare(Ranking(("a", "b", "c", "d"), np.array([0.1, 0.4, 0.3, 0.2])), truth, ks=(2, 10))
    assert metrics["top2_precision"] == 1.0 and metrics["top10_recall"] == 1.0  # k beyond the list: all of it


def test_ground_truth_for_another_policy_is_an_error(tmp_path):
    path = write_truth(tmp_path / "gt.json", {"a": 0.0, "b": 1.0}, policy="lift_bc_lowdim")
    with pytest.raises(ValueError, match="policy 'lift_bc_lowdim', not 'lift_bc_image'"):
        load_ground_truth(path, "lift", "lift_bc_image")


def test_uniform_cycles_and_bandits_rank_by_posterior_mean():
    bandit = UniformAllocation(arms=3)
    pulled = []
    for _ in range(3):
        arms = bandit.select(2)
        pulled += arms.tolist()
        for arm in arms:
            bandit.update(int(arm), failed=arm == 0)
    assert pulled == [0, 1, 2, 0, 1, 2]
    assert bandit.posterior_mean() == pytest.approx([3 / 4, 1 / 4, 1 / 4])


def test_thompson_concentrates_on_the_failing_arm():
    rng = np.random.default_rng(0)
    truth = np.array([0.9, 0.1, 0.1, 0.1])
    thompson, random = ThompsonSampling(arms=4, seed=0), RandomAllocation(arms=4, seed=0)
    for bandit in (thompson, random):
        for _ in range(100):
            arm = int(bandit.select(1)[0])
            bandit.update(arm, bool(rng.random() < truth[arm]))
    assert thompson.pulls[0] > 60 and random.pulls[0] < 40
    assert np.argmax(thompson.posterior_mean()) == 0


def pull_until_settled(bandit, truth, rng, budget):
    spent = 0
    while spent < budget and not bandit.settled():
        for arm in bandit.select(2):
            bandit.update(int(arm), bool(rng.random() < truth[arm]))
        spent += 2
    return spent


def test_lucb_settles_the_top_k_with_fewer_rollouts_than_uniform_needs():
    truth = np.array([0.95, 0.9, 0.5, 0.3, 0.1, 0.05, 0.0, 0.0])
    bandit = TopKIdentification(arms=8, seed=0, top_k=2, tolerance=0.2)
    assert not bandit.settled()  # nothing pulled: the warm-up comes first
    spent = pull_until_settled(bandit, truth, np.random.default_rng(0), budget=20 * 8)
    assert bandit.settled() and spent < 20 * 8
    assert set(np.argsort(-bandit.posterior_mean())[:2]) == {0, 1}
    assert bandit.pulls[[0, 1, 2]].sum() > bandit.pulls[[5, 6, 7]].sum()  # rollouts went to the boundary


def test_lucb_without_tolerance_does_not_settle_a_tie_across_the_k_th_place():
    bandit = TopKIdentification(arms=4, seed=0, top_k=1, tolerance=0.0)
    assert pull_until_settled(bandit, np.array([1.0, 1.0, 0.0, 0.0]), np.random.default_rng(0), budget=200) == 200


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"top_k": 0}, "top_k must be between 1 and 3"),
        ({"confidence": 1.0}, "confidence must lie strictly between 0 and 1"),
        ({"tolerance": -0.1}, r"tolerance must lie in \[0, 1\)"),
        ({"warmup": 0}, "warmup must be >= 1"),
    ],
)
def test_lucb_refuses_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        TopKIdentification(arms=4, **{"top_k": 1, **settings})


@pytest.mark.parametrize(
    "content, message",
    [
        ("{", "is not valid JSON"),
        ('{"task": "lift"}', "is not a ground-truth file"),
        ('{"task": "lift", "policy": "p", "perturbations": [{"perturbation": "a"}]}', "is not a ground-truth file"),
    ],
)
def test_a_damaged_ground_truth_file_is_one_clear_error(tmp_path, content, message):
    from diagnosis.evaluation import load_ground_truth

    path = tmp_path / "truth.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_ground_truth(path, "lift", "p")


def test_all_pair_correlations_and_where_the_budget_went(tmp_path):
    from scipy.stats import spearmanr

    from diagnosis.evaluation import budget_on_worst, compare, load_ground_truth, truly_worst

    rates = {"a": 0.0, "b": 0.0, "c": 0.5, "d": 0.9, "e": 1.0}  # success rates: a, b fail most
    truth = load_ground_truth(write_truth(tmp_path / "t.json", rates), "lift", "p")
    ranking = Ranking(tuple(rates), np.array([0.9, 0.5, 0.6, 0.2, 0.1]))
    result = compare(ranking, truth, ks=(1,))
    failure = [1 - rates[n] for n in rates]
    assert result["spearman_rho"] == pytest.approx(spearmanr(ranking.scores, failure).statistic)
    assert result["all_pairs"] == 10 and result["significant_pairs"] < 10
    assert truly_worst(truth, list(rates), 1) == {"a", "b"}  # tied at the top: both count
    spent = [["a"], ["c"], ["b", "d"], ["e"]]
    assert budget_on_worst(spent, truth, list(rates), 1) == 0.5


def test_untied_pairs_rate_error_coverage_bootstrap_and_rollouts_to_target(tmp_path):
    from diagnosis.estimation import failure_rate
    from diagnosis.evaluation import bootstrap_mean, rate_error, rollouts_to_target

    rates = {"a": 0.0, "b": 0.0, "c": 0.5, "d": 0.9}  # success rates; a and b tie
    truth = load_ground_truth(write_truth(tmp_path / "t.json", rates), "lift", "p")
    result = compare(Ranking(tuple(rates), np.array([0.9, 0.5, 0.6, 0.2])), truth, ks=(1,))
    # Untied pairs (a worse than b by ground truth): a>c, a>d, b>c, b>d, c>d; the scores get all but b>c right.
    assert result["untied_pairs"] == 5 and result["untied_pair_accuracy"] == pytest.approx(4 / 5)
    rows = [
        {"perturbation": "a", "tried_alone": 10, "failed_alone": 10, **failure_rate(10, 10)},
        {"perturbation": "c", "tried_alone": 10, "failed_alone": 1, **failure_rate(1, 10)},  # true 0.5: missed
        {"perturbation": "d", "tried_alone": 0, "failed_alone": 0, **failure_rate(0, 0)},  # never tried alone
    ]
    error = rate_error(rows, truth)
    assert error["rated"] == 2 and error["rate_mae"] == pytest.approx((0.0 + 0.4) / 2)
    assert error["interval_coverage"] == 0.5  # 1/10 failed: [0.02, 0.40] does not hold 0.5
    mean, low, high = bootstrap_mean([0.8, 0.9, 1.0])
    assert mean == pytest.approx(0.9) and 0.8 <= low < mean < high <= 1.0
    curve = [
        {"rollouts": 10, "m": 0.5},
        {"rollouts": 20, "m": 0.91},
        {"rollouts": 30, "m": 0.85},
        {"rollouts": 40, "m": 0.95},
    ]
    assert rollouts_to_target(curve, "m", 0.9) == 40  # reached at 20, lost at 30: it must stay there
    assert rollouts_to_target(curve, "m", 0.99) is None


def test_interacting_pairs_are_those_failing_beyond_independent_parts(tmp_path):
    from diagnosis.evaluation import interacting

    rates = {"a": 1.0, "b": 1.0, "c": 0.0, "a+b": 0.0, "a+c": 0.0}  # success: a and b alone never fail
    truth = load_ground_truth(write_truth(tmp_path / "gt.json", rates, policy="lift_bc_image"))
    assert interacting(truth) == {"a+b"}  # a+c fails because c alone does
    ranking = Ranking(tuple(rates), np.array([0.0, 0.0, 1.0, 0.9, 0.95]))
    metrics = compare(ranking, truth)
    assert metrics["top10_interaction_precision"] == 0.5 and metrics["interacting"] == 1
    assert "interacting" not in compare(Ranking(("a", "c"), np.array([0.0, 1.0])), truth)  # no composed candidates
