"""Convolutional autoencoder baseline: frames the network cannot reconstruct are anomalous.

A small conv encoder squeezes a downscaled frame into a latent vector and a transposed-conv decoder rebuilds it;
trained for a few epochs on the CPU on the learning episodes' frames (MSE), it reconstructs what nominal frames look
like and blurs what they never contain. Frame score = mean squared reconstruction error (pixels in [0, 1]);
heatmap = that error averaged over each grid cell. No pretrained features: the baseline that learns from pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from monitor.base import SemanticFilter
from monitor.baselines.base import Calibration, ThresholdMonitor


@dataclass(frozen=True)
class AutoencoderConfig:
    image_size: int = 64
    """Frames are resized to this square size (a multiple of 8)."""
    width: int = 16
    """Channels of the first conv layer (doubled at each of the three downsamplings)."""
    latent: int = 64
    """Size of the bottleneck vector."""
    epochs: int = 30
    """Passes over the learning frames."""
    batch_size: int = 32
    learning_rate: float = 2e-3
    seed: int = 0
    """Seed of the weights and the batch order."""
    grid: int = 7
    """Heatmap cells per side (FIDeL's patch grid)."""
    calibration: Calibration = field(default_factory=Calibration)
    """Split and threshold (FIDeL's α, memory fraction and split seed by default)."""

    def __post_init__(self) -> None:
        if self.image_size < 8 or self.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8, got {self.image_size!r}")
        for name in ("width", "latent", "epochs", "batch_size", "grid"):
            if getattr(self, name) < 1:
                raise ValueError(f"AutoencoderConfig.{name} must be >= 1, got {getattr(self, name)!r}")


class ConvAutoencoder(nn.Module):
    """(B, 3, S, S) in [0, 1] → reconstruction of the same shape, through a `latent`-dim bottleneck."""

    def __init__(self, image_size: int = 64, width: int = 16, latent: int = 64):
        super().__init__()
        self.side = image_size // 8
        channels = [3, width, 2 * width, 4 * width]
        down = []
        for cin, cout in zip(channels, channels[1:]):
            down += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
        self.encoder = nn.Sequential(*down, nn.Flatten(), nn.Linear(4 * width * self.side**2, latent))
        self.expand = nn.Linear(latent, 4 * width * self.side**2)
        up = []
        reversed_channels = channels[::-1]
        for i, (cin, cout) in enumerate(zip(reversed_channels, reversed_channels[1:])):
            up.append(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1))
            up.append(nn.ReLU(inplace=True) if i < len(channels) - 2 else nn.Sigmoid())
        self.decoder = nn.Sequential(*up)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.expand(self.encoder(x)).relu()
        return self.decoder(z.view(len(x), 4 * self.width, self.side, self.side))


def to_input(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (B, H, W, 3) → float (B, 3, size, size) in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > size)
    return x


def train_autoencoder(frames: np.ndarray, config: AutoencoderConfig) -> ConvAutoencoder:
    """Trains on nominal frames (N, H, W, 3) uint8; deterministic for a seed and thread count."""
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = ConvAutoencoder(config.image_size, config.width, config.latent)
    data = to_input(frames, config.image_size)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    model.train()
    for _ in range(config.epochs):
        for batch in torch.randperm(len(data), generator=generator).split(config.batch_size):
            loss = F.mse_loss(model(data[batch]), data[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


class AutoencoderScorer:
    """Reconstruction error per frame and per grid cell."""

    def __init__(self, model: ConvAutoencoder, config: AutoencoderConfig):
        self.model, self.config = model, config

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict())

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: AutoencoderConfig) -> AutoencoderScorer:
        model = ConvAutoencoder(config.image_size, config.width, config.latent)
        model.load_state_dict(tensors)
        return cls(model.eval(), config)

    @torch.inference_mode()
    def score(self, frames: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = to_input(frames, self.config.image_size)
        error = ((self.model(x) - x) ** 2).mean(1, keepdim=True)  # (B, 1, S, S)
        heatmaps = F.adaptive_avg_pool2d(error, self.config.grid)[:, 0]
        return error.flatten(1).mean(1).double().numpy(), heatmaps.float().numpy()


class AutoencoderMonitor(ThresholdMonitor):
    """The autoencoder baseline as a runtime monitor; build it with `fit` or `load`."""

    kind, config_class, scorer_class = "autoencoder", AutoencoderConfig, AutoencoderScorer

    @classmethod
    def fit(
        cls,
        task: str,
        nominal_episodes: Sequence[np.ndarray],
        config: AutoencoderConfig = AutoencoderConfig(),
        semantic_filter: SemanticFilter | None = None,
    ) -> AutoencoderMonitor:
        """Trains on the learning episodes' frames (T_i, H, W, 3) uint8 and calibrates on the others."""

        def build(learn: list[int]) -> AutoencoderScorer:
            frames = np.concatenate([nominal_episodes[i] for i in learn])
            return AutoencoderScorer(train_autoencoder(frames, config), config)

        return cls.fit_scorer(task, nominal_episodes, config, build, semantic_filter=semantic_filter)
