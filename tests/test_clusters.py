"""Failure clusters offline: perception-only reasons, clustering with names and outliers, assignment, the CLI."""

import json

import numpy as np
import pytest
from test_search_cli import config

from diagnosis import cluster
from diagnosis.clusters import OUTLIER, assign, cluster_name, cluster_reasons
from diagnosis.reasons import observe, sentence
from diagnosis.search import run_search

GREY = np.full((32, 32, 3), 120, dtype=np.uint8)
OPEN_THEN_SHUT = np.array([[0.02, -0.02]] * 3 + [[0.04, -0.04]] * 5 + [[0.0, 0.0]] * 12)


def reason(first_frame: np.ndarray, fingers: np.ndarray = OPEN_THEN_SHUT, rise: float = 0.1, steps: int = 20) -> str:
    frames = np.repeat(first_frame[None], steps, axis=0)
    height = np.concatenate([np.full(8, 0.8), np.linspace(0.8, 0.8 + rise, steps - 8)])
    return sentence(
        observe(frames=frames, nominal_first_frame=GREY, finger_qpos=fingers, hand_height=height, horizon=20)
    )


def test_reasons_say_what_the_frames_and_the_gripper_show():
    patch = GREY.copy()
    patch[14:17, 14:17] = (30, 50, 200)  # an object-sized blue patch in the middle
    assert reason(patch) == (
        "A small, object-sized region in the middle part of the view turned blue; the gripper closed on nothing "
        "at step 8 and the empty hand rose; the episode ran out of time."
    )
    dim = (GREY * np.array([0.5, 0.5, 0.5])).astype(np.uint8)
    assert reason(dim).startswith("The light changed: the whole view, background included, is darker;")
    red_light = (GREY * np.array([1.0, 0.5, 0.5])).astype(np.uint8)
    assert "is darker, tinted red" in reason(red_light)
    held = OPEN_THEN_SHUT.copy()
    held[8:] = (0.012, -0.012)  # stopped 2.4 cm apart: something between the fingers
    assert "the gripper closed at step 8 on something 2 cm wide but did not lift it" in reason(GREY, held, rise=0.0)
    assert reason(GREY, np.full((20, 2), (0.04, -0.04))).startswith(
        "The scene looks like the nominal one; the gripper never closed;"
    )
    assert reason(GREY, steps=12, fingers=OPEN_THEN_SHUT[:12]).endswith("the episode ended at step 12.")


def test_clusters_are_named_from_their_reasons_small_ones_are_outliers_and_new_reasons_are_assigned():
    texts = ["the cube turned blue; the gripper shut"] * 3 + ["the light dimmed; the arm froze"] * 2 + ["odd"]
    embeddings = np.array([[1, 0, 0], [0.99, 0.1, 0], [0.98, 0, 0.1], [0, 1, 0], [0.1, 0.99, 0], [0, 0, 1]])
    clusters, labels = cluster_reasons(texts, embeddings, distance=0.2, min_size=2)
    assert labels.tolist() == [0, 0, 0, 1, 1, OUTLIER]
    assert [c.size for c in clusters] == [3, 2] and [round(c.frequency, 3) for c in clusters] == [0.5, 0.333]
    assert "blue" in clusters[0].name and "light" in clusters[1].name + " ".join(clusters[1].keywords)
    assert "gripper blue" not in clusters[0].keywords  # no word pair spans two clauses
    assert assign(np.array([[0.97, 0.05, 0], [0, 0, 1]]), clusters, max_distance=0.2).tolist() == [0, OUTLIER]
    assert cluster_name(["turned red", "red", "region", "turned"]) == "turned red, region"
    with pytest.raises(ValueError, match="distance must be a cosine distance in"):
        cluster_reasons(texts, embeddings, distance=0.0)


def test_cluster_cli_writes_every_failed_rollout_with_its_reason_and_cluster(tmp_path, capsys):
    run = tmp_path / "run"
    run_search(config("search=uniform", "search.total_rollouts=4"), run)  # the fake policy fails in blue scenes
    cluster.main([f"run={run}", "min_size=1"])
    document = json.loads((run / "clusters.json").read_text())
    reasons = {a["reason"] for a in document["assignments"]}
    assert document["failures"] == 2 and len(reasons) == 2
    assert any("turned blue" in r for r in reasons) and any("tinted blue" in r for r in reasons)
    assert all(a["cluster"] in {c["id"] for c in document["clusters"]} for a in document["assignments"])
    assert sum(c["size"] for c in document["clusters"]) + document["outliers"] == 2
    assert "python -m diagnosis.cluster run=" in document["command"]
    report = (run / "report.html").read_text()  # rendered again with the clusters
    assert "<h2>Failure clusters</h2>" in report and all(c["name"] in report for c in document["clusters"])
    assert (run / "clusters.png").is_file()
    assert capsys.readouterr().out.splitlines()[-1] == f"clusters: {run / 'clusters.json'}"
    cluster.main([f"run={run}", "min_size=1", "embed=image", f"out={tmp_path / 'by_image.json'}"])
    by_image = json.loads((tmp_path / "by_image.json").read_text())
    assert {a["reason"] for a in by_image["assignments"]} == reasons  # the same reasons name image clusters
    with pytest.raises(SystemExit, match="has no failures.hdf5"):
        cluster.main([f"run={tmp_path}"])
    with pytest.raises(SystemExit, match="unknown embed 'words'.*reason, scene, image"):
        cluster.main([f"run={run}", "embed=words"])
