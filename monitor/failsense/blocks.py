"""I-FailSense's classification heads and their arbitration (../shared/seeds/001, §IV-B.2 and Fig. 2B).

An FS block reads one layer's token features (B, L, D) of the frozen, post-trained language model and outputs one
failure logit: hybrid attention pooling (a learned query attending over the tokens with multi-head attention,
beside an MLP that scores each token for a softmax-weighted mean), then residual MLP blocks with batch
normalisation, then a linear binary head. Blocks sit on K layers evenly spread over the model's depth; at inference
each block's vote and the stage-1 head's ("the VLM's answer") are combined by weighted voting.

Label convention throughout: 1 = the trajectory fails its instruction, 0 = it succeeds.
"""

from __future__ import annotations

import torch
from torch import nn


def evenly_spaced_layers(num_layers: int, k: int) -> tuple[int, ...]:
    """K layer indices in 1..num_layers (hidden_states[0] is the embeddings), evenly spread and ending at the last:
    6 layers, K = 3 → (2, 4, 6)."""
    if not 1 <= k <= num_layers:
        raise ValueError(f"need 1 <= K <= {num_layers} layers, got K={k}")
    return tuple(round(num_layers * (i + 1) / k) for i in range(k))


class HybridAttentionPooling(nn.Module):
    """(B, L, D) tokens with a padding mask → (B, 2D): a learned query's multi-head attention over the tokens,
    concatenated with an MLP-scored softmax-weighted mean of them."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.score = nn.Sequential(nn.Linear(dim, dim // 2), nn.GELU(), nn.Linear(dim // 2, 1))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        padding = ~mask.bool()
        attended, _ = self.attention(
            self.query.expand(len(tokens), -1, -1), tokens, tokens, key_padding_mask=padding, need_weights=False
        )
        weights = self.score(tokens).squeeze(-1).masked_fill(padding, float("-inf")).softmax(dim=-1)
        weighted = (weights.unsqueeze(-1) * tokens).sum(dim=1)
        return torch.cat([attended.squeeze(1), weighted], dim=-1)


class ResidualBlock(nn.Module):
    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim)
        )
        self.norm = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(self.norm(x + self.body(x)))


class FSBlock(nn.Module):
    """One layer's tokens (B, L, D) and mask (B, L) → a failure logit (B,)."""

    def __init__(self, dim: int, *, hidden: int = 256, depth: int = 2, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"the layer width {dim} must be divisible by heads={heads}")
        self.pool = HybridAttentionPooling(dim, heads)
        self.body = nn.Sequential(
            nn.Linear(2 * dim, hidden), *(ResidualBlock(hidden, dropout) for _ in range(depth)), nn.Linear(hidden, 1)
        )

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.body(self.pool(tokens, mask)).squeeze(-1)


def weighted_vote(
    block_votes: torch.Tensor, head_vote: torch.Tensor, *, block_weight: float = 1.0, head_weight: float = 2.0
) -> torch.Tensor:
    """ŷ = 1[Σ ω_k y_k + ω_vlm y_vlm > ½ (Σ ω_k + ω_vlm)] for 0/1 votes `block_votes` (B, K) and `head_vote` (B,).
    The paper's weights (ω_k = 1, ω_vlm = 2, K = 3) let the stage-1 head break ties among the blocks."""
    if block_votes.ndim != 2 or head_vote.shape != block_votes.shape[:1]:
        raise ValueError(f"need block votes (B, K) and head votes (B,), got {block_votes.shape} and {head_vote.shape}")
    k = block_votes.shape[1]
    total = block_weight * block_votes.float().sum(dim=1) + head_weight * head_vote.float()
    return (total > 0.5 * (block_weight * k + head_weight)).long()
