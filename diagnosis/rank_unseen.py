"""`python -m diagnosis.rank_unseen run=<continuous run dir> perturbations=a,b`: rank perturbations never rolled out.

Each named perturbation (any of the task's registry) is placed in the run's embedding without a rollout: its
description and the first frame of the perturbed scene — rendered at `seeds` nominal initial states, the ones the
discrete search reads its ranking on — go through the embedding's frozen encoders and model. The search agent's
log-density there ranks them (RoboMD: the ratio of policy densities; scores as in diagnosis.continuous_search).
Reliability is the distance to the nearest known embedding in units of the known set's spread: far from every
rollout the search learned from, the density is extrapolation. Prints a table and ends with
`ranking: a,b` (most failure-prone first).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from diagnosis.continuous_search import ContinuousSearch, density_scores
from diagnosis.embed import SceneEmbedder
from diagnosis.ranking import Ranking
from diagnosis.search_run import RANKING_SEED
from envs.cli import parse_config
from envs.perturbations import get_perturbations, task_perturbations
from envs.rollout import get_runner


@dataclass
class RankUnseenConfig:
    run: str = ""
    """A continuous search run directory (python -m diagnosis.search search=continuous)."""
    perturbations: str = ""
    """Perturbations to rank, comma-separated: of the task's registry or of `perturbation_file`."""
    perturbation_file: str = ""
    """User-defined perturbations (YAML, envs/perturbations/user.py; comma-separated files): never rolled out,
    so truly unseen."""
    seeds: int = 4
    """Nominal initial states each perturbation's first frame is rendered at."""
    out: str = ""
    """Optional JSON file for the ranked rows."""


def first_frames(task: str, names: Sequence[str], seeds: int, files: str | Sequence[str] = ()) -> np.ndarray:
    """(len(names), seeds, H, W, 3): the policy camera's first frame of each perturbed scene, no rollout."""
    runner = get_runner(task)
    return np.asarray(
        [
            [runner.first_frame([p], RANKING_SEED + s) for s in range(seeds)]
            for p in get_perturbations(task, list(names), files)
        ]
    )


def rank_unseen(
    search: ContinuousSearch, names: Sequence[str], frames: np.ndarray, embedder: SceneEmbedder | None = None
) -> list[dict[str, Any]]:
    """Ranked rows (rank, perturbation, score, search_score, log_density, reliability, predicted_failure, seen) for
    perturbations given by name and their first frames (len(names), seeds, H, W, 3)."""
    if not names:
        raise ValueError("name at least one perturbation to rank")
    embedder = embedder or SceneEmbedder(search.trained)
    seeds = frames.shape[1]
    embeddings, failure = embedder(frames.reshape(-1, *frames.shape[2:]), [[n] for n in names for _ in range(seeds)])
    log_density = search.log_density(embeddings).reshape(len(names), seeds).mean(axis=1)
    _, distance = search.known.match(embeddings)
    reliability = (distance / search.known.scale).reshape(len(names), seeds).mean(axis=1)
    ranking = Ranking(tuple(names), density_scores(log_density, search.space.dim))
    extra = {
        name: {
            "log_density": float(log_density[i]),
            "reliability": float(reliability[i]),
            "predicted_failure": float(failure.reshape(len(names), seeds)[i].mean()),
            "seen": name in set(search.known.names()),
        }
        for i, name in enumerate(names)
    }
    return [{**row, **extra[row["perturbation"]]} for row in ranking.rows()]


def print_rows(rows: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title)
    columns = (
        "rank",
        "perturbation",
        "log-density",
        "search score (density)",
        "distance to known",
        "head P(fail)",
        "seen",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "perturbation" else "right")
    for row in rows:
        table.add_row(
            str(row["rank"]),
            row["perturbation"],
            f"{row['log_density']:.1f}",
            f"{row['search_score']:.3f}",
            f"{row['reliability']:.2f}",
            f"{row['predicted_failure']:.2f}",
            "yes" if row["seen"] else "no",
        )
    Console(width=max(Console().width, 120)).print(table)


def main(argv: list[str] | None = None) -> None:
    config = parse_config(RankUnseenConfig, argv)
    names = [n.strip() for n in config.perturbations.split(",") if n.strip()]
    try:
        if not names:
            raise ValueError("name at least one perturbation to rank: perturbations=a,b")
        if config.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {config.seeds}")
        search = ContinuousSearch.load(config.run)
        task, files = search.trained.task, config.perturbation_file
        catalogue = task_perturbations(task)
        extra = [p for name, p in task_perturbations(task, files).items() if name not in catalogue]
        get_perturbations(task, names, files)  # unknown names → error listing the valid ones
        frames = first_frames(task, names, config.seeds, files)
        rows = rank_unseen(search, names, frames, SceneEmbedder(search.trained, extra=extra))
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print_rows(rows, f"perturbations ranked by the {search.summary['algorithm']} search in {config.run}")
    if config.out:
        Path(config.out).write_text(json.dumps(rows, indent=1))
    print(f"ranking: {','.join(row['perturbation'] for row in rows)}")


if __name__ == "__main__":
    main()
