"""Semantic filters: the registry, the VLM backend against a local fake endpoint (requests, retries, fallback,
malformed replies), the trained filter on synthetic anomalies (separation, save/load) and its dataset builder."""

import base64
import io
import socket
import warnings
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from fake_endpoint import FakeEndpoint, completion
from safetensors.torch import load_file, save_file

import monitor.encoders  # noqa: F401  (timm takes seconds to import: pay it at collection, not in a test)
from monitor.semantic import SEMANTIC_FILTERS, NoFilter, build_semantic_filter
from monitor.semantic.images import overlay_heatmap, png_bytes, resize_grid
from monitor.semantic.trained import FILTER_TENSORS, Example, TrainedConfig, TrainedFilter, examples_from_failures
from monitor.semantic.vlm import VLMFilter, parse_verdict

torch.set_num_threads(1)
TASK = "lift the cube"


def scene(progress: float, jitter: int = 0) -> np.ndarray:
    """One 84×84 frame: a fixed texture with a block whose position follows the task's progress."""
    y, x = np.mgrid[0:84, 0:84]
    frame = np.stack([80 + 40 * np.sin(x / 6.0), 90 + 30 * np.cos(y / 5.0), 100 + 0 * x], -1)
    top, left = 20 + jitter, int(10 + 50 * progress) + jitter
    frame[top : top + 18, left : left + 14] = (200, 60, 40)
    return frame.astype(np.uint8)


def pixel_heatmap(reference: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """A stand-in for the monitor's heatmap: mean absolute change per 12 px cell of the 7×7 grid."""
    change = np.abs(frame.astype(np.float32) - reference.astype(np.float32)).mean(-1)
    return change.reshape(7, 12, 7, 12).mean((1, 3)).astype(np.float32)


def inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    reference, frame = scene(0.3), scene(0.3, 1)
    return reference, frame, pixel_heatmap(reference, frame)


# -- registry and none ------------------------------------------------------------------------------------------------


def test_registry_builds_each_backend_and_names_valid_choices(tmp_path):
    assert tuple(SEMANTIC_FILTERS) == ("none", "vlm", "trained", "failsense")
    none = build_semantic_filter("none")
    assert isinstance(none, NoFilter) and none(TASK, *inputs()) == (True, "")
    vlm = build_semantic_filter("vlm", base_url="http://127.0.0.1:9/v1/", model="m")
    assert isinstance(vlm, VLMFilter) and vlm.url == "http://127.0.0.1:9/v1/chat/completions"
    with pytest.raises(ValueError, match="unknown semantic filter 'gpt'; valid: none, vlm, trained, failsense"):
        build_semantic_filter("gpt")
    with pytest.raises(ValueError, match=r"\['url'\] for the vlm filter; valid: base_url, model"):
        build_semantic_filter("vlm", url="http://x")
    with pytest.raises(ValueError, match="unknown fallback 'maybe'; valid: failure, benign"):
        build_semantic_filter("vlm", fallback="maybe")
    with pytest.raises(ValueError, match="needs path="):
        build_semantic_filter("trained")
    with pytest.raises(FileNotFoundError, match="no saved trained filter"):
        build_semantic_filter("trained", path=tmp_path)


# -- vlm --------------------------------------------------------------------------------------------------------------


@pytest.fixture
def endpoint():
    servers = []

    def start(*replies: tuple[int, bytes]) -> FakeEndpoint:
        servers.append(FakeEndpoint(list(replies)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_vlm_sends_model_prompt_and_three_png_images(endpoint, monkeypatch):
    from PIL import Image

    server = endpoint(completion('{"verdict": "benign", "reason": "the light is dimmer"}'))
    monkeypatch.setenv("TEST_VLM_KEY", "sk-local")
    vlm = build_semantic_filter("vlm", base_url=server.base_url, model="qwen-vl", api_key_env="TEST_VLM_KEY")
    reference, frame, heatmap = inputs()
    assert vlm(TASK, reference, frame, heatmap) == (False, "the light is dimmer")
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-local"
    body = request["body"]
    assert body["model"] == "qwen-vl" and body["temperature"] == 0.0
    parts = body["messages"][-1]["content"]
    assert TASK in parts[0]["text"] and '"verdict"' in parts[0]["text"] and "heatmap" in parts[0]["text"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(urls) == 3 and all(u.startswith("data:image/png;base64,") for u in urls)
    images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1])))) for u in urls]
    assert np.array_equal(images[0], np.repeat(np.repeat(reference, 3, 0), 3, 1))  # upscaled ×3, lossless
    assert np.array_equal(images[1][::3, ::3], frame)
    assert np.array_equal(images[2][::3, ::3], overlay_heatmap(frame, heatmap))


