"""`python -m diagnosis.cluster run=<search run>`: organise a search's failed rollouts into named clusters.

Offline and from perception only: a reason per failed rollout (diagnosis.reasons), embedded with the shipped
MiniLM, clustered, named and assigned (diagnosis.clusters). Writes `clusters.json` in the run (or `out`): the
clusters (name, keywords, description, size, frequency) and every failed rollout's reason and cluster, outliers
with cluster -1; prints the clusters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from diagnosis.clusters import OUTLIER, Cluster, cluster_reasons
from diagnosis.reasons import Reason, failure_reasons
from envs.choices import check_choice
from envs.cli import command_line, parse_config

TEXTS = ("reason", "scene")
"""What is embedded: the whole reason, or its first clause (how the scene differs from the nominal one)."""


@dataclass
class ClusterConfig:
    run: str = ""
    """A search run directory (its failures.hdf5)."""
    text: str = "reason"
    """reason | scene: what of each reason is embedded (the clusters are named from whole reasons either way)."""
    distance: float = 0.1
    """Cosine distance at which agglomerative clustering stops merging."""
    min_size: int = 2
    """Smaller clusters are outliers."""
    out: str = ""
    """Output file (default <run>/clusters.json)."""


def embedded_text(reason: Reason, text: str) -> str:
    return reason.text if text == "reason" else reason.text.split("; ")[0]


def embed_reasons(reasons: list[Reason], text: str) -> np.ndarray:
    from diagnosis.embed import load_text_encoder

    return load_text_encoder("minilm")([embedded_text(r, text) for r in reasons])


def clusters_document(
    config: ClusterConfig, reasons: list[Reason], clusters: list[Cluster], labels: np.ndarray
) -> dict:
    return {
        "run": config.run,
        "command": command_line("diagnosis.cluster", config),
        "method": f"perception reasons, MiniLM embeddings of the {config.text}, agglomerative (cosine, average)",
        "failures": len(reasons),
        "outliers": int((labels == OUTLIER).sum()),
        "clusters": [c.to_dict() for c in clusters],
        "assignments": [{"demo": r.demo, "reason": r.text, "cluster": int(label)} for r, label in zip(reasons, labels)],
    }


def print_clusters(document: dict, console: Console) -> None:
    table = Table(title=f"{len(document['clusters'])} failure clusters of {document['failures']} failed rollouts")
    for column in ("id", "name", "share", "size", "a typical reason"):
        table.add_column(column, overflow="fold")
    for c in document["clusters"]:
        table.add_row(str(c["id"]), c["name"], f"{c['frequency']:.0%}", str(c["size"]), c["description"])
    console.print(table)
    console.print(f"outliers: {document['outliers']}")


def run(config: ClusterConfig) -> Path:
    check_choice(config.text, TEXTS, "text")
    if config.min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {config.min_size}")
    reasons = failure_reasons(config.run)
    if len(reasons) < 2:
        raise ValueError(f"{config.run} has {len(reasons)} failed rollout(s); clustering needs at least 2")
    clusters, labels = cluster_reasons(
        [r.text for r in reasons],
        embed_reasons(reasons, config.text),
        distance=config.distance,
        min_size=config.min_size,
    )
    document = clusters_document(config, reasons, clusters, labels)
    out = Path(config.out or Path(config.run) / "clusters.json")
    out.write_text(json.dumps(document, indent=1))
    print_clusters(document, Console(width=max(Console().width, 120)))
    return out


def main(argv: list[str] | None = None) -> None:
    config = parse_config(ClusterConfig, argv)
    try:
        out = run(config)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"clusters: {out}")


if __name__ == "__main__":
    main()
