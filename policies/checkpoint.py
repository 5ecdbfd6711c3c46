"""Checkpoints that load without executing code: safetensors weights + a JSON config (+ a model card).

<dir>/model.safetensors   weights
<dir>/config.json         {"format": "failscope-bc/1", task, model (ModelConfig), normalization, training}
<dir>/MODEL_CARD.md       what it is, how it was trained, measured success
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from policies.models import ModelConfig, build_model

FORMAT = "failscope-bc/1"
WEIGHTS, CONFIG = "model.safetensors", "config.json"


@dataclass
class Normalization:
    """Mean/std of the low-dimensional inputs, from the training data."""

    proprio_mean: list[float]
    proprio_std: list[float]
    state_mean: list[float] = field(default_factory=list)
    state_std: list[float] = field(default_factory=list)

    def proprio(self, x: np.ndarray) -> np.ndarray:
        return (x - np.asarray(self.proprio_mean)) / np.asarray(self.proprio_std)

    def state(self, x: np.ndarray) -> np.ndarray:
        return (x - np.asarray(self.state_mean)) / np.asarray(self.state_std)


@dataclass
class Checkpoint:
    task: str
    model_config: ModelConfig
    normalization: Normalization
    state_dict: dict[str, torch.Tensor]
    training: dict[str, Any] = field(default_factory=dict)

    def build(self) -> torch.nn.Module:
        model = build_model(self.model_config)
        model.load_state_dict(self.state_dict)
        return model.eval()


def save_checkpoint(directory: str | Path, checkpoint: Checkpoint) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in checkpoint.state_dict.items()}, directory / WEIGHTS)
    config = {
        "format": FORMAT,
        "task": checkpoint.task,
        "model": checkpoint.model_config.to_dict(),
        "normalization": checkpoint.normalization.__dict__,
        "training": checkpoint.training,
    }
    (directory / CONFIG).write_text(json.dumps(config, indent=2))
    return directory


def load_checkpoint(directory: str | Path) -> Checkpoint:
    """Reads a checkpoint directory; errors name the file and what was expected."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG, directory / WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing; a FailScope checkpoint is a directory with {CONFIG} and {WEIGHTS}"
            )
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config_path} is not valid JSON ({exc}); expected a {FORMAT} config") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} holds a JSON {type(config).__name__}; expected a {FORMAT} config object")
    if config.get("format") != FORMAT:
        raise ValueError(f"{config_path} has format {config.get('format')!r}; expected {FORMAT!r}")
    try:
        state_dict = load_file(weights_path)
    except Exception as exc:  # safetensors raises its own error types for truncated or foreign files
        raise ValueError(f"{weights_path} is not a readable safetensors file ({exc})") from None
    missing = [k for k in ("task", "model", "normalization") if k not in config]
    if missing:
        raise ValueError(f"{config_path} lacks {', '.join(missing)}; expected a {FORMAT} config")
    try:
        model = dict(config["model"])
        for key in ("channels", "hidden"):
            if key in model:
                model[key] = tuple(model[key])
        model_config = ModelConfig(**model)
        normalization = Normalization(**config["normalization"])
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{config_path}: bad model or normalization entry ({exc}); expected a {FORMAT} config"
        ) from None
    mismatch = weight_mismatch(model_config, state_dict)
    if mismatch:
        raise ValueError(
            f"checkpoint {directory}: {WEIGHTS} does not match the model in {CONFIG} ({mismatch}); the two files come "
            "from different trainings: restore the pair, or retrain (python -m policies.train)"
        )
    return Checkpoint(
        task=config["task"],
        model_config=model_config,
        normalization=normalization,
        state_dict=state_dict,
        training=config.get("training", {}),
    )


def weight_mismatch(model_config: ModelConfig, state_dict: dict[str, torch.Tensor], show: int = 3) -> str:
    """What keeps `state_dict` from loading into the model `model_config` describes ('' when nothing): the first
    `show` tensors of each kind (missing, unexpected, wrong shape), so a config/weights mix-up is one readable line
    instead of torch's page of size mismatches."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        expected = {k: tuple(v.shape) for k, v in build_model(model_config).state_dict().items()}
    stored = {k: tuple(v.shape) for k, v in state_dict.items()}

    def listed(what: str, items: list[str]) -> str:
        more = f" and {len(items) - show} more" if len(items) > show else ""
        return f"{len(items)} {what}: {', '.join(items[:show])}{more}"

    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    shapes = [
        f"{k} {list(stored[k])} vs {list(expected[k])}" for k in expected if k in stored and stored[k] != expected[k]
    ]
    parts = [
        listed(what, items)
        for what, items in (
            ("with the wrong shape (weights vs config)", shapes),
            ("missing", missing),
            ("unexpected", unexpected),
        )
        if items
    ]
    return "; ".join(parts)
