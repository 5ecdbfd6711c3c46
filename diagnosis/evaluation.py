"""A ranking judged against ground truth: success rates from exhaustive plain rollouts (experiments.ground_truth).

Two views, always reported together:
- significant-pair accuracy (`pairwise_accuracy`): only pairs whose ground-truth success rates differ significantly
  (non-overlapping 95% Wilson intervals) count. With 20 episodes each, 0.40 against 0.45 is noise, and a ranking
  should not be rewarded or punished for ordering noise; but the pairs left are the easy ones (mostly 0/20 against
  8/20 or more), so this figure is not comparable with RoboMD's accuracy over all pairs.
- all-pair rank correlations: Kendall τ-b and Spearman ρ between the ranking's scores and the ground-truth failure
  rates, over every perturbation (ties handled by τ-b and by average ranks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr

from diagnosis.ranking import Ranking
from envs.json_files import read_json

RESULTS = Path(__file__).resolve().parent.parent / "experiments" / "results"


@dataclass(frozen=True)
class GroundTruthEntry:
    success_rate: float
    low: float
    high: float
    """95% Wilson interval of the success rate."""
    episodes: int


@dataclass(frozen=True)
class GroundTruth:
    task: str
    policy: str
    entries: dict[str, GroundTruthEntry]
    path: Path

    def failure_rate(self, name: str) -> float:
        return 1.0 - self.entries[name].success_rate


def ground_truth_stem(policy: str, task: str) -> str:
    """The name experiments.ground_truth gives a policy's files: the checkpoint's folder name, or `<task>_scripted`
    for the scripted expert (one name serves every task)."""
    return f"ground_truth_{task}_scripted" if policy == "scripted" else f"ground_truth_{Path(policy).name}"


def default_ground_truth_path(policy: str, task: str, kind: str = "singles") -> Path:
    """Where experiments.ground_truth writes a policy's file of this kind (singles, pairs, sweeps)."""
    suffix = "" if kind == "singles" else f"_{kind}"
    return RESULTS / f"{ground_truth_stem(policy, task)}{suffix}.json"


