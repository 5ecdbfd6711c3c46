"""FIDeL's baselines (PaDiM, PatchCore, conv autoencoder) on tiny synthetic camera streams: they fit, follow the
Monitor protocol, score anomalous frames above nominal ones, and calibrate their threshold on nominal episodes."""

import numpy as np
import pytest
import torch

from monitor.base import Monitor, MonitorOutput
from monitor.baselines import (
    AutoencoderConfig,
    AutoencoderMonitor,
    Calibration,
    PadimConfig,
    PadimMonitor,
    PatchCoreConfig,
    PatchCoreMonitor,
    calibrated_threshold,
)
from monitor.baselines.padim import ledoit_wolf
from monitor.baselines.patchcore import greedy_coreset
from monitor.encoders import PatchEncoder
from synthetic_streams import anomalous, stream

CALIBRATION = Calibration(alpha=0.3)  # 8 episodes: 3 to learn from, 5 to calibrate (as FIDeL's tests split them)


@pytest.fixture(scope="module")
def encoder() -> PatchEncoder:
    return PatchEncoder()


@pytest.fixture(scope="module")
def nominal() -> list[np.ndarray]:
    return [stream(s) for s in range(8)]


@pytest.fixture(scope="module")
def monitors(encoder, nominal) -> dict:
    torch.set_num_threads(1)
    features = [encoder.encode(e) for e in nominal]
    return {
        "padim": PadimMonitor.fit("lift", nominal, PadimConfig(calibration=CALIBRATION), encoder, features),
        "padim_step": PadimMonitor.fit(
            "lift", nominal, PadimConfig(time="step", calibration=CALIBRATION), encoder, features
        ),
        "patchcore": PatchCoreMonitor.fit("lift", nominal, PatchCoreConfig(calibration=CALIBRATION), encoder, features),
        "autoencoder": AutoencoderMonitor.fit(
            "lift", nominal, AutoencoderConfig(epochs=15, calibration=CALIBRATION)
        ),
    }


@pytest.mark.parametrize("name", ["padim", "padim_step", "patchcore", "autoencoder"])
def test_baseline_scores_anomalies_above_nominal_and_follows_the_protocol(monitors, name):
    monitor = monitors[name]
    assert isinstance(monitor, Monitor) and np.isfinite(monitor.threshold)
    frames = stream(100)
    broken = np.stack([*frames[:6], *map(anomalous, frames[6:])])
    monitor.reset()
    outputs = [monitor.step(f) for f in broken]
    assert all(isinstance(o, MonitorOutput) for o in outputs)
    assert outputs[0].heatmap.shape == (7, 7) and outputs[0].heatmap.dtype == np.float32
    assert outputs[3].t_min == (3 if name == "padim_step" else -1)
    scores = np.array([o.score for o in outputs])
    assert scores[6:].min() > scores[:6].max()
    assert all(o.is_anomaly for o in outputs[6:]) and all(o.is_failure == o.is_anomaly for o in outputs)
    assert sum(o.is_anomaly for o in outputs[:6]) <= 1
    # Batched scoring is what step() gives frame by frame.
    batch_scores, heatmaps = monitor.score_episode(broken)
    np.testing.assert_allclose(batch_scores, scores, rtol=1e-3)
    # Batched convolutions round differently from single frames: compare to 1e-3.
    np.testing.assert_allclose(heatmaps[-1], outputs[-1].heatmap, rtol=1e-3, atol=1e-3)
    # The heatmap points at the blob (rows 50-80, cols 5-45 of 84 px: grid rows 4-6, cols 0-3).
    if name != "autoencoder":
        assert heatmaps[-1][5:, :3].mean() > 2 * heatmaps[-1][0].mean()


def test_semantic_filter_decides_failure_with_a_reference_frame(monitors):
    monitor = monitors["patchcore"]
    seen = []

    def benign(task_text, reference_frame, frame, heatmap):
        seen.append((task_text, reference_frame.shape, heatmap.shape))
        return False, "just a cyan box"

    monitor.semantic_filter = benign
    try:
        monitor.reset()
        output = monitor.step(anomalous(stream(3)[0]))
    finally:
        monitor.semantic_filter = None
    assert output.is_anomaly and not output.is_failure and output.explanation == "just a cyan box"
    assert seen == [("lift the cube", (84, 84, 3), (7, 7))]


