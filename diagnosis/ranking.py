"""A ranking of failure modes and RoboMD's summary metrics of it (entropy, NFM, FSI).

Every search method ends in one `Ranking`: a failure score per candidate perturbation in the method's own terms
(PPO: the softmax of its logits on the nominal scene; bandits: the posterior mean failure rate) and the same
scores normalised into a distribution, on which the metrics are computed so methods compare on one scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ranking:
    names: tuple[str, ...]
    scores: np.ndarray
    """The method's failure score per perturbation (higher = fails more)."""

    def __post_init__(self) -> None:
        if len(self.names) != len(self.scores):
            raise ValueError(f"{len(self.names)} names but {len(self.scores)} scores")
        if len(self.names) == 0:
            raise ValueError("a ranking needs at least one perturbation")
        if not np.all(np.isfinite(self.scores)) or np.any(np.asarray(self.scores) < 0):
            raise ValueError("failure scores must be finite and non-negative")

    @property
    def probabilities(self) -> np.ndarray:
        """Scores normalised to sum to 1: how the search spreads failure probability over perturbations."""
        scores = np.asarray(self.scores, dtype=float)
        total = scores.sum()
        return scores / total if total > 0 else np.full(len(scores), 1.0 / len(scores))

    def order(self) -> list[int]:
        """Indices from the most to the least failure-prone (ties keep catalogue order)."""
        return sorted(range(len(self.names)), key=lambda i: -self.scores[i])

    def top(self, k: int) -> list[str]:
        return [self.names[i] for i in self.order()[:k]]

    def entropy(self) -> float:
        """Shannon entropy (nats) of the failure distribution: low = failures concentrate on few perturbations."""
        p = self.probabilities
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    def failure_modes(self, threshold: float | None = None) -> list[str]:
        """NFM's members: perturbations more failure-prone than `threshold` (default 1/K, i.e. above uniform)."""
        threshold = 1.0 / len(self.names) if threshold is None else threshold
        return [self.names[i] for i in self.order() if self.probabilities[i] > threshold]

    def severity_index(self) -> float:
        """FSI = Σ P(a_i)·W_i with rank weights W_i = 1/rank_i (the top mode weighs 1): 1 when one mode holds all
        the failure mass, H_K/K (0.12 for K = 36) when it is spread evenly."""
        p = np.sort(self.probabilities)[::-1]
        return float((p / np.arange(1, len(p) + 1)).sum())

    def metrics(self, nfm_threshold: float | None = None) -> dict[str, float]:
        return {
            "entropy": self.entropy(),
            "nfm": len(self.failure_modes(nfm_threshold)),
            "nfm_threshold": 1.0 / len(self.names) if nfm_threshold is None else nfm_threshold,
            "fsi": self.severity_index(),
        }

    def rows(self) -> list[dict]:
        """Rank, name, the method's score and the search score (the scores normalised over the modes, which is
        RoboMD's "failure probability" of a mode: a share of the ranking, not a failure rate), most failure-prone
        first (for summaries and tables)."""
        p = self.probabilities
        return [
            {"rank": r + 1, "perturbation": self.names[i], "score": float(self.scores[i]), "search_score": float(p[i])}
            for r, i in enumerate(self.order())
        ]

    @classmethod
    def from_rows(cls, rows: Sequence[dict]) -> Ranking:
        """The ranking a summary's rows describe: by the estimated failure rate where every row has one (searches
        that roll out), else by the method's score (continuous searches, older summaries)."""
        key = "estimated_failure_rate" if all("estimated_failure_rate" in r for r in rows) else "score"
        return cls(tuple(r["perturbation"] for r in rows), np.array([r[key] for r in rows], dtype=float))