def load_ground_truth(path: str | Path, task: str | None = None, policy: str | None = None) -> GroundTruth:
    """Reads a ground-truth file; a file for another task or policy is an error, not a silent comparison."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; make it with python -m experiments.ground_truth")
    remake = "remake it with python -m experiments.ground_truth"
    data = read_json(path, fix=remake)
    try:
        entries = {
            row["perturbation"]: GroundTruthEntry(row["success_rate"], *row["wilson95"], row["episodes"])
            for row in data["perturbations"]
        }
        found = {"task": data["task"], "policy": data["policy"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a ground-truth file ({type(exc).__name__}: {exc}); {remake}") from None
    for what, wanted in (("task", task), ("policy", policy)):
        if wanted is not None and Path(found[what]).name != Path(wanted).name:
            raise ValueError(f"{path} is the ground truth of {what} {found[what]!r}, not {wanted!r}")
    return GroundTruth(found["task"], found["policy"], entries, path)


def with_pairs(singles: GroundTruth) -> GroundTruth:
    """The singles' ground truth and, where the policy has one, its pairs' (ground_truth_<policy>_pairs.json), as
    one: what a search over singles and composed pairs is judged on."""
    path = singles.path.with_name(f"{singles.path.stem}_pairs.json")
    if not path.is_file():
        return singles
    pairs = load_ground_truth(path, singles.task, singles.policy)
    return GroundTruth(singles.task, singles.policy, {**singles.entries, **pairs.entries}, singles.path)


def interacting(truth: GroundTruth) -> set[str]:
    """Composed cases (`a+b`) that fail significantly more often than their parts would acting independently:
    the case's failure interval lies wholly above 1 - Π(1 - f_part) even at the parts' upper bounds. These are
    the failures a search over single perturbations cannot find."""
    found = set()
    for name, entry in truth.entries.items():
        parts = name.split("+")
        if len(parts) < 2 or not all(part in truth.entries for part in parts):
            continue
        # A part's failure rate at its upper bound is one minus its success rate's lower bound.
        independent = 1.0 - float(np.prod([truth.entries[part].low for part in parts]))
        if 1.0 - entry.high > independent:
            found.add(name)
    return found


def significant_pairs(truth: GroundTruth, names: list[str]) -> list[tuple[str, str]]:
    """Pairs (a, b) where a fails significantly more often than b (a's interval lies wholly below b's)."""
    return [(a, b) for a in names for b in names if truth.entries[a].high < truth.entries[b].low]


TOP_KS = (5, 10)


def compare(ranking: Ranking, truth: GroundTruth, ks: Sequence[int] = TOP_KS) -> dict[str, float]:
    """Significant-pair accuracy (ties count half), Kendall τ-b and Spearman ρ over all perturbations, precision and
    recall of the true top k for each k in `ks`."""
    names = [n for n in ranking.names if n in truth.entries]
    if len(names) < 2:
        raise ValueError(f"ground truth {truth.path} covers {len(names)} of the ranked perturbations; need 2 or more")
    score = dict(zip(ranking.names, ranking.scores))
    pairs = significant_pairs(truth, names)
    untied = [(a, b) for a in names for b in names if truth.failure_rate(a) > truth.failure_rate(b)]

    def agreement(pairs: list[tuple[str, str]]) -> float:
        """Share of pairs (a truly worse than b) the scores order alike; a tied score counts half."""
        agree = [1.0 if score[a] > score[b] else 0.5 if score[a] == score[b] else 0.0 for a, b in pairs]
        return float(np.mean(agree)) if agree else float("nan")

    predicted = np.array([score[n] for n in names])
    actual = np.array([truth.failure_rate(n) for n in names])
    tau = kendalltau(predicted, actual).statistic
    rho = spearmanr(predicted, actual).statistic
    return {
        "pairwise_accuracy": agreement(pairs),
        "significant_pairs": len(pairs),
        "untied_pair_accuracy": agreement(untied),
        "untied_pairs": len(untied),
        "all_pairs": len(names) * (len(names) - 1) // 2,
        "kendall_tau": float(tau) if np.isfinite(tau) else float("nan"),
        "spearman_rho": float(rho) if np.isfinite(rho) else float("nan"),
        **{f"top{k}_{metric}": value for k in ks for metric, value in top_k_hits(ranking, truth, k).items()},
        **interaction_hits(ranking, truth, max(ks)),
        "compared": len(names),
    }


def interaction_hits(ranking: Ranking, truth: GroundTruth, k: int) -> dict[str, float]:
    """For rankings with composed candidates: the share of the top k of them that truly interact, beside how many
    interacting ones the ground truth knows among those ranked (none: the precision is undefined, nan)."""
    composed = [n for n in ranking.top(len(ranking.names)) if "+" in n and n in truth.entries]
    if not composed:
        return {}
    true = interacting(truth).intersection(composed)
    top = composed[:k]
    return {
        f"top{k}_interaction_precision": len(true.intersection(top)) / len(top) if true else float("nan"),
        "interacting": len(true),
    }


def truly_worst(truth: GroundTruth, names: list[str], k: int) -> set[str]:
    """The k most failure-prone of `names` by ground truth, with every one tied with the k-th (ties at the boundary
    would otherwise make the set arbitrary)."""
    names = [n for n in names if n in truth.entries]
    k = min(k, len(names))
    cutoff = sorted((truth.failure_rate(n) for n in names), reverse=True)[k - 1]
    return {n for n in names if truth.failure_rate(n) >= cutoff}


def budget_on_worst(
    rollout_perturbations: Sequence[Sequence[str]], truth: GroundTruth, names: list[str], k: int = 5
) -> float:
    """Share of the rollouts that included one of the truly worst k perturbations: how a method actually spent
    its budget, which the entropy and FSI of its ranking do not show."""
    if not rollout_perturbations:
        return float("nan")
    worst = truly_worst(truth, names, k)
    return sum(bool(worst.intersection(p)) for p in rollout_perturbations) / len(rollout_perturbations)


def rate_error(rows: Sequence[dict], truth: GroundTruth) -> dict[str, float]:
    """How well the failure rates a search observed (summary ranking rows: `failed_alone`, `tried_alone`, Wilson
    interval) estimate the ground truth's: mean absolute error over the modes tried alone, and the share of those
    whose 95% interval holds the true failure rate (about 0.95 if the intervals are honest)."""
    tried = [r for r in rows if r.get("tried_alone") and r["perturbation"] in truth.entries]
    if not tried:
        return {"rate_mae": float("nan"), "interval_coverage": float("nan"), "rated": 0}
    true = np.array([truth.failure_rate(r["perturbation"]) for r in tried])
    observed = np.array([r["failed_alone"] / r["tried_alone"] for r in tried])
    low = np.array([r["failure_rate_low"] for r in tried])
    high = np.array([r["failure_rate_high"] for r in tried])
    return {
        "rate_mae": float(np.abs(observed - true).mean()),
        "interval_coverage": float(((low <= true) & (true <= high)).mean()),
        "rated": len(tried),
    }


def bootstrap_mean(values: Sequence[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean over search seeds with a 95% percentile bootstrap interval."""
    values = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    means = np.random.default_rng(seed).choice(values, (resamples, len(values))).mean(axis=1)
    return float(values.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def rollouts_to_target(curve: Sequence[dict], metric: str, target: float) -> int | None:
    """The first rollout count on a search's curve at which `metric` reaches `target` and stays there, or None."""
    reached = None
    for point in curve:
        value = point.get(metric)
        if value is not None and np.isfinite(value) and value >= target:
            reached = reached if reached is not None else int(point["rollouts"])
        else:
            reached = None
    return reached


def top_k_hits(ranking: Ranking, truth: GroundTruth, k: int) -> dict[str, float]:
    """How the predicted top k meets the truly worst k, where every perturbation at least as failure-prone as the
    k-th worst counts as truly worst (ties at the boundary would otherwise make the true set arbitrary):
    precision, the share of the predicted k that are truly worst, and recall, the share of the truly worst that
    are among the predicted k (below 1 whenever ties make the true set larger than k)."""
    names = [n for n in ranking.names if n in truth.entries]
    k = min(k, len(names))
    predicted = [n for n in ranking.top(len(ranking.names)) if n in truth.entries][:k]
    worst = truly_worst(truth, names, k)
    hits = len(worst.intersection(predicted))
    return {"precision": hits / k, "recall": hits / len(worst)}
