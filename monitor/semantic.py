"""FIDeL's semantic filter D_F: of the frames the monitor finds anomalous, which are task failures?

The OT score flags anything unlike the nominal demonstrations, a dimmer light as much as a dropped cube. A filter
takes a second look at (task instruction, nominal reference frame at t_min, current frame, heatmap) and answers
(is_failure, explanation), so that benign anomalies stop counting as failures. Backends (`build_semantic_filter`):

- `none`: every anomaly is a failure (FIDeL without D_F; what the monitor does when it has no filter).
- `vlm`: a vision-language model behind an OpenAI-compatible chat-completions endpoint (e.g. vLLM serving
  Qwen2.5-VL-7B-Instruct). The reference frame, the current frame and the heatmap overlaid on the current frame go
  as base64 PNG data URLs with FIDeL's question; the answer is JSON, verdict first. Network errors are retried with
  backoff; if the endpoint still fails (or the reply has no verdict) the filter answers the configured `fallback`
  and warns once, not once per frame, and after `disable_after` failed calls in a row it stops calling, so a dead
  endpoint cannot add its timeout to every frame of every rollout.
- `trained`: the offline default. A logistic regression (or tiny MLP) on frozen encoder features of frame and
  reference, their difference and heatmap statistics, fitted on labelled anomalous frames of simulated rollouts
  (`examples_from_failures`), saved as safetensors + JSON.

Only numpy and the standard library are imported here; torch and the encoder (timm takes seconds to import) load
when a trained filter is built.
"""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import time
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from monitor.base import SemanticFilter

if TYPE_CHECKING:
    import torch

    from monitor.encoders import EncoderConfig, PatchEncoder
    from monitor.fidel import FidelMonitor

FALLBACKS = ("failure", "benign")
FORMAT_VERSION = 1
FILTER_JSON, FILTER_TENSORS = "semantic_filter.json", "semantic_filter.safetensors"


# -- shared helpers ---------------------------------------------------------------------------------------------------


def _check_inputs(reference_frame: np.ndarray, frame: np.ndarray, heatmap: np.ndarray) -> None:
    for name, image in (("reference_frame", reference_frame), ("frame", frame)):
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            given = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"{name} must be uint8 (H, W, 3), got {given}")
    heatmap = np.asarray(heatmap)
    if heatmap.ndim != 2 or not np.isfinite(heatmap).all():
        raise ValueError(f"heatmap must be a finite (h, w) grid, got shape {heatmap.shape}")


def _resize_matrix(source: int, target: int) -> np.ndarray:
    """(target, source) bilinear interpolation weights, pixel centres aligned (align_corners=False)."""
    position = np.clip((np.arange(target) + 0.5) * source / target - 0.5, 0, source - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, source - 1)
    weight = position - low
    matrix = np.zeros((target, source))
    matrix[np.arange(target), low] += 1 - weight
    matrix[np.arange(target), high] += weight
    return matrix