def test_overlay_marks_the_hot_patch_red_and_png_is_lossless():
    from PIL import Image

    frame = np.full((84, 84, 3), 128, np.uint8)
    heatmap = np.zeros((7, 7), np.float32)
    heatmap[1, 5] = 10.0
    overlay = overlay_heatmap(frame, heatmap).astype(int)
    hot, cold = overlay[18, 66], overlay[75, 6]  # centre of patch (1, 5), a far corner
    assert hot[0] > hot[2] + 60 and cold[2] > cold[0] + 60  # red where anomalous, blue elsewhere
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(image)))), image)


@pytest.mark.parametrize("shape", [(7, 7, 84, 84), (7, 7, 7, 7), (7, 5, 3, 11)])
def test_resize_grid_is_torch_bilinear_without_align_corners(shape):
    h, w, height, width = shape
    grid = np.random.default_rng(1).random((h, w))
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(grid)[None, None], size=(height, width), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    assert np.allclose(resize_grid(grid, height, width), expected, atol=1e-12)


def test_vlm_retries_server_errors_then_reads_the_verdict(endpoint):
    server = endpoint((503, b"busy"), (500, b"oops"), completion("Failure: the cube slipped out of the gripper."))
    vlm = build_semantic_filter("vlm", base_url=server.base_url, retries=2, backoff_s=0.01)
    assert vlm(TASK, *inputs()) == (True, "the cube slipped out of the gripper")
    assert len(server.requests) == 3 and vlm.requests == 3 and vlm.failed_calls == 0


def test_vlm_client_errors_are_not_retried_and_fall_back(endpoint):
    server = endpoint((404, b'{"error": "model not found"}'))
    vlm = build_semantic_filter("vlm", base_url=server.base_url, retries=3, backoff_s=0.01, fallback="benign")
    with pytest.warns(RuntimeWarning, match="HTTP 404.*model not found.*answers 'benign'"):
        is_failure, explanation = vlm(TASK, *inputs())
    assert not is_failure and explanation.startswith("[fallback: benign]") and len(server.requests) == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("fallback", ["failure", "benign"])
