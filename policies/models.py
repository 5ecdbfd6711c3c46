"""Behaviour-cloning networks (pure `nn.Module`s; training glue lives in policies.train).

The image encoder follows robomimic's small-data recipe: a conv trunk, a spatial-softmax keypoint layer (where
things are matters more than what they are), and random crops during training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from envs.choices import check_choice


@dataclass
class ModelConfig:
    """Architecture of a BC policy; saved with every checkpoint."""

    arch: str = "bc_image"
    """bc_image | bc_rnn | bc_lowdim"""
    image_size: int = 84
    crop_size: int = 76
    """Random crop while training, centre crop at inference."""
    proprio_dim: int = 9
    """robot0_eef_pos (3) + robot0_eef_quat (4) + robot0_gripper_qpos (2)."""
    state_dim: int = 0
    """object-state size, for bc_lowdim."""
    action_dim: int = 7
    channels: tuple[int, ...] = (32, 64, 64)
    keypoints: int = 32
    hidden: tuple[int, ...] = (256, 256)
    rnn_hidden: int = 256
    window: int = 10
    """Sequence length of bc_rnn training windows."""

    def to_dict(self) -> dict:
        return asdict(self)


ARCHS = ("bc_image", "bc_rnn", "bc_lowdim")


class SpatialSoftmax(nn.Module):
    """Feature maps → expected (x, y) of each of `keypoints` learned channels."""

    def __init__(self, channels: int, keypoints: int):
        super().__init__()
        self.project = nn.Conv2d(channels, keypoints, kernel_size=1)
        self.temperature = nn.Parameter(torch.ones(1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        maps = self.project(features)
        batch, k, h, w = maps.shape
        attention = F.softmax(maps.reshape(batch, k, h * w) / self.temperature, dim=-1)
        ys, xs = torch.meshgrid(
            torch.linspace(-1, 1, h, device=maps.device), torch.linspace(-1, 1, w, device=maps.device), indexing="ij"
        )
        grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)
        return (attention @ grid).reshape(batch, 2 * k)


class ImageEncoder(nn.Module):
    """uint8 (B, H, W, 3) frames → keypoint features (B, 2·keypoints)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        layers, in_ch = [], 3
        for i, out_ch in enumerate(config.channels):
            layers += [
                nn.Conv2d(in_ch, out_ch, 3, stride=2 if i < 2 else 1, padding=1),
                nn.GroupNorm(8, out_ch),
                nn.ReLU(),
            ]
            in_ch = out_ch
        self.trunk = nn.Sequential(*layers)
        self.keypoints = SpatialSoftmax(in_ch, config.keypoints)
        self.out_dim = 2 * config.keypoints

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255.0 - 0.5
        return self.keypoints(self.trunk(x))


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


class BCImage(nn.Module):
    """Image + proprioception → action."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.encoder = ImageEncoder(config)
        self.head = mlp([self.encoder.out_dim + config.proprio_dim, *config.hidden, config.action_dim])

    def forward(self, images: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(torch.cat([self.encoder(images), proprio], dim=-1)))


class BCRNN(nn.Module):
    """Image + proprioception per step → GRU over time → action per step. `hidden` carries memory online."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.encoder = ImageEncoder(config)
        self.rnn = nn.GRU(self.encoder.out_dim + config.proprio_dim, config.rnn_hidden, batch_first=True)
        self.head = mlp([config.rnn_hidden, *config.hidden, config.action_dim])

    def forward(
        self, images: torch.Tensor, proprio: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, steps = images.shape[:2]
        features = self.encoder(images.reshape(batch * steps, *images.shape[2:])).reshape(batch, steps, -1)
        out, hidden = self.rnn(torch.cat([features, proprio], dim=-1), hidden)
        return torch.tanh(self.head(out)), hidden


class BCLowdim(nn.Module):
    """Proprioception + object state → action (privileged: blind to visual perturbations)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.head = mlp([config.proprio_dim + config.state_dim, *config.hidden, config.action_dim])

    def forward(self, proprio: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(torch.cat([proprio, state], dim=-1)))


def build_model(config: ModelConfig) -> nn.Module:
    builders = {"bc_image": BCImage, "bc_rnn": BCRNN, "bc_lowdim": BCLowdim}
    check_choice(config.arch, builders, "arch")
    return builders[config.arch](config)
