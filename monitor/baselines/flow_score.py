"""FAIL-Detect's logpZO score (Xu et al., 2025) as a baseline: how unlikely the *policy's own* view of a frame is
under nominal executions. Unlike the other baselines it reads no generic image features: it asks the policy under
test what it extracted from the frame (the keypoints of its image encoder), which is what the policy acts on.

A flow-matching network learns to carry Gaussian noise z to the learning frames' normalised policy features x
along straight paths x_t = (1 − t)·z + t·x (rectified flow; target velocity x − z). For a new feature x the
network's velocity at t = 1 points back to where its noise came from, ẑ = x − v(x, 1); FAIL-Detect's score is
‖ẑ‖² (here divided by the dimension): nominal features map to likely noise, unfamiliar ones far out. The score has
no place in the image, so the heatmap is uniform. Needs an image policy (a shipped checkpoint or its folder).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from monitor.base import SemanticFilter
from monitor.baselines.base import Calibration, ThresholdMonitor


@dataclass(frozen=True)
class FlowScoreConfig:
    policy: str = "lift_bc_image"
    """The image policy whose encoder gives the features (a shipped name or a checkpoint folder)."""
    hidden: int = 256
    """Width of the velocity network's two hidden layers."""
    steps: int = 3000
    """Training steps (batches) of flow matching."""
    batch_size: int = 256
    learning_rate: float = 1e-3
    seed: int = 0
    """Seed of the weights, the batches and the noise."""
    grid: int = 7
    """Heatmap cells per side (uniform: the score has no place)."""
    calibration: Calibration = field(default_factory=Calibration)

    def __post_init__(self) -> None:
        for name in ("hidden", "steps", "batch_size", "grid"):
            if getattr(self, name) < 1:
                raise ValueError(f"FlowScoreConfig.{name} must be >= 1, got {getattr(self, name)!r}")


class VelocityNet(nn.Module):
    """(x_t, t) → velocity, an MLP with t appended to the input."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, dim)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, t[:, None]], dim=1))


class PolicyFeatures:
    """The policy's image-encoder output for frames, cropped as the policy crops them."""

    def __init__(self, policy_name: str):
        from policies.learned import BCPolicy, center_crop
        from policies.registry import load_policy

        policy, _ = load_policy(policy_name)
        encoder = getattr(getattr(policy, "model", None), "encoder", None)
        if not isinstance(policy, BCPolicy) or encoder is None:
            raise ValueError(f"logpzo reads an image policy's encoder; {policy_name!r} has none (a low-dim policy?)")
        self.encoder, self.crop, self._center_crop = encoder.eval(), policy.config.crop_size, center_crop

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        images = self._center_crop(torch.from_numpy(np.ascontiguousarray(frames)), self.crop)
        return self.encoder(images).float()


def train_flow(features: torch.Tensor, config: FlowScoreConfig) -> VelocityNet:
    """Flow matching on (N, D) normalised features; deterministic for a seed and thread count."""
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    net = VelocityNet(features.shape[1], config.hidden)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    for _ in range(config.steps):
        x = features[torch.randint(len(features), (config.batch_size,), generator=generator)]
        z = torch.randn(x.shape, generator=generator)
        t = torch.rand(len(x), generator=generator)
        x_t = (1 - t[:, None]) * z + t[:, None] * x
        loss = ((net(x_t, t) - (x - z)) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return net.eval()


class FlowScorer:
    """‖x − v(x, 1)‖² / D of each frame's normalised policy features."""

    def __init__(self, features: PolicyFeatures, net: VelocityNet, mean: torch.Tensor, std: torch.Tensor, config):
        self.features, self.net, self.mean, self.std, self.config = features, net, mean, std, config

    def tensors(self) -> dict[str, torch.Tensor]:
        return {**{f"net.{k}": v for k, v in self.net.state_dict().items()}, "mean": self.mean, "std": self.std}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: FlowScoreConfig) -> FlowScorer:
        net = VelocityNet(len(tensors["mean"]), config.hidden)
        net.load_state_dict({k[len("net.") :]: v for k, v in tensors.items() if k.startswith("net.")})
        return cls(PolicyFeatures(config.policy), net.eval(), tensors["mean"], tensors["std"], config)

    @torch.inference_mode()
    def score(self, frames: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = (self.features(frames) - self.mean) / self.std
        noise = x - self.net(x, torch.ones(len(x)))
        scores = (noise**2).mean(1).double().numpy()
        grid = self.config.grid
        return scores, np.repeat(scores.astype(np.float32)[:, None, None], grid * grid, 1).reshape(-1, grid, grid)


class FlowScoreMonitor(ThresholdMonitor):
    """The logpZO baseline as a runtime monitor; build it with `fit` or `load`."""

    kind, config_class, scorer_class = "logpzo", FlowScoreConfig, FlowScorer

    @classmethod
    def fit(
        cls,
        task: str,
        nominal_episodes: Sequence[np.ndarray],
        config: FlowScoreConfig = FlowScoreConfig(),
        semantic_filter: SemanticFilter | None = None,
    ) -> FlowScoreMonitor:
        """Learns the flow on the learning episodes' policy features and calibrates on the others."""
        features = PolicyFeatures(config.policy)

        def build(learn: list[int]) -> FlowScorer:
            x = torch.cat([features(nominal_episodes[i]) for i in learn])
            mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
            return FlowScorer(features, train_flow((x - mean) / std, config), mean, std, config)

        return cls.fit_scorer(task, nominal_episodes, config, build, semantic_filter=semantic_filter)
