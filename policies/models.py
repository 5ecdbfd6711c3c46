"""Behaviour-cloning networks (pure `nn.Module`s; training glue lives in policies.train).

The image encoder follows robomimic's small-data recipe: a conv trunk, a spatial-softmax keypoint layer (where
things are matters more than what they are), and random crops during training. The diffusion policy puts the same
encoder in front of a denoiser over a chunk of future actions (Chi et al., Diffusion Policy, 2023); its noise
schedules are diffusers' (policies/diffusion.py).
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
    """bc_image | bc_rnn | bc_lowdim | diffusion"""
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
    chunk: int = 8
    """diffusion: future actions denoised together."""
    execute: int = 4
    """diffusion: actions of each chunk executed before the next is sampled."""
    diffusion_steps: int = 100
    """diffusion: noise levels of the training schedule."""
    sampling_steps: int = 10
    """diffusion: DDIM steps per sampled chunk at run time."""

    def to_dict(self) -> dict:
        return asdict(self)


ARCHS = ("bc_image", "bc_rnn", "bc_lowdim", "diffusion")


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


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of integer noise levels (B,) → (B, dim), as in DDPM."""
    half = dim // 2
    freqs = torch.exp(-torch.log(torch.tensor(10_000.0)) * torch.arange(half, dtype=torch.float32) / half)
    angles = timesteps.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class DiffusionImage(nn.Module):
    """Image + proprioception → a denoiser of `chunk` future actions. The observation is encoded once per chunk;
    the denoiser is an MLP on (noisy chunk, observation features, noise level), predicting the added noise."""

    time_dim = 32

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.chunk, self.action_dim = config.chunk, config.action_dim
        self.encoder = ImageEncoder(config)
        width = config.hidden[-1] * 2
        self.denoiser = mlp(
            [
                config.chunk * config.action_dim + self.encoder.out_dim + config.proprio_dim + self.time_dim,
                width,
                width,
                width,
                config.chunk * config.action_dim,
            ]
        )

    def encode(self, images: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.encoder(images), proprio], dim=-1)

    def denoise(self, noisy: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """(B, chunk, action_dim) noisy actions at noise levels (B,) → predicted noise of the same shape."""
        batch = noisy.shape[0]
        features = [noisy.reshape(batch, -1), condition, timestep_embedding(timesteps, self.time_dim)]
        return self.denoiser(torch.cat(features, dim=-1)).reshape(batch, self.chunk, self.action_dim)


def build_model(config: ModelConfig) -> nn.Module:
    builders = {"bc_image": BCImage, "bc_rnn": BCRNN, "bc_lowdim": BCLowdim, "diffusion": DiffusionImage}
    check_choice(config.arch, builders, "arch")
    return builders[config.arch](config)
