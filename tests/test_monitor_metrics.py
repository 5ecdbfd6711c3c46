"""monitor.metrics against brute force and scikit-learn."""

import numpy as np
import pytest

from monitor.metrics import auroc, f1_optimal, rates


def test_auroc_and_f1_helpers_match_references():
    rng = np.random.default_rng(0)
    labels = rng.random(400) < 0.3
    scores = np.round(rng.normal(size=400) + labels, 1)  # rounded: many ties
    # Reference AUROC by brute force over all positive/negative pairs, ties counting half.
    pos, neg = scores[labels][:, None], scores[~labels][None, :]
    brute = ((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size)
    assert auroc(scores, labels) == pytest.approx(brute, abs=1e-12)
    best = max(2 * (labels & (scores >= t)).sum() / ((scores >= t).sum() + labels.sum()) for t in np.unique(scores))
    assert f1_optimal(scores, labels)[0] == pytest.approx(best, abs=1e-12)
    assert auroc(np.arange(4.0), np.array([0, 0, 1, 1])) == 1.0 and np.isnan(auroc(np.ones(3), np.zeros(3)))
    metrics = pytest.importorskip("sklearn.metrics")
    assert auroc(scores, labels) == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)
    r = rates(np.array([1, 1, 0, 0, 0]), np.array([1, 0, 0, 0, 1]))
    assert r["tpr"] == 0.5 and r["tnr"] == pytest.approx(2 / 3) and r["balanced"] == pytest.approx(7 / 12)
    assert r["weighted"] == pytest.approx(0.6 * 0.5 + 0.4 * 2 / 3)
