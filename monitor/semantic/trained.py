"""The `trained` semantic filter, the offline default: a logistic regression (or tiny MLP) on frozen encoder
features of frame and reference, their difference and heatmap statistics, fitted on labelled anomalous frames of
simulated rollouts (`examples_from_failures`, monitor/train_filter.py), saved as safetensors + JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import h5py
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from monitor.config_dicts import config_from_dict
from monitor.encoders import EncoderConfig, PatchEncoder
from monitor.fidel import TORCH_THREADS, torch_threads
from monitor.semantic.images import check_inputs, resize_grid

if TYPE_CHECKING:
    from monitor.fidel import FidelMonitor

FORMAT_VERSION = 1
FILTER_JSON, FILTER_TENSORS = "semantic_filter.json", "semantic_filter.safetensors"


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
        current.mean(1),
        reference.mean(1),
        difference.abs().mean(1),
        (weights[..., None] * current).sum(1),
        (weights[..., None] * difference).sum(1),
        distance,
        heat,
        concentration(heat),
        concentration(distance),
        colour,
    ]
    features = torch.cat(parts, 1).float()
    if not torch.isfinite(features).all():
        raise FloatingPointError("the encoder returned NaN or infinite features for the semantic filter")
    return features


def _classifier(dim: int, hidden: int) -> torch.nn.Module:
    if hidden == 0:
        return nn.Sequential(nn.Linear(dim, 1))
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))


class TrainedFilter:
    """A classifier of anomalous frames into failure / benign on frozen encoder features (the offline default)."""

    def __init__(
        self,
        *,
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
    ) -> TrainedFilter:
        """Fits on (reference_frame, frame, heatmap, is_failure) examples; `encoder` defaults to the monitor's
        default (shipped EfficientNet-Lite0); pass the monitor's own to share it."""
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
            check_inputs(e.reference_frame, e.frame, e.heatmap)
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
        return cls(
            encoder=encoder,
            config=config,
            model=model,
            feature_mean=mean,
            feature_std=std,
            frame_shape=examples[0].frame.shape,
            fingerprint=fingerprint,
            stats=stats,
        )

    def predict_proba(self, reference_frames: np.ndarray, frames: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
        """p(failure) for a batch (B, H, W, 3), (B, H, W, 3), (B, h, w)."""
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
        check_inputs(reference_frame, frame, heatmap)
        p = float(self.predict_proba(reference_frame[None], frame[None], np.asarray(heatmap)[None])[0])
        verdict = "failure" if p > self.config.threshold else "benign"
        return p > self.config.threshold, f"trained filter: {verdict}, p(failure)={p:.2f}"

    def save(self, path: str | Path) -> Path:
        """Writes semantic_filter.json and semantic_filter.safetensors into the folder `path` (no pickle)."""

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v.detach().contiguous() for k, v in self.model.state_dict().items()}
        tensors.update(feature_mean=self.feature_mean, feature_std=self.feature_std, fingerprint=self.fingerprint)
        save_file(tensors, path / FILTER_TENSORS)
        meta = {
            "format": FORMAT_VERSION,
            "kind": "trained",
            "encoder": asdict(self.encoder.config),
            "config": asdict(self.config),
            "frame_shape": list(self.frame_shape),
            "stats": self.stats,
        }
        (path / FILTER_JSON).write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path, encoder: PatchEncoder | None = None) -> TrainedFilter:
        """Loads a saved filter; `encoder` (e.g. the monitor's, to share it) must have the saved config."""
        path = Path(path)
        if not (path / FILTER_JSON).is_file() or not (path / FILTER_TENSORS).is_file():
            raise FileNotFoundError(
                f"no saved trained filter in {str(path)!r} (expected {FILTER_JSON} and {FILTER_TENSORS})"
            )

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
            encoder=encoder,
            config=config,
            model=model,
            feature_mean=tensors["feature_mean"],
            feature_std=tensors["feature_std"],
            frame_shape=frame_shape,
            fingerprint=tensors["fingerprint"],
            stats=meta["stats"],
        )


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
    from envs.hdf5 import demo_names  # envs.hdf5 imports the simulator: only when reading rollouts

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
