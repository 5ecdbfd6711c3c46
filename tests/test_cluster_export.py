"""Exporting chosen failure clusters: their rollouts copied whole into a dataset of their own, the modes behind
them, and fine-tuning's choice of modes from clusters."""

import json

import h5py
import numpy as np
import pytest
from test_search_cli import config

from diagnosis import cluster, cluster_export
from diagnosis.improve import cluster_chosen_modes
from diagnosis.search import run_search


@pytest.fixture(scope="module")
def clustered_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("export") / "run"
    run_search(config("search=uniform", "search.total_rollouts=4"), run)  # the fake policy fails in blue scenes
    cluster.main([f"run={run}", "min_size=1"])
    return run, json.loads((run / "clusters.json").read_text())


def test_export_copies_the_chosen_clusters_rollouts_whole(clustered_run, tmp_path, capsys):
    run, document = clustered_run
    first = document["clusters"][0]
    out = tmp_path / "first.hdf5"
    cluster_export.main([f"run={run}", f"clusters={first['name']}", f"out={out}"])
    members = [a["demo"] for a in document["assignments"] if a["cluster"] == first["id"]]
    with h5py.File(out, "r") as exported, h5py.File(run / "failures.hdf5", "r") as source:
        demos = sorted(exported["data"])
        assert len(demos) == first["size"] == len(members)
        assert [n.decode() for n in exported[f"mask/cluster_{first['id']}"][:]] == demos
        for name in demos:
            copied = exported["data"][name]
            original = source["data"][copied.attrs["source_demo"]]
            assert copied.attrs["cluster"] == first["id"] and copied.attrs["cluster_name"] == first["name"]
            np.testing.assert_array_equal(copied["actions"][:], original["actions"][:])
            np.testing.assert_array_equal(copied["states"][:], original["states"][:])
        assert exported["data"].attrs["definitions"] == source["data"].attrs["definitions"]
        assert exported["data"].attrs["total"] == sum(exported["data"][n].attrs["num_samples"] for n in demos)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"cluster {first['id']}: {first['name']} ({first['size']} rollouts)"
    assert lines[1].startswith("modes: ") and "blue" in lines[1]
    assert lines[-1] == f"wrote {first['size']} rollouts to {out}"


def test_every_cluster_by_id_and_bad_choices(clustered_run, tmp_path):
    run, document = clustered_run
    ids = ",".join(str(c["id"]) for c in document["clusters"])
    cluster_export.main([f"run={run}", f"clusters={ids}"])
    default = run / f"clusters_{ids.replace(',', '_')}.hdf5"
    with h5py.File(default, "r") as exported:
        assert len(exported["data"]) == document["failures"] - document["outliers"]
    with pytest.raises(SystemExit, match=r"unknown cluster\(s\) 'no such'; the run's clusters are 0: "):
        cluster_export.main([f"run={run}", "clusters=no such"])
    names = ";".join(c["name"] for c in document["clusters"])  # names hold commas: ';' separates them
    assert cluster_export.chosen_clusters(document, names) == document["clusters"]
    with pytest.raises(SystemExit, match="has no clusters.json; cluster its failures first"):
        cluster_export.main([f"run={tmp_path}", "clusters=0"])


def test_fine_tuning_repairs_the_modes_behind_chosen_clusters(clustered_run):
    run, document = clustered_run
    summary = json.loads((run / "summary.json").read_text())
    ranked = [r["perturbation"] for r in summary["ranking"]]
    chosen = cluster_chosen_modes(str(run), str(document["clusters"][0]["id"]), ranked, top_k=5)
    behind = cluster_export.cluster_modes(run, document["clusters"][:1], document)
    assert chosen and set(chosen) <= set(behind) and chosen == [m for m in ranked if m in chosen]
    assert len(cluster_chosen_modes(str(run), str(document["clusters"][0]["id"]), ranked, top_k=1)) == 1