def resize_grid(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a (h, w) map, so a 7×7 heatmap lines up with a frame or another patch grid."""
    grid = np.asarray(grid, dtype=np.float64)
    return _resize_matrix(grid.shape[0], height) @ grid @ _resize_matrix(grid.shape[1], width).T


def overlay_heatmap(frame: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The frame with the heatmap blended on top in a jet colour map (blue = nominal, red = most anomalous).

    Normalised per frame (min → blue, max → red): a VLM should read where the difference is, not its size, which
    the monitor has already judged.
    """
    _check_inputs(frame, frame, heatmap)
    values = resize_grid(heatmap, frame.shape[0], frame.shape[1])
    span = values.max() - values.min()
    values = (values - values.min()) / span if span > 0 else np.zeros_like(values)
    jet = 4 * (0.125 + 0.75 * values)  # the part of jet from pure blue to pure red
    colour = np.stack([np.clip(1.5 - np.abs(jet - k), 0, 1) for k in (3, 2, 1)], -1)  # r, g, b
    blended = (1 - alpha) * frame.astype(np.float64) + alpha * 255 * colour
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 (H, W, 3) image as PNG (stdlib zlib: no imaging library needed to talk to a VLM)."""
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    height, width, _ = image.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, -1)], axis=1)  # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + chunk(b"IEND", b"")
    )  # fmt: skip


def png_data_url(image: np.ndarray) -> str:
    """`data:image/png;base64,...`: how OpenAI-compatible endpoints take inline images."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


# -- none -------------------------------------------------------------------------------------------------------------


class NoFilter:
    """Every anomaly is a failure: FIDeL without its semantic filter, the baseline a filter must beat on TNR."""

    def __call__(
        self, task_text: str, reference_frame: np.ndarray, frame: np.ndarray, heatmap: np.ndarray
    ) -> tuple[bool, str]:
        return True, ""


# -- vlm --------------------------------------------------------------------------------------------------------------

SYSTEM_PROMPT = "You check a robot manipulator's camera for task failures. You answer with JSON only."
USER_PROMPT = """The robot's task: "{task}".
Image 1 is a reference frame from a successful demonstration at the same stage of the task. Image 2 is the current \
camera frame. Image 3 is the current frame overlaid with an anomaly heatmap: red marks where the current frame \
differs most from the successful demonstrations, blue where it looks nominal.
An anomaly detector flagged the current frame. Compare the two images and read the heatmap. Decide whether the \
difference is benign (a lighting or colour change, camera noise, a distractor object that does not interfere with \
the task) or a task failure (the robot or the object is in a state where the task is failing or has failed: the \
object dropped, missed, pushed away or knocked over, the gripper empty when it should hold the object, the robot \
stuck or colliding).
Answer with JSON only, verdict first: {{"verdict": "failure" or "benign", "reason": "<one short sentence>"}}"""

VERDICT_WORDS = {
    "failure": True, "fail": True, "failed": True, "failing": True,
    "benign": False, "nominal": False, "normal": False,
}  # fmt: skip
"""Words accepted as a verdict (lower case) → is_failure."""


def parse_verdict(text: str) -> tuple[bool, str] | None:
    """(is_failure, reason) from a VLM reply, or None when it holds no verdict.

    Accepts the JSON asked for (also inside code fences, with single quotes, or cut off by max_tokens) and a reply
    whose first word is the verdict ("Failure: the cube fell."). Never guesses from words further in: "not a
    failure" must not read as a failure.
    """
    text = re.sub(r"```(?:json)?", "", text or "").strip()
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            data = json.loads(text[start : end + 1])
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            lowered = {str(k).lower(): v for k, v in data.items()}
            for key in ("verdict", "answer", "label", "decision"):
                word = str(lowered.get(key, "")).strip().lower()
                if word in VERDICT_WORDS:
                    reason = lowered.get("reason") or lowered.get("explanation") or ""
                    return VERDICT_WORDS[word], str(reason).strip()
    match = re.search(r"""["']?(?:verdict|answer)["']?\s*[:=]\s*["']?([a-z]+)""", text, re.IGNORECASE)
    if match and match.group(1).lower() in VERDICT_WORDS:
        reason = re.search(r"""["']?reason["']?\s*[:=]\s*["']([^"']*)""", text, re.IGNORECASE)
        return VERDICT_WORDS[match.group(1).lower()], reason.group(1).strip() if reason else ""
    match = re.match(r"""[\s"'*#>-]*([a-z]+)\b(.*)""", text, re.IGNORECASE | re.DOTALL)
    if match and match.group(1).lower() in VERDICT_WORDS:
        return VERDICT_WORDS[match.group(1).lower()], match.group(2).strip(" \t\n.:;,-—*\"'")
    return None


@dataclass(frozen=True)
class VLMConfig:
    """Where the VLM lives and how patiently to ask it."""

    base_url: str = "http://localhost:8000/v1"
    """OpenAI-compatible API root; requests go to `{base_url}/chat/completions` (vLLM: `vllm serve MODEL`)."""
    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    """Model name the server knows."""
    api_key_env: str = "FAILSCOPE_VLM_API_KEY"
    """Environment variable holding the API key; unset or empty = no Authorization header (local vLLM)."""
    timeout_s: float = 30.0
    """Per-request timeout."""
    retries: int = 2
    """Extra attempts after a network error, timeout, 408/429 or 5xx (other 4xx are not retried)."""
    backoff_s: float = 0.5
    """Wait before retry k (0-based): backoff_s · 2^k."""
    fallback: str = "failure"
    """Verdict when the endpoint fails or answers without a verdict: failure (safe: the anomaly stands) or benign."""
    disable_after: int | None = 3
    """Stop calling after this many failed calls in a row and answer `fallback` (None = keep trying every frame)."""
    upscale: int = 3
    """Images are enlarged by this factor (nearest neighbour): an 84 px frame is a handful of tokens for a VLM."""
    max_tokens: int = 128
    temperature: float = 0.0

    def __post_init__(self) -> None:
        if self.fallback not in FALLBACKS:
            raise ValueError(f"unknown fallback {self.fallback!r}; valid: {', '.join(FALLBACKS)}")
        if self.retries < 0 or self.timeout_s <= 0 or self.backoff_s < 0 or self.upscale < 1:
            raise ValueError(
                f"need retries >= 0, timeout_s > 0, backoff_s >= 0, upscale >= 1; got retries={self.retries}, "
                f"timeout_s={self.timeout_s}, backoff_s={self.backoff_s}, upscale={self.upscale}"
            )
        if self.disable_after is not None and self.disable_after < 1:
            raise ValueError(f"disable_after must be >= 1 or None, got {self.disable_after!r}")


class EndpointError(RuntimeError):
    """The endpoint did not give a usable chat completion."""


_RETRYABLE_STATUS = {408, 429}


class VLMFilter:
    """FIDeL's D_F through a VLM on an OpenAI-compatible endpoint; see the module docstring for the failure policy."""

    def __init__(self, config: VLMConfig = VLMConfig()):
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.requests = 0
        """HTTP requests sent (retries included)."""
        self.failed_calls = 0
        """Calls answered by the fallback because the endpoint failed."""
        self._failures_in_a_row = 0
        self._warned: set[str] = set()

    @property
    def disabled(self) -> bool:
        """True once `disable_after` calls in a row failed: later calls answer the fallback without a request."""
        limit = self.config.disable_after
        return limit is not None and self._failures_in_a_row >= limit

    def request_body(
        self, task_text: str, reference_frame: np.ndarray, frame: np.ndarray, heatmap: np.ndarray
    ) -> dict[str, Any]:
        """The chat-completions request (public so a user can see exactly what the VLM is asked)."""
        _check_inputs(reference_frame, frame, heatmap)
        k = self.config.upscale
        images = [reference_frame, frame, overlay_heatmap(frame, heatmap)]
        content: list[dict[str, Any]] = [{"type": "text", "text": USER_PROMPT.format(task=task_text)}]
        for image in images:
            large = np.repeat(np.repeat(image, k, axis=0), k, axis=1) if k > 1 else image
            content.append({"type": "image_url", "image_url": {"url": png_data_url(large)}})
        return {
            "model": self.config.model,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}],
            "max_tokens": self.config.max_tokens,
            "temperature": self.config.temperature,
        }

    def __call__(
        self, task_text: str, reference_frame: np.ndarray, frame: np.ndarray, heatmap: np.ndarray
    ) -> tuple[bool, str]:
        _check_inputs(reference_frame, frame, heatmap)
        if self.disabled:  # already warned when the calls began to fail
            return self._fall_back("endpoint", f"VLM endpoint {self.url} not called after {self.failed_calls} failures")
        body = self.request_body(task_text, reference_frame, frame, heatmap)
        try:
            reply = self.complete(body)
        except EndpointError as error:
            self.failed_calls += 1
            self._failures_in_a_row += 1
            return self._fall_back("endpoint", f"VLM endpoint {self.url} failed: {error}")
        self._failures_in_a_row = 0
        verdict = parse_verdict(reply)
        if verdict is None:
            return self._fall_back("unparseable", f"no verdict in the VLM reply {reply[:200]!r}")
        return verdict

    def complete(self, body: dict[str, Any]) -> str:
        """POSTs `body` (with retries and backoff) and returns the reply's text; raises EndpointError."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.config.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        error: Exception | None = None
        for attempt in range(self.config.retries + 1):
            if attempt:
                time.sleep(self.config.backoff_s * 2 ** (attempt - 1))
            self.requests += 1
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                    return _reply_text(json.loads(response.read()))
            except urllib.error.HTTPError as http:
                detail = http.read()[:300].decode(errors="replace")
                error = EndpointError(f"HTTP {http.code}: {detail}")
                if http.code < 500 and http.code not in _RETRYABLE_STATUS:
                    raise error from http  # a bad key, model name or request: asking again will not help
            except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as other:
                error = other  # connection refused, timeout, a body that is not a chat completion
        raise EndpointError(f"{type(error).__name__}: {error} (after {self.config.retries + 1} attempts)")

    def _fall_back(self, kind: str, message: str) -> tuple[bool, str]:
        fallback = self.config.fallback
        if kind not in self._warned:
            self._warned.add(kind)
            limit = self.config.disable_after
            stop = f", and stops calling after {limit} failed calls in a row" if kind == "endpoint" and limit else ""
            warnings.warn(
                f"{message}; the semantic filter answers {fallback!r} for such frames{stop} (said once)",
                RuntimeWarning,
                stacklevel=3,
            )
        return fallback == "failure", f"[fallback: {fallback}] {message}"


def _reply_text(reply: dict[str, Any]) -> str:
    """The assistant text of a chat completion (content as a string or as a list of text parts)."""
    content = reply["choices"][0]["message"]["content"]
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        raise TypeError(f"reply content is {type(content).__name__}, not text")
    return content


# -- trained ----------------------------------------------------------------------------------------------------------


class Example(NamedTuple):
    """One labelled anomalous frame for the trained filter."""

    reference_frame: np.ndarray
    frame: np.ndarray
    heatmap: np.ndarray
    is_failure: bool


@dataclass(frozen=True)
class TrainedConfig:
    """The classifier on top of the frozen features."""

    hidden: int = 0
    """0: logistic regression; > 0: an MLP with one hidden layer of this width."""
    weight_decay: float = 1e-3
    steps: int = 300
    """Full-batch Adam steps."""
    lr: float = 0.05
    threshold: float = 0.5
    """p(failure) above which a frame is a failure."""
    balanced: bool = True
    """Weigh classes equally: anomalous frames of failed rollouts usually outnumber the benign ones."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden < 0 or self.steps < 1 or not 0 < self.threshold < 1:
            raise ValueError(
                f"need hidden >= 0, steps >= 1, 0 < threshold < 1; got hidden={self.hidden}, steps={self.steps}, "
                f"threshold={self.threshold}"
            )


