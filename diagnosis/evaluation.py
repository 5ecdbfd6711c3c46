"""A ranking judged against ground truth: success rates from exhaustive plain rollouts (experiments.ground_truth).

Only pairs of perturbations whose ground-truth success rates differ significantly (non-overlapping 95% Wilson
intervals) count for pairwise accuracy: with 20 episodes each, 0.40 against 0.45 is noise, and a ranking should not
be rewarded or punished for ordering noise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from diagnosis.ranking import Ranking

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


def default_ground_truth_path(policy: str) -> Path:
    """Where experiments.ground_truth writes the file for a policy."""
    return RESULTS / f"ground_truth_{Path(policy).name}.json"


def load_ground_truth(path: str | Path, task: str | None = None, policy: str | None = None) -> GroundTruth:
    """Reads a ground-truth file; a file for another task or policy is an error, not a silent comparison."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; make it with python -m experiments.ground_truth")
    data = json.loads(path.read_text())
    for what, wanted in (("task", task), ("policy", policy)):
        if wanted is not None and Path(data[what]).name != Path(wanted).name:
            raise ValueError(f"{path} is the ground truth of {what} {data[what]!r}, not {wanted!r}")
    entries = {
        row["perturbation"]: GroundTruthEntry(row["success_rate"], *row["wilson95"], row["episodes"])
        for row in data["perturbations"]
    }
    return GroundTruth(data["task"], data["policy"], entries, path)


def significant_pairs(truth: GroundTruth, names: list[str]) -> list[tuple[str, str]]:
    """Pairs (a, b) where a fails significantly more often than b (a's interval lies wholly below b's)."""
    return [
        (a, b)
        for a in names
        for b in names
        if truth.entries[a].high < truth.entries[b].low
    ]


def compare(ranking: Ranking, truth: GroundTruth, k: int = 5) -> dict[str, float]:
    """Pairwise accuracy over significant pairs (ties count half), Kendall τ-b and top-k recall."""
    names = [n for n in ranking.names if n in truth.entries]
    if len(names) < 2:
        raise ValueError(f"ground truth {truth.path} covers {len(names)} of the ranked perturbations; need 2 or more")
    score = dict(zip(ranking.names, ranking.scores))
    pairs = significant_pairs(truth, names)
    agree = [1.0 if score[a] > score[b] else 0.5 if score[a] == score[b] else 0.0 for a, b in pairs]
    predicted = np.array([score[n] for n in names])
    actual = np.array([truth.failure_rate(n) for n in names])
    tau = kendalltau(predicted, actual).statistic
    return {
        "pairwise_accuracy": float(np.mean(agree)) if pairs else float("nan"),
        "significant_pairs": len(pairs),
        "kendall_tau": float(tau) if np.isfinite(tau) else float("nan"),
        f"top{k}_recall": top_k_recall(ranking, truth, k),
        "compared": len(names),
    }


def top_k_recall(ranking: Ranking, truth: GroundTruth, k: int) -> float:
    """Share of the predicted top k among the truly worst: every perturbation at least as failure-prone as the
    k-th worst counts as truly worst (ties at the boundary would otherwise make the true set arbitrary)."""
    names = [n for n in ranking.names if n in truth.entries]
    k = min(k, len(names))
    worst_first = sorted(truth.failure_rate(n) for n in names)[::-1]
    cutoff = worst_first[k - 1]
    truly_worst = {n for n in names if truth.failure_rate(n) >= cutoff}
    predicted = [n for n in ranking.top(len(ranking.names)) if n in truth.entries][:k]
    return len(truly_worst.intersection(predicted)) / k