def test_bad_frames_and_too_few_episodes_are_errors(monitors, nominal):
    monitor = monitors["padim"]
    with pytest.raises(ValueError, match=r"uint8 \(84, 84, 3\).*float64"):
        monitor.step(np.zeros((84, 84, 3)))
    with pytest.raises(ValueError, match=r"uint8 \(84, 84, 3\).*\(64, 64, 3\)"):
        monitor.step(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="too few for alpha=0.1"):
        PadimMonitor.fit("lift", nominal, PadimConfig())
    with pytest.raises(ValueError, match="valid: global, step"):
        PadimConfig(time="hourly")
    with pytest.raises(ValueError, match="valid: coreset, random, all"):
        PatchCoreConfig(sampling="kmeans")


def test_threshold_is_the_conformal_order_statistic_of_episode_maxima():
    scores = [np.array([0.1, v]) for v in (5.0, 1.0, 3.0, 2.0, 4.0, 9.0, 8.0, 7.0, 6.0)]
    assert calibrated_threshold(scores, 0.1) == 9.0  # ⌈10·0.9⌉ = 9th of 9
    assert calibrated_threshold(scores, 0.3) == 7.0  # ⌈10·0.7⌉ = 7th
    with pytest.raises(ValueError, match="needs at least 9 calibration episodes, got 3"):
        calibrated_threshold(scores[:3], 0.1)


def test_ledoit_wolf_matches_scikit_learn():
    sklearn_covariance = pytest.importorskip("sklearn.covariance")
    samples = torch.from_numpy(np.random.default_rng(0).normal(size=(40, 12)) @ np.diag(np.linspace(0.5, 3, 12)))
    shrunk, shrinkage = ledoit_wolf(samples)
    reference, reference_shrinkage = sklearn_covariance.ledoit_wolf(samples.numpy())
    assert shrinkage == pytest.approx(reference_shrinkage, rel=1e-9)
    np.testing.assert_allclose(shrunk.numpy(), reference, rtol=1e-9, atol=1e-12)


def test_greedy_coreset_covers_the_points():
    points = torch.from_numpy(np.random.default_rng(1).normal(size=(500, 4))).float()
    chosen = greedy_coreset(points, 50, seed=0)
    assert len(set(chosen.tolist())) == 50
    covering = torch.cdist(points, points[chosen]).min(1).values.max()
    random = torch.cdist(points, points[:50]).min(1).values.max()
    assert covering < random  # farthest-point selection leaves no point as far out as a random subset does


def test_auroc_and_f1_helpers_match_references():
    from monitor.evaluate import auroc, f1_optimal, rates

    rng = np.random.default_rng(0)
    labels = rng.random(400) < 0.3
    scores = np.round(rng.normal(size=400) + labels, 1)  # rounded: many ties
    # Reference AUROC by brute force over all positive/negative pairs, ties counting half.
    pos, neg = scores[labels][:, None], scores[~labels][None, :]
    brute = ((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size)
    assert auroc(scores, labels) == pytest.approx(brute, abs=1e-12)
    best = max(
        2 * (labels & (scores >= t)).sum() / ((scores >= t).sum() + labels.sum()) for t in np.unique(scores)
    )
    assert f1_optimal(scores, labels)[0] == pytest.approx(best, abs=1e-12)
    assert auroc(np.arange(4.0), np.array([0, 0, 1, 1])) == 1.0 and np.isnan(auroc(np.ones(3), np.zeros(3)))
    metrics = pytest.importorskip("sklearn.metrics")
    assert auroc(scores, labels) == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)
    r = rates(np.array([1, 1, 0, 0, 0]), np.array([1, 0, 0, 0, 1]))
    assert r["tpr"] == 0.5 and r["tnr"] == pytest.approx(2 / 3) and r["balanced"] == pytest.approx(7 / 12)
    assert r["weighted"] == pytest.approx(0.6 * 0.5 + 0.4 * 2 / 3)