def test_unreachable_endpoint_falls_back_and_warns_once(fallback):
    vlm = build_semantic_filter(
        "vlm",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        retries=1,
        backoff_s=0.01,
        timeout_s=2,
        fallback=fallback,
        disable_after=None,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answers = [vlm(TASK, *inputs()) for _ in range(4)]
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    assert "failed" in str(caught[0].message) and f"answers {fallback!r}" in str(caught[0].message)
    assert all(a[0] == (fallback == "failure") and a[1].startswith(f"[fallback: {fallback}]") for a in answers)
    assert vlm.requests == 8 and vlm.failed_calls == 4  # two attempts per call, every call tried


def test_failing_endpoint_is_no_longer_called_after_disable_after(endpoint):
    server = endpoint((503, b"down"))
    vlm = build_semantic_filter("vlm", base_url=server.base_url, retries=1, backoff_s=0.01, disable_after=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answers = [vlm(TASK, *inputs()) for _ in range(5)]
    assert len(caught) == 1 and "stops calling after 2" in str(caught[0].message)
    assert all(a[0] for a in answers) and vlm.disabled and len(server.requests) == 4


def test_malformed_replies_fall_back_with_one_warning(endpoint):
    server = endpoint(
        completion("I cannot tell from these images."),
        (200, b"<html>not json</html>"),
        (200, b'{"choices": []}'),
        completion('{"verdict": "benign", "reason": "ok"}'),
    )
    vlm = build_semantic_filter("vlm", base_url=server.base_url, retries=0, disable_after=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answers = [vlm(TASK, *inputs()) for _ in range(5)]
    assert [a[0] for a in answers] == [True, True, True, False, False]
    assert "no verdict" in answers[0][1] and "JSONDecodeError" in answers[1][1] and "IndexError" in answers[2][1]
    assert len(caught) == 2  # once for the unreadable verdict, once for the broken endpoint


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"verdict": "failure", "reason": "cube dropped"}', (True, "cube dropped")),
        ('```json\n{"Verdict": "BENIGN", "reason": "lighting"}\n```', (False, "lighting")),
        ("Sure! {'verdict': 'failure', 'reason': 'gripper empty'}", (True, "gripper empty")),
        ('{"verdict": "benign", "reason": "the distractor is far fr', (False, "the distractor is far fr")),
        ("benign", (False, "")),
        ("**Failure** - the cube fell.", (True, "the cube fell")),
        ("Verdict: benign. Only the light changed.", (False, "")),
        ("This is not a failure.", None),
        ('{"verdict": "maybe"}', None),
        ("", None),
    ],
)
def test_parse_verdict(text, expected):
    result = parse_verdict(text)
    if expected is None or expected[1]:
        assert result == expected
    else:
        assert result is not None and result[0] == expected[0]


# -- trained ----------------------------------------------------------------------------------------------------------


def synthetic_examples(count: int, seed: int) -> list[Example]:
    """Half failures (a big coloured blob on or next to the block: an object knocked into the scene, the cube
    crushed), half benign (global brightness and tint changes); heatmaps from the pixel change."""
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(count):
        progress = float(rng.uniform(0, 1))
        reference, frame = scene(progress), scene(progress, int(rng.integers(-1, 2))).astype(np.float32)
        failure = i % 2 == 0
        if failure:
            size = int(rng.integers(14, 22))
            top = int(np.clip(20 + rng.integers(-10, 10), 0, 84 - size))
            left = int(np.clip(10 + 50 * progress + rng.integers(-10, 10), 0, 84 - size))
            frame[top : top + size, left : left + size] = rng.uniform(0, 255, 3)
        else:
            frame = frame * rng.choice([rng.uniform(0.55, 0.8), rng.uniform(1.2, 1.45)]) + rng.uniform(-15, 15, 3)
        frame = np.clip(frame, 0, 255).astype(np.uint8)
        examples.append(Example(reference, frame, pixel_heatmap(reference, frame), failure))
    return examples


@pytest.fixture(scope="module")
def trained() -> TrainedFilter:
    return TrainedFilter.fit(synthetic_examples(32, seed=0), config=TrainedConfig(steps=200))


def test_trained_filter_separates_failures_from_benign_anomalies(trained):
    held_out = synthetic_examples(32, seed=1)
    p = trained.predict_proba(
        np.stack([e.reference_frame for e in held_out]),
        np.stack([e.frame for e in held_out]),
        np.stack([e.heatmap for e in held_out]),
    )
    accuracy = float(np.mean((p > 0.5) == np.array([e.is_failure for e in held_out])))
    assert accuracy >= 0.85, accuracy
    assert trained.stats["examples"] == 32 and trained.stats["failures"] == 16
    is_failure, explanation = trained(TASK, *held_out[0][:3])
    assert is_failure == (p[0] > 0.5) and f"p(failure)={p[0]:.2f}" in explanation