def semantic_features(
    encoder: PatchEncoder, reference_frames: np.ndarray, frames: np.ndarray, heatmaps: np.ndarray
) -> torch.Tensor:
    """(B, D) features of (reference, frame, heatmap) triples for the trained filter.

    What separates a failure from a benign anomaly is what changed and where: pooled patch features of frame and
    reference and of their difference (overall and weighted by the heatmap), per-patch feature distances and the
    heatmap itself (location), heatmap concentration statistics (a lamp changes every patch, a dropped cube a few),
    and the mean colour shift in pixels (lighting).
    """
    import torch

    frames, reference_frames = np.asarray(frames), np.asarray(reference_frames)
    heatmaps = np.asarray(heatmaps, dtype=np.float64)
    if frames.shape != reference_frames.shape or heatmaps.ndim != 3 or len(heatmaps) != len(frames):
        raise ValueError(
            f"need frames and reference frames of one shape (B, H, W, 3) and heatmaps (B, h, w); got "
            f"{frames.shape}, {reference_frames.shape}, {heatmaps.shape}"
        )
    if not np.isfinite(heatmaps).all():
        raise ValueError("heatmaps contain NaN or infinite values")
    grid = encoder.config.grid
    if heatmaps.shape[1:] != (grid, grid):
        heatmaps = np.stack([resize_grid(h, grid, grid) for h in heatmaps])
    current, reference = encoder.encode(frames), encoder.encode(reference_frames)  # (B, P, F)
    difference = current - reference
    heat = torch.from_numpy(np.log1p(np.maximum(heatmaps, 0)).reshape(len(frames), -1)).float()  # (B, P)
    weights = heat / heat.sum(1, keepdim=True).clamp_min(1e-6)
    distance = difference.norm(dim=2)  # (B, P)

    def concentration(values: torch.Tensor) -> torch.Tensor:
        top = values.topk(min(5, values.shape[1]), dim=1).values.mean(1)
        mean = values.mean(1)
        return torch.stack([mean, values.std(1), values.max(1).values, top / mean.clamp_min(1e-6)], 1)

    pixels = (frames.astype(np.float32) - reference_frames.astype(np.float32)) / 255.0
    colour = torch.from_numpy(np.concatenate([pixels.mean((1, 2)), np.abs(pixels).mean((1, 2))], 1))
    parts = [
        current.mean(1), reference.mean(1), difference.abs().mean(1),
        (weights[..., None] * current).sum(1), (weights[..., None] * difference).sum(1),
        distance, heat, concentration(heat), concentration(distance), colour,
    ]  # fmt: skip
    features = torch.cat(parts, 1).float()
    if not torch.isfinite(features).all():
        raise FloatingPointError("the encoder returned NaN or infinite features for the semantic filter")
    return features


