"""FIDeL's baselines (PaDiM, PatchCore, conv autoencoder, logpZO on lift_bc_image's features) on tiny synthetic
camera streams: they fit, follow the Monitor protocol, score anomalous frames above nominal ones, and calibrate
their threshold on nominal episodes."""

import numpy as np
import pytest
import torch
from synthetic_streams import anomalous, stream

from monitor.base import Monitor, MonitorOutput
from monitor.baselines import (
    AutoencoderConfig,
    AutoencoderMonitor,
    Calibration,
    FlowScoreConfig,
    FlowScoreMonitor,
    PadimConfig,
    PadimMonitor,
    PatchCoreConfig,
    PatchCoreMonitor,
    calibrated_threshold,
)
from monitor.baselines.padim import ledoit_wolf
from monitor.baselines.patchcore import greedy_coreset
from monitor.encoders import PatchEncoder

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
        "autoencoder": AutoencoderMonitor.fit("lift", nominal, AutoencoderConfig(epochs=15, calibration=CALIBRATION)),
        "logpzo": FlowScoreMonitor.fit("lift", nominal, FlowScoreConfig(steps=400, calibration=CALIBRATION)),
    }


@pytest.mark.parametrize("name", ["padim", "padim_step", "patchcore", "autoencoder", "logpzo"])
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
    if name not in ("autoencoder", "logpzo"):  # logpZO's score has no place: its heatmap is uniform
        assert heatmaps[-1][5:, :3].mean() > 2 * heatmaps[-1][0].mean()


@pytest.mark.parametrize("name", ["padim", "padim_step", "patchcore", "autoencoder", "logpzo"])
def test_baseline_save_load_round_trip(monitors, name, tmp_path):
    from monitor.baselines import ThresholdMonitor

    monitor = monitors[name]
    monitor.save(tmp_path / name)
    loaded = ThresholdMonitor.load(tmp_path / name, task="lift")
    assert type(loaded) is type(monitor) and loaded.config == monitor.config
    assert loaded.threshold == monitor.threshold and loaded.uses_time == monitor.uses_time
    assert loaded.overrun_step == monitor.overrun_step is not None
    np.testing.assert_array_equal(loaded.reference_frames, monitor.reference_frames)
    frames = np.stack([*stream(101)[:6], *map(anomalous, stream(101)[6:])])
    np.testing.assert_array_equal(loaded.score_episode(frames)[0], monitor.score_episode(frames)[0])
    with pytest.raises(ValueError, match="fitted for task 'lift', not 'can'"):
        ThresholdMonitor.load(tmp_path / name, task="can")
    other = PatchCoreMonitor if name != "patchcore" else PadimMonitor
    with pytest.raises(ValueError, match=f"holds a {monitor.kind} monitor, not {other.kind}"):
        other.load(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="no saved monitor"):
        ThresholdMonitor.load(tmp_path / "missing")


def test_baseline_flags_late_frames_as_failures_without_its_filter(monitors):
    monitor = monitors["padim"]
    frames = stream(102)
    stuck = np.concatenate([frames, np.repeat(frames[-1:], monitor.overrun_step + 2 - len(frames), axis=0)])
    monitor.semantic_filter = lambda *args: pytest.fail("late frames skip the semantic filter")
    try:
        monitor.reset()
        outputs = [monitor.step(f) for f in stuck]
    finally:
        monitor.semantic_filter = None
    assert all(o.is_failure and "still acting" in o.explanation for o in outputs[monitor.overrun_step :])
    assert not any(o.is_anomaly for o in outputs[: len(frames)])


def test_baseline_load_refuses_a_changed_encoder(monitors, tmp_path):
    from safetensors.torch import load_file, save_file

    path = monitors["padim"].save(tmp_path / "padim")
    tensors = load_file(path / "monitor.safetensors")
    tensors["fingerprint"] = tensors["fingerprint"] + 1
    save_file(tensors, path / "monitor.safetensors")
    with pytest.raises(ValueError, match="encoder's output differs"):
        PadimMonitor.load(path)


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


def test_logpzo_needs_an_image_policy(nominal):
    with pytest.raises(ValueError, match="'lift_bc_lowdim' has none"):
        FlowScoreMonitor.fit("lift", nominal, FlowScoreConfig(policy="lift_bc_lowdim", calibration=CALIBRATION))