def test_trained_filter_save_load_round_trip(trained, tmp_path):
    held_out = synthetic_examples(6, seed=2)
    batch = [np.stack([e[k] for e in held_out]) for k in range(3)]
    trained.save(tmp_path / "filter")
    loaded = build_semantic_filter("trained", path=tmp_path / "filter")  # its own, freshly built encoder
    assert np.array_equal(loaded.predict_proba(*batch), trained.predict_proba(*batch))
    assert loaded.config == trained.config and loaded.stats == trained.stats
    assert [loaded(TASK, *e[:3]) for e in held_out] == [trained(TASK, *e[:3]) for e in held_out]
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pt"))

    tensors = load_file(tmp_path / "filter" / FILTER_TENSORS)
    tensors["fingerprint"] = tensors["fingerprint"] + 1.0
    save_file(tensors, tmp_path / "filter" / FILTER_TENSORS)
    with pytest.raises(ValueError, match="encoder's output differs"):
        TrainedFilter.load(tmp_path / "filter", encoder=trained.encoder)


def test_trained_filter_bad_input(trained):
    examples = synthetic_examples(4, seed=3)
    with pytest.raises(ValueError, match="needs failure and benign examples; got 2 failure and 0 benign"):
        TrainedFilter.fit(examples[::2], encoder=trained.encoder)
    with pytest.raises(ValueError, match=r"frames must be uint8 \(B, \*\(84, 84, 3\)\) as in training"):
        small = np.zeros((1, 64, 64, 3), np.uint8)
        trained.predict_proba(small, small, np.zeros((1, 7, 7)))
    with pytest.raises(ValueError, match=r"frame must be uint8 \(H, W, 3\), got float32"):
        trained(TASK, examples[0].reference_frame, examples[0].frame.astype(np.float32), examples[0].heatmap)


def write_failures(path, task: str = "lift") -> None:
    """A tiny failures.hdf5: a failed and a successful rollout a monitor watched, and one it did not."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as file:
        data = file.create_group("data")
        data.attrs["task"] = task
        rollouts = [(True, [0, 1, 1, 1, 1, 1]), (False, [0, 0, 1, 0, 0, 0]), (True, None)]
        for i, (sim_failure, anomaly) in enumerate(rollouts):
            group = data.create_group(f"demo_{i}")
            group.attrs.update(sim_failure=sim_failure, failed=sim_failure, num_samples=6)
            frames = rng.integers(0, 256, (6, 84, 84, 3), np.uint8)
            group.create_group("obs").create_dataset("agentview_image", data=frames)
            if anomaly is not None:
                group.create_dataset("anomaly", data=np.array(anomaly, np.uint8))
                group.create_dataset("t_min", data=np.arange(6, dtype=np.int32))
                group.create_dataset("heatmap", data=rng.random((6, 7, 7)).astype(np.float16))


def test_examples_from_failures_labels_flagged_frames_by_sim_failure(tmp_path):
    write_failures(tmp_path / "failures.hdf5")
    references = np.random.default_rng(1).integers(0, 256, (10, 84, 84, 3), np.uint8)
    monitor = SimpleNamespace(task="lift", memory=SimpleNamespace(reference_frames=references))
    examples = examples_from_failures([tmp_path / "failures.hdf5"], monitor)
    assert [e.is_failure for e in examples] == [True] * 5 + [False]
    with h5py.File(tmp_path / "failures.hdf5") as file:
        assert np.array_equal(examples[0].frame, file["data/demo_0/obs/agentview_image"][1])
        assert np.array_equal(examples[-1].heatmap, file["data/demo_1/heatmap"][2].astype(np.float32))
    assert np.array_equal(examples[0].reference_frame, references[1]) and examples[0].heatmap.dtype == np.float32
    assert len(examples_from_failures([tmp_path / "failures.hdf5"], monitor, max_per_rollout=2)) == 3

    with pytest.raises(ValueError, match="holds task 'lift' but the monitor was fitted for 'stack'"):
        examples_from_failures([tmp_path / "failures.hdf5"], SimpleNamespace(task="stack", memory=monitor.memory))
    write_failures(tmp_path / "unwatched.hdf5")
    with h5py.File(tmp_path / "unwatched.hdf5", "a") as file:
        for name in file["data"]:
            for key in ("anomaly", "t_min", "heatmap"):
                file["data"][name].pop(key, None)
    with pytest.raises(ValueError, match="has monitor labels"):
        examples_from_failures([tmp_path / "unwatched.hdf5"], monitor)
