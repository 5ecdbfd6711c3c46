"""The pair matrix of a search over composed candidates: each pair's observed failure rate off the diagonal, each
part's alone on it, so that an interaction (a pair that fails where its parts alone mostly succeed) stands out.

from diagnosis.pair_matrix import pair_matrix, pair_matrix_plot
matrix = pair_matrix(summary["ranking"])   # None when the run had no pairs
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


@dataclass(frozen=True)
class PairMatrix:
    names: tuple[str, ...]
    """The perturbations that are parts of a pair, in the ranking's order (singles the run also tried first)."""
    failed: np.ndarray
    """(n, n) failed rollouts: [i, j] under the pair of names i and j, [i, i] under name i alone."""
    tried: np.ndarray

    @property
    def rates(self) -> np.ndarray:
        """Observed failure rates; NaN where nothing was tried."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.tried > 0, self.failed / np.maximum(self.tried, 1), np.nan)


def pair_matrix(ranking: list[dict[str, Any]]) -> PairMatrix | None:
    """The matrix of a summary's ranking rows (their alone counts); None when no row is a pair (`a+b`)."""
    pairs = [row for row in ranking if len(row["perturbation"].split("+")) == 2]
    if not pairs:
        return None
    singles = {row["perturbation"]: row for row in ranking if "+" not in row["perturbation"]}
    parts = {part for row in pairs for part in row["perturbation"].split("+")}
    names = [name for name in singles if name in parts]
    names += sorted(parts - set(names))
    index = {name: i for i, name in enumerate(names)}
    failed = np.zeros((len(names), len(names)), dtype=int)
    tried = np.zeros_like(failed)
    for name, row in singles.items():
        if name in index:
            failed[index[name], index[name]], tried[index[name], index[name]] = row["failed_alone"], row["tried_alone"]
    for row in pairs:
        i, j = (index[part] for part in row["perturbation"].split("+"))
        for a, b in ((i, j), (j, i)):
            failed[a, b], tried[a, b] = row["failed_alone"], row["tried_alone"]
    return PairMatrix(tuple(names), failed, tried)


def pair_matrix_plot(matrix: PairMatrix, path: Path) -> None:
    """The matrix as a heatmap (grey: never tried), each tried cell labelled failed/tried."""
    n = len(matrix.names)
    size = max(4.0, 0.45 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    cmap = plt.get_cmap("Reds").with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(matrix.rates), cmap=cmap, vmin=0.0, vmax=1.0)
    if n <= 25:  # beyond that the labels would cover the colours
        for i, j in zip(*np.nonzero(matrix.tried)):
            ax.text(j, i, f"{matrix.failed[i, j]}/{matrix.tried[i, j]}", ha="center", va="center", fontsize=6)
    ax.set_xticks(range(n), matrix.names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), matrix.names, fontsize=7)
    ax.set_title("failure rate: each pair off the diagonal, each part alone on it", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="observed failure rate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