def _classifier(dim: int, hidden: int) -> torch.nn.Module:
    from torch import nn

    if hidden == 0:
        return nn.Sequential(nn.Linear(dim, 1))
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))


class TrainedFilter:
    """A classifier of anomalous frames into failure / benign on frozen encoder features (the offline default)."""

    def __init__(
        self,
        encoder: PatchEncoder,
        config: TrainedConfig,
        model: torch.nn.Module,
        feature_mean: torch.Tensor,
        feature_std: torch.Tensor,
        frame_shape: tuple[int, int, int],
        fingerprint: torch.Tensor,
        stats: dict[str, float],
    ):
        self.encoder, self.config, self.model = encoder, config, model.eval()
        self.feature_mean, self.feature_std = feature_mean, feature_std
        self.frame_shape, self.fingerprint, self.stats = tuple(frame_shape), fingerprint, stats

    @classmethod
    def fit(
        cls,
        examples: Sequence[Example | tuple[np.ndarray, np.ndarray, np.ndarray, bool]],
        encoder: PatchEncoder | None = None,
        config: TrainedConfig = TrainedConfig(),
    ) -> "TrainedFilter":
        """Fits on (reference_frame, frame, heatmap, is_failure) examples; `encoder` defaults to the monitor's
        default (shipped EfficientNet-Lite0); pass the monitor's own to share it."""
        import torch

        from monitor.encoders import PatchEncoder
        from monitor.fidel import TORCH_THREADS, torch_threads

        examples = [Example(*e) for e in examples]
        labels = np.array([bool(e.is_failure) for e in examples])
        if len(examples) < 2 or labels.all() or not labels.any():
            raise ValueError(
                f"the trained filter needs failure and benign examples; got {int(labels.sum())} failure and "
                f"{int((~labels).sum())} benign"
            )
        shapes = {e.frame.shape for e in examples} | {e.reference_frame.shape for e in examples}
        if len(shapes) != 1:
            raise ValueError(f"all example frames must have one shape, got {sorted(shapes)}")
        for e in examples:
            _check_inputs(e.reference_frame, e.frame, e.heatmap)
        grids = {np.shape(e.heatmap) for e in examples}
        if len(grids) != 1:
            raise ValueError(f"all example heatmaps must have one shape, got {sorted(grids)}")
        encoder = encoder or PatchEncoder()
        with torch_threads(TORCH_THREADS):
            x = semantic_features(
                encoder,
                np.stack([e.reference_frame for e in examples]),
                np.stack([e.frame for e in examples]),
                np.stack([np.asarray(e.heatmap, dtype=np.float32) for e in examples]),
            )
            y = torch.from_numpy(labels.astype(np.float32))
            mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
            z = (x - mean) / std
            with torch.random.fork_rng():
                torch.manual_seed(config.seed)
                model = _classifier(z.shape[1], config.hidden)
            positives = float(y.sum())
            weight = torch.tensor((len(y) - positives) / positives if config.balanced else 1.0)
            loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=weight)
            optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
            for _ in range(config.steps):
                optimiser.zero_grad()
                loss = loss_fn(model(z)[:, 0], y)
                loss.backward()
                optimiser.step()
            model.eval()
            with torch.no_grad():
                accuracy = float(((torch.sigmoid(model(z)[:, 0]) > config.threshold) == y.bool()).float().mean())
            fingerprint = encoder.fingerprint(shapes.pop())
        stats = {"examples": len(examples), "failures": int(positives), "train_accuracy": accuracy}
        return cls(encoder, config, model, mean, std, examples[0].frame.shape, fingerprint, stats)

    def predict_proba(self, reference_frames: np.ndarray, frames: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
        """p(failure) for a batch (B, H, W, 3), (B, H, W, 3), (B, h, w)."""
        import torch

        from monitor.fidel import TORCH_THREADS, torch_threads

        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[1:] != self.frame_shape or frames.dtype != np.uint8:
            raise ValueError(
                f"frames must be uint8 (B, *{self.frame_shape}) as in training, got {frames.dtype} {frames.shape}"
            )
        with torch_threads(TORCH_THREADS), torch.no_grad():
            x = semantic_features(self.encoder, reference_frames, frames, heatmaps)
            return torch.sigmoid(self.model((x - self.feature_mean) / self.feature_std)[:, 0]).numpy()

    def __call__(
        self, task_text: str, reference_frame: np.ndarray, frame: np.ndarray, heatmap: np.ndarray
    ) -> tuple[bool, str]:
        _check_inputs(reference_frame, frame, heatmap)
        p = float(self.predict_proba(reference_frame[None], frame[None], np.asarray(heatmap)[None])[0])
        verdict = "failure" if p > self.config.threshold else "benign"
        return p > self.config.threshold, f"trained filter: {verdict}, p(failure)={p:.2f}"

    def save(self, path: str | Path) -> Path:
        """Writes semantic_filter.json and semantic_filter.safetensors into the folder `path` (no pickle)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v.detach().contiguous() for k, v in self.model.state_dict().items()}
        tensors.update(feature_mean=self.feature_mean, feature_std=self.feature_std, fingerprint=self.fingerprint)
        save_file(tensors, path / FILTER_TENSORS)
        meta = {
            "format": FORMAT_VERSION, "kind": "trained", "encoder": asdict(self.encoder.config),
            "config": asdict(self.config), "frame_shape": list(self.frame_shape), "stats": self.stats,
        }  # fmt: skip
        (path / FILTER_JSON).write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path, encoder: PatchEncoder | None = None) -> "TrainedFilter":
        """Loads a saved filter; `encoder` (e.g. the monitor's, to share it) must have the saved config."""
        path = Path(path)
        if not (path / FILTER_JSON).is_file() or not (path / FILTER_TENSORS).is_file():
            raise FileNotFoundError(
                f"no saved trained filter in {str(path)!r} (expected {FILTER_JSON} and {FILTER_TENSORS})"
            )
        from safetensors.torch import load_file

        from monitor.config_dicts import config_from_dict
        from monitor.encoders import EncoderConfig, PatchEncoder

        meta = json.loads((path / FILTER_JSON).read_text())
        if meta.get("format") != FORMAT_VERSION or meta.get("kind") != "trained":
            raise ValueError(
                f"{str(path)!r} holds format {meta.get('format')!r} kind {meta.get('kind')!r}; this code reads "
                f"format {FORMAT_VERSION} kind 'trained'"
            )
        saved = config_from_dict(EncoderConfig, meta["encoder"])
        if encoder is not None and encoder.config != saved:
            raise ValueError(f"the filter in {str(path)!r} was fitted with encoder {saved}, not {encoder.config}")
        encoder = encoder or PatchEncoder(saved)
        tensors = load_file(path / FILTER_TENSORS)
        frame_shape = tuple(meta["frame_shape"])
        encoder.check_fingerprint(tensors["fingerprint"], frame_shape, f"the filter in {str(path)!r}")
        config = TrainedConfig(**meta["config"])
        model = _classifier(tensors["feature_mean"].shape[0], config.hidden)
        model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
        return cls(
            encoder, config, model, tensors["feature_mean"], tensors["feature_std"], frame_shape,
            tensors["fingerprint"], meta["stats"],
        )  # fmt: skip


def examples_from_failures(
    paths: Sequence[str | Path],
    monitor: FidelMonitor,
    max_per_rollout: int | None = None,
    image_key: str | None = None,
) -> list[Example]:
    """Training examples for the trained filter from failure datasets (diagnosis/dataset.py) a monitor watched.

    Every frame the monitor flagged (`anomaly`) becomes an example with the monitor memory's reference frame at
    its `t_min` and its stored heatmap. Label (kept simple, on purpose): the rollout's `sim_failure`, i.e. every
    anomaly of a rollout that failed in simulation is a failure and every anomaly of one that succeeded is benign;
    early anomalies of failed rollouts are therefore noisy positives. `max_per_rollout` keeps that many flagged
    frames per rollout, evenly spaced, so long failed rollouts do not drown the rest. Rollouts without monitor
    labels are skipped; `image_key` defaults to the file's one `*_image` observation.
    """
    import h5py

    from envs.hdf5 import demo_names

    reference_frames = monitor.memory.reference_frames
    examples: list[Example] = []
    labelled = 0
    for path in paths:
        with h5py.File(path, "r") as file:
            task = file["data"].attrs.get("task")
            if task is not None and task != monitor.task:
                raise ValueError(f"{str(path)!r} holds task {task!r} but the monitor was fitted for {monitor.task!r}")
            for name in demo_names(file):
                group = file["data"][name]
                if not all(k in group for k in ("anomaly", "t_min", "heatmap")):
                    continue
                labelled += 1
                key = image_key or _image_key(group["obs"], path)
                flagged = np.flatnonzero(group["anomaly"][:])
                if max_per_rollout is not None and len(flagged) > max_per_rollout:
                    flagged = flagged[np.rint(np.linspace(0, len(flagged) - 1, max_per_rollout)).astype(int)]
                if not len(flagged):
                    continue
                frames, t_min, heatmaps = group["obs"][key][:], group["t_min"][:], group["heatmap"][:]
                label = bool(group.attrs["sim_failure"])
                for i in flagged:
                    examples.append(
                        Example(reference_frames[t_min[i]], frames[i], heatmaps[i].astype(np.float32), label)
                    )
    if not labelled:
        raise ValueError(
            f"none of {[str(p) for p in paths]} has monitor labels (anomaly, t_min, heatmap): run the search with a "
            "monitor (monitor=fidel) to record them"
        )
    return examples


def _image_key(obs: Any, path: str | Path) -> str:
    keys = [k for k in obs if k.endswith("_image")]
    if len(keys) != 1:
        raise ValueError(f"{str(path)!r} has image observations {keys}; pass image_key= one of them")
    return keys[0]


# -- registry ---------------------------------------------------------------------------------------------------------


def _build_none(**options: Any) -> SemanticFilter:
    if options:
        raise ValueError(f"the none filter takes no options, got {sorted(options)}")
    return NoFilter()


def _build_vlm(**options: Any) -> SemanticFilter:
    valid = [f.name for f in fields(VLMConfig)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for the vlm filter; valid: {', '.join(valid)}")
    return VLMFilter(VLMConfig(**options))


def _build_trained(
    path: str | Path | None = None, encoder: PatchEncoder | None = None, **options: Any
) -> SemanticFilter:
    if options:
        raise ValueError(f"unknown option(s) {sorted(options)} for the trained filter; valid: path, encoder")
    if path is None:
        raise ValueError("the trained filter needs path= a folder written by TrainedFilter.save")
    return TrainedFilter.load(path, encoder)


SEMANTIC_FILTERS: dict[str, Callable[..., SemanticFilter]] = {
    "none": _build_none,
    "vlm": _build_vlm,
    "trained": _build_trained,
}
"""Backend name → factory taking the backend's options."""


def build_semantic_filter(name: str, **options: Any) -> SemanticFilter:
    """The semantic filter `name` (none, vlm, trained) with its options, e.g. from a Hydra config group.

    vlm: the fields of VLMConfig (base_url, model, api_key_env, timeout_s, retries, ...); trained: path (a folder
    written by TrainedFilter.save) and optionally encoder (the monitor's PatchEncoder, to share it).
    """
    if name not in SEMANTIC_FILTERS:
        raise ValueError(f"unknown semantic filter {name!r}; valid: {', '.join(SEMANTIC_FILTERS)}")
    return SEMANTIC_FILTERS[name](**options)
