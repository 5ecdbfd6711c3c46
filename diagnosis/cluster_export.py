"""`python -m diagnosis.cluster_export run=<search run> clusters=<names or ids>`: the failed rollouts of chosen
failure clusters as a dataset of their own, and the failure modes behind them.

Reads the run's clusters.json (`python -m diagnosis.cluster run=...`) and failures.hdf5. `clusters` names clusters
by id (`clusters=0,2`) or by name, separated by `;` (names are keyword lists: `clusters="turned blue, view"`).
Writes `<run>/clusters_<ids>.hdf5` (or `out`): the chosen clusters' rollouts, copied whole (robomimic layout, every
array and attribute, the run's data attributes, so rollouts restore and replay as from failures.hdf5), renumbered
demo_0.., each with its `cluster`, `cluster_name` and `source_demo`, and one `mask/cluster_<id>` per cluster. Prints
the modes (perturbations) the clusters' rollouts ran under, most frequent first — the list
`python -m diagnosis.improve run=<run> clusters=...` repairs.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from diagnosis.cluster import CLUSTERS
from envs.cli import parse_config
from envs.hdf5 import demo_names


@dataclass
class ClusterExportConfig:
    run: str = ""
    """A search run that `python -m diagnosis.cluster` has clustered."""
    clusters: str = ""
    """Clusters to export: ids or names separated by `;` (ids also by commas)."""
    out: str = ""
    """HDF5 file to write (default <run>/clusters_<ids>.hdf5)."""


def read_clusters(run: str | Path) -> dict:
    """The run's clusters.json; an error saying how to make it when it is missing."""
    path = Path(run) / CLUSTERS
    if not path.is_file():
        raise ValueError(f"{run} has no {CLUSTERS}; cluster its failures first: python -m diagnosis.cluster run={run}")
    return json.loads(path.read_text())


def chosen_clusters(document: dict, names: str) -> list[dict]:
    """The clusters `names` picks — ids and names separated by `;` (names are keyword lists and hold commas), ids
    also by commas — in the document's order; an unknown one is an error listing every cluster."""
    by_key = {str(c["id"]): c for c in document["clusters"]} | {c["name"]: c for c in document["clusters"]}
    wanted = []
    for part in (p.strip() for p in names.split(";") if p.strip()):
        wanted += [part] if part in by_key else [n.strip() for n in part.split(",") if n.strip()]
    if not wanted:
        raise ValueError("clusters= is empty; name clusters by id or name (see clusters.json)")
    unknown = [n for n in wanted if n not in by_key]
    if unknown:
        valid = "; ".join(f"{c['id']}: {c['name']}" for c in document["clusters"])
        raise ValueError(f"unknown cluster(s) {', '.join(map(repr, unknown))}; the run's clusters are {valid}")
    ids = {by_key[n]["id"] for n in wanted}
    return [c for c in document["clusters"] if c["id"] in ids]


def cluster_members(document: dict, chosen: list[dict]) -> dict[str, dict]:
    """demo name → its cluster, for the rollouts assigned to a chosen cluster."""
    by_id = {c["id"]: c for c in chosen}
    return {a["demo"]: by_id[a["cluster"]] for a in document["assignments"] if a["cluster"] in by_id}


def cluster_modes(run: str | Path, chosen: list[dict], document: dict | None = None) -> list[str]:
    """The perturbations (composed ones as `a+b`) the chosen clusters' rollouts ran under, most frequent first."""
    members = cluster_members(document or read_clusters(run), chosen)
    counts: Counter[str] = Counter()
    with h5py.File(Path(run) / "failures.hdf5", "r") as file:
        for demo in members:
            counts["+".join(json.loads(file["data"][demo].attrs["perturbations"]))] += 1
    return [mode for mode, _ in counts.most_common()]


def export(run: str | Path, chosen: list[dict], out: Path, document: dict | None = None) -> int:
    """Copies the chosen clusters' rollouts from the run's failures.hdf5 into `out`; returns how many."""
    members = cluster_members(document or read_clusters(run), chosen)
    out.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(Path(run) / "failures.hdf5", "r") as source, h5py.File(out, "w") as target:
        data = target.create_group("data")
        data.attrs.update(dict(source["data"].attrs))
        names = [n for n in demo_names(source) if n in members]
        for i, name in enumerate(names):
            copied = f"demo_{i}"
            source.copy(source["data"][name], data, name=copied)
            cluster = members[name]
            data[copied].attrs.update(source_demo=name, cluster=cluster["id"], cluster_name=cluster["name"])
        data.attrs["total"] = int(sum(int(data[f"demo_{i}"].attrs["num_samples"]) for i in range(len(names))))
        for cluster in chosen:
            ids = [f"demo_{i}" for i, n in enumerate(names) if members[n]["id"] == cluster["id"]]
            target.create_dataset(f"mask/cluster_{cluster['id']}", data=np.array(ids, dtype="S"))
    return len(names)


def main(argv: list[str] | None = None) -> None:
    config = parse_config(ClusterExportConfig, argv)
    try:
        document = read_clusters(config.run)
        chosen = chosen_clusters(document, config.clusters)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    ids = "_".join(str(c["id"]) for c in chosen)
    out = Path(config.out or Path(config.run) / f"clusters_{ids}.hdf5")
    count = export(config.run, chosen, out, document)
    for cluster in chosen:
        print(f"cluster {cluster['id']}: {cluster['name']} ({cluster['size']} rollouts)")
    print(f"modes: {', '.join(cluster_modes(config.run, chosen, document))}")
    print(f"wrote {count} rollouts to {out}")


if __name__ == "__main__":
    main()
