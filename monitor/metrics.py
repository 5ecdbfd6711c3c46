"""Frame-level detection metrics for runtime monitors: AUROC (Mann–Whitney), F1 at the best threshold, and the
TPR / TNR / balanced / weighted accuracy of thresholded decisions. Plain numpy, checked against scikit-learn in the
tests."""

from __future__ import annotations

import numpy as np


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D of one length, got {scores.shape} and {labels.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    return scores, labels


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random positive > a random negative), ties counting half
    (the Mann–Whitney U statistic); NaN when a class is missing."""
    scores, labels = _check(scores, labels)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = average_ranks(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def f1_optimal(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(best F1 over all thresholds "score ≥ t", that t)."""
    scores, labels = _check(scores, labels)
    if not labels.any():
        return float("nan"), float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last = np.r_[s[1:] != s[:-1], True]  # the last of each group of tied scores: flag everything ≥ it
    true_positives = np.cumsum(y)[last]
    flagged = (np.arange(1, len(s) + 1))[last]
    f1 = 2 * true_positives / (flagged + labels.sum())
    best = int(np.argmax(f1))
    return float(f1[best]), float(s[last][best])


def rates(predicted: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """TPR, TNR, balanced accuracy and weighted accuracy β·TPR + (1−β)·TNR (β = share of negatives)."""
    predicted, labels = np.asarray(predicted).astype(bool), np.asarray(labels).astype(bool)
    tpr = float(predicted[labels].mean()) if labels.any() else float("nan")
    tnr = float((~predicted[~labels]).mean()) if (~labels).any() else float("nan")
    beta = float((~labels).mean())
    return {"tpr": tpr, "tnr": tnr, "balanced": (tpr + tnr) / 2, "weighted": beta * tpr + (1 - beta) * tnr}
