"""RoboMD's vision–language failure embedding: the pure model and its loss (Eq. 1).

A rollout enters as frozen features — camera frames through an image encoder, its perturbations' descriptions
through a sentence encoder — and leaves as a point in R^dim plus a success logit. The loss makes distance mean
"fails alike": binary cross-entropy on the success head, plus a contrastive term that pulls rollouts with the same
outcome together and pushes rollouts with different outcomes at least `margin` apart. The continuous search
(diagnosis.continuous_env) moves through this space, and a perturbation that was never rolled out is placed in it
from one rendered frame and its description (diagnosis.rank_unseen). Data, encoders and training: diagnosis.embed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class EmbeddingConfig:
    image_dim: int
    """Width of the frozen image features."""
    text_dim: int
    """Width of the frozen text features; 0 embeds the image alone (the ablation)."""
    dim: int = 512
    """Width of the embedding (RoboMD: 512); the continuous search's action space."""
    hidden: int = 512
    """Width of the MLP's hidden layer."""
    dropout: float = 0.1
    """Dropout on the hidden layer: a few hundred rollouts train it."""


class FailureEmbedding(nn.Module):
    """(image features, text features) → (embedding in R^dim, success logit).

    Inputs are standardised with the training set's statistics, kept as buffers so that a saved model embeds new
    inputs exactly as it embedded its training data.
    """

    def __init__(self, config: EmbeddingConfig):
        super().__init__()
        self.config = config
        width = config.image_dim + config.text_dim
        self.register_buffer("input_mean", torch.zeros(width))
        self.register_buffer("input_std", torch.ones(width))
        self.mlp = nn.Sequential(
            nn.Linear(width, config.hidden), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(config.hidden, config.dim)
        )
        self.success_head = nn.Linear(config.dim, 1)

    def inputs(self, image: Tensor, text: Tensor | None) -> Tensor:
        """The concatenated raw input; text is ignored by an image-only model."""
        if self.config.text_dim == 0:
            return image
        if text is None:
            raise ValueError("this embedding reads perturbation descriptions: text features are required")
        return torch.cat([image, text], dim=-1)

    def fit_input_statistics(self, image: Tensor, text: Tensor | None) -> None:
        """Standardise inputs like these (frozen CNN and sentence features differ in scale by orders of magnitude)."""
        x = self.inputs(image, text)
        self.input_mean.copy_(x.mean(dim=0))
        self.input_std.copy_(x.std(dim=0).clamp_min(1e-6))

    def forward(self, image: Tensor, text: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z = self.mlp((self.inputs(image, text) - self.input_mean) / self.input_std)
        return z, self.success_head(z).squeeze(-1)


def contrastive_loss(embeddings: Tensor, labels: Tensor, margin: float) -> Tensor:
    """Mean over distinct pairs of y·d² + (1−y)·max(0, margin − d)², y = 1 when the pair shares a label
    (Hadsell et al. 2006; RoboMD Eq. 1 with outcomes as labels)."""
    norms = embeddings.pow(2).sum(-1)
    squared = (norms[:, None] + norms[None, :] - 2 * embeddings @ embeddings.T).clamp_min(0)
    distance = (squared + 1e-12).sqrt()  # the epsilon keeps the gradient finite for coinciding points
    same = labels[:, None] == labels[None, :]
    pairs = ~torch.eye(len(labels), dtype=torch.bool, device=embeddings.device)
    per_pair = torch.where(same, squared, F.relu(margin - distance).pow(2))
    return per_pair[pairs].mean()


@dataclass(frozen=True)
class EmbeddingLoss:
    """RoboMD Eq. 1: BCE on success + λ · contrastive over outcomes."""

    margin: float = 1.0
    """Distance rollouts with different outcomes are pushed to; sets the embedding's scale."""
    contrastive_weight: float = 1.0
    """λ; 0 trains with BCE alone (the ablation)."""

    def __call__(self, embeddings: Tensor, logits: Tensor, success: Tensor) -> dict[str, Tensor]:
        bce = F.binary_cross_entropy_with_logits(logits, success.float())
        contrastive = (
            contrastive_loss(embeddings, success, self.margin) if self.contrastive_weight > 0 else torch.zeros_like(bce)
        )
        return {"loss": bce + self.contrastive_weight * contrastive, "bce": bce, "contrastive": contrastive}
