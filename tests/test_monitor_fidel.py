"""FidelMonitor on tiny synthetic camera streams (a block sliding over a textured table): fit, step, thresholds,
save/load, bad input."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from synthetic_streams import anomalous, stream

from monitor.base import Monitor, MonitorOutput, summarize
from monitor.encoders import EncoderConfig
from monitor.fidel import FidelConfig, FidelMonitor

CONFIG = FidelConfig(alpha=0.3)  # 8 episodes: 3 memory, 2 E_A, 3 E_B


@pytest.fixture(scope="module")
def monitor() -> FidelMonitor:
    return FidelMonitor.fit("lift", [stream(s) for s in range(8)], CONFIG)


def run(monitor: FidelMonitor, frames: np.ndarray) -> list[MonitorOutput]:
    monitor.reset()
    return [monitor.step(f) for f in frames]


def test_step_gives_complete_outputs_and_quiet_on_nominal(monitor):
    assert isinstance(monitor, Monitor)
    outputs = run(monitor, stream(100))
    assert all(isinstance(o, MonitorOutput) for o in outputs)
    first = outputs[0]
    assert first.heatmap.shape == (7, 7) and first.heatmap.dtype == np.float32
    assert 0 <= first.t_min < monitor.memory.steps and np.isnan(first.threshold)  # per-patch band
    assert [o.t_min for o in outputs] == sorted(o.t_min for o in outputs)  # progress runs forward
    assert not any(o.is_anomaly for o in outputs)
    assert all(o.is_failure == o.is_anomaly for o in outputs)


def test_anomalous_frames_are_flagged_by_every_thresholding(monitor):
    frames = stream(101)
    outputs = run(monitor, np.stack([*frames[:5], *map(anomalous, frames[5:])]))
    assert not any(o.is_anomaly for o in outputs[:5]) and all(o.is_anomaly for o in outputs[5:])
    summary = summarize(outputs)
    assert summary.first_anomaly == 5 and summary.failure
    worst = outputs[-1]
    for name in ("time", "gaussian", "time_space"):
        assert monitor.decide(worst.score, worst.t_min, worst.heatmap, name)[0]
    blob, elsewhere = worst.heatmap[5:, :3], worst.heatmap[0]  # grid cells of 12 px: the blob is rows 4-6, cols 0-3
    assert blob.mean() > 3 * elsewhere.mean()  # the heatmap points at the blob
    with pytest.raises(ValueError, match="valid: time_space, time, gaussian"):
        monitor.decide(worst.score, worst.t_min, worst.heatmap, "otsu")


def test_semantic_filter_sees_reference_frame_and_decides_failure(monitor):
    calls = []

    def benign(task_text, reference_frame, frame, heatmap):
        calls.append((task_text, reference_frame.shape, frame.shape, heatmap.shape))
        return False, "a harmless colour change"

    monitor.semantic_filter = benign
    try:
        frames = stream(102)
        outputs = run(monitor, np.stack([frames[0], anomalous(frames[1])]))
    finally:
        monitor.semantic_filter = None
    assert calls == [("lift the cube", (84, 84, 3), (84, 84, 3), (7, 7))]  # only the anomalous frame
    assert outputs[1].is_anomaly and not outputs[1].is_failure
    assert outputs[1].explanation == "a harmless colour change"


def test_frames_past_every_calibration_episode_are_late_failures(monitor):
    from monitor.conformal import overrun_step, split_episodes

    split = split_episodes(8, CONFIG.alpha, CONFIG.memory_fraction, CONFIG.split_seed)
    late = monitor.overrun_step
    assert late == overrun_step([len(stream(i)) for i in split.centre + split.width])
    frames = stream(104)
    stuck = np.concatenate([frames, np.repeat(frames[-1:], late + 3 - len(frames), axis=0)])  # stalls at the end
    judged = []
    monitor.semantic_filter = lambda *args: (judged.append(1), (False, "benign"))[1]
    try:
        outputs = run(monitor, stuck)
    finally:
        monitor.semantic_filter = None
    assert all(o.is_anomaly and o.is_failure for o in outputs[late:])
    assert outputs[late].explanation == f"still acting at frame {late}: every calibration episode had ended by then"
    assert not any(o.is_anomaly for o in outputs[: len(frames)])
    assert len(judged) == sum(o.is_anomaly for o in outputs[:late])  # late frames never reach the filter
    assert not run(monitor, stuck[:1])[0].is_anomaly  # reset() restarts the count
    assert FidelMonitor.fit("lift", [stream(s) for s in range(8)], replace(CONFIG, overrun=False)).overrun_step is None
    with pytest.raises(ValueError, match="lengths >= 1"):
        overrun_step([])


@pytest.mark.parametrize("frame_score", ["transport", "band"])
def test_other_frame_scores_flag_the_anomaly_too(frame_score):
    """FIDeL as published (mean transport cost) and the band-normalised score remain selectable and working."""
    config = FidelConfig(alpha=0.3, frame_score=frame_score, heatmap="min", time_weight=0.0)
    fitted = FidelMonitor.fit("lift", [stream(s) for s in range(8)], config)
    frames = stream(100)
    nominal = run(fitted, frames)
    worst = run(fitted, np.stack([anomalous(f) for f in frames]))
    assert max(o.score for o in worst) > max(o.score for o in nominal)
    assert any(o.is_anomaly for o in worst)


def test_save_load_round_trip_gives_identical_outputs(monitor, tmp_path):
    monitor.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["monitor.json", "monitor.safetensors"]
    loaded = FidelMonitor.load(tmp_path / "m", task="lift", encoder=CONFIG.encoder)
    assert loaded.config == monitor.config and loaded.overrun_step == monitor.overrun_step
    frames = np.stack([*stream(103)[:6], anomalous(stream(103)[6])])
    for a, b in zip(run(monitor, frames), run(loaded, frames)):
        assert (a.score, a.t_min, a.is_anomaly) == (b.score, b.t_min, b.is_anomaly)
        np.testing.assert_array_equal(a.heatmap, b.heatmap)


def test_loading_for_another_task_or_encoder_fails(monitor, tmp_path):
    path = monitor.save(tmp_path / "m")
    with pytest.raises(ValueError, match="fitted for task 'lift', not 'can'"):
        FidelMonitor.load(path, task="can")
    with pytest.raises(ValueError, match="was fitted with encoder"):
        FidelMonitor.load(path, encoder=EncoderConfig(grid=5))
    tensors = load_file(path / "monitor.safetensors")
    tensors["fingerprint"] = tensors["fingerprint"] + 1.0  # as if the weights had changed
    save_file(tensors, path / "monitor.safetensors")
    with pytest.raises(ValueError, match="encoder's output differs"):
        FidelMonitor.load(path)
    meta = json.loads((path / "monitor.json").read_text())
    (path / "monitor.json").write_text(json.dumps({**meta, "format": 0}))
    with pytest.raises(ValueError, match="format 0"):
        FidelMonitor.load(path)
    with pytest.raises(FileNotFoundError, match="no saved monitor"):
        FidelMonitor.load(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "frame, message",
    [
        (np.zeros((84, 84, 3), np.float32), r"uint8 \(84, 84, 3\) .* got float32 \(84, 84, 3\)"),
        (np.zeros((96, 96, 3), np.uint8), r"got uint8 \(96, 96, 3\)"),
        (np.zeros((84, 84), np.uint8), r"got uint8 \(84, 84\)"),
        ([[0]], "got list"),
    ],
)
def test_bad_frames_name_expected_and_given(monitor, frame, message):
    monitor.reset()
    with pytest.raises(ValueError, match=message):
        monitor.step(frame)


def test_non_finite_features_raise(monitor, monkeypatch):
    monkeypatch.setattr(monitor.encoder, "__call__", lambda frames: torch.full((1, 49, 64), float("nan")))
    monkeypatch.setattr(type(monitor.encoder), "__call__", lambda self, frames: torch.full((1, 49, 64), float("nan")))
    monitor.reset()
    with pytest.raises(FloatingPointError, match="NaN or infinite features"):
        monitor.step(stream(0)[0])


def test_too_few_or_inconsistent_episodes_are_explained():
    with pytest.raises(ValueError, match="7 nominal episodes are too few for alpha=0.3.*at least 8"):
        FidelMonitor.fit("lift", [stream(s) for s in range(7)], CONFIG)
    with pytest.raises(ValueError, match="different frame shapes"):
        FidelMonitor.fit("lift", [stream(0), stream(1)[:, :80]], CONFIG)
    with pytest.raises(ValueError, match="uint8 \\(T, H, W, 3\\)"):
        FidelMonitor.fit("lift", [stream(0).astype(np.float32)], CONFIG)
    with pytest.raises(ValueError, match="valid tasks"):
        FidelMonitor.fit("lfit", [stream(0)], CONFIG)


def test_config_round_trips_through_json_and_rejects_bad_values():
    config = FidelConfig(window=None, patch_mask=(True,) * 48 + (False,), encoder=EncoderConfig(stages=(2,)))
    assert FidelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    published = FidelConfig(frame_score="transport", heatmap="min", time_weight=0.0, lag=2, top_k=5)
    assert FidelConfig.from_dict(json.loads(json.dumps(published.to_dict()))) == published
    for kwargs, message in [
        ({"frame_score": "mean"}, "frame_score"),
        ({"heatmap": "max"}, "heatmap"),
        ({"top_k": 50}, "top_k"),
        ({"time_weight": -1.0}, "time_weight"),
        ({"lag": -1}, "lag"),
    ]:
        with pytest.raises(ValueError, match=message):
            FidelConfig(**kwargs)
    with pytest.raises(ValueError, match="valid: time_space, time, gaussian"):
        FidelConfig(thresholding="max")
    with pytest.raises(ValueError, match="patch_mask must have 49 entries"):
        FidelConfig(patch_mask=(True,) * 10)
    with pytest.raises(ValueError, match="alpha"):
        FidelConfig(alpha=1.5)
