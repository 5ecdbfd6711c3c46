"""The search end to end: every method on a tiny budget, bad input, Ctrl-C and resume, the failure dataset."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from hydra import compose, initialize_config_module

from diagnosis.dataset import read_rollouts, restore_first_state
from diagnosis.search import prepare, run_search
from envs.rollout import Runner

FAKE = "tests.fake_policies:BlueAverse"  # scripted expert that freezes in a blue scene: fast and predictable
CANDIDATES = "[table_color_blue,light_color_blue,cube_color_red,cube_heavy]"
TINY = [
    f"policy.name={FAKE}",
    "task.horizon=40",
    f"task.perturbations={CANDIDATES}",
    "monitor=none",
    "report.top_k=2",
    "report.videos=false",
    "search.n_envs=1",
]


def config(*overrides):
    """TINY with `overrides`, which may replace TINY's choice of a config group (monitor=...)."""
    groups = {o.split("=")[0] for o in overrides if "." not in o.split("=")[0]}
    base = [o for o in TINY if o.split("=")[0] not in groups]
    with initialize_config_module("diagnosis.conf", version_base=None):
        return compose("config", overrides=[*base, *overrides])


def run_cli(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "diagnosis.search", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
        **kwargs,
    )


# The default suite runs one method end to end (the methods' own logic has unit tests); the slow one runs each.
@pytest.mark.parametrize(
    "method", ["uniform", *(pytest.param(m, marks=pytest.mark.slow) for m in ("a2c", "random", "thompson"))]
)
def test_every_method_ranks_and_reports(tmp_path, method):
    extra = ["search.hyperparameters.n_steps=4"] if method == "a2c" else []
    summary = run_search(config(f"search={method}", "search.total_rollouts=4", *extra), tmp_path)
    assert summary["status"] == "complete" and summary["budget"]["rollouts_done"] == 4
    ranking = summary["ranking"]
    assert sorted(r["perturbation"] for r in ranking) == sorted(CANDIDATES.strip("[]").split(","))
    assert sum(r["search_score"] for r in ranking) == pytest.approx(1.0)
    # Whatever chose the rollouts, the ranking a user reads is by the failure rate they estimate.
    rates = [r["estimated_failure_rate"] for r in ranking]
    assert rates == sorted(rates, reverse=True)
    for r in ranking:
        assert r["estimated_failure_rate"] == pytest.approx((1 + r["failed_alone"]) / (2 + r["tried_alone"]))
    assert sorted(r["search_rank"] for r in ranking) == [1, 2, 3, 4]
    for name in ("summary.json", "radar.png", "report.html", "failures.hdf5", "config.yaml"):
        assert (tmp_path / name).is_file(), name
    assert len(read_rollouts(tmp_path / "failures.hdf5")) == 4
    if method == "uniform":  # one rollout each: the blue scenes failed, the others did not
        failed = {r["perturbation"] for r in ranking if r["failed_alone"]}
        assert failed == {"table_color_blue", "light_color_blue"}
        assert {r["perturbation"] for r in ranking[:2]} == failed


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["search.method=annealing"], "valid: ppo, a2c, uniform, random, thompson, lucb, boundary, continuous"),
        (["search=uniform", "search.stop=auto"], "search.stop=auto needs a method with a stopping rule"),
        (["search=ppo", "search.stop=auto"], "search=ppo has none"),
        (["search.stop=soon"], "unknown search.stop 'soon'; valid: budget, auto"),
        (["search=lucb", "+search.hyperparameters.delta=0.1"], "unknown hyperparameter 'delta'; valid: confidence,"),
        (["search=lucb", "search.hyperparameters.top_k=4"], "top_k must be between 1 and 3"),
        (["task.perturbations=[cube_colour_red]"], "unknown perturbation(s) cube_colour_red"),
        (["search=uniform", "search.total_rollouts=3"], "total_rollouts=3 < 4 perturbations"),
        (["policy.name=nope"], "valid policies: scripted"),
        (["ground_truth=experiments/results/ground_truth_lift_bc_image.json"], "not 'tests.fake_policies:BlueAverse'"),
        (["search.outcome=monitor"], "needs a monitor"),
        (["monitor=fidel", "monitor.semantic=oracle"], "valid: auto, none, vlm, trained"),
    ],
)
def test_bad_input_is_refused_before_any_rollout(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare(config(*overrides), tmp_path)
    assert not (tmp_path / "failures.hdf5").exists()


def test_unwritable_output_directory_is_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="cannot write to the output directory"):
        prepare(config(), blocker / "run")


def test_cli_lists_the_valid_search_methods():
    result = run_cli("search=annealing", "monitor=none")
    _, stderr = result.communicate(timeout=120)
    assert result.returncode != 0 and "ppo" in stderr and "thompson" in stderr


def test_monitor_watches_every_rollout_and_labels_every_frame(tmp_path, monkeypatch):
    monkeypatch.setattr("monitor.build.CACHE_ROOT", tmp_path / "monitors")
    cfg = config(
        "monitor=fidel",
        "monitor.episodes=6",
        "monitor.alpha=0.5",  # the fewest episodes for α=0.5
        "search=uniform",
        "search.total_rollouts=4",
        "search.outcome=both",
    )
    summary = run_search(cfg, tmp_path / "run")
    assert summary["budget"]["rollouts_done"] == 4
    assert len(list((tmp_path / "monitors").iterdir())) == 1  # fitted once, then loaded by the search env
    agreement = summary["monitor"]
    assert agreement["sim_failures"] + agreement["sim_successes"] == 4
    assert agreement["sim_failures"] == summary["failures_found"]
    per_mode = [row["monitor"] for row in summary["ranking"] if row["tried_alone"]]  # uniform: every rollout alone
    assert all(m is not None for m in per_mode)
    for mode_key, key in (
        ("caught", "true_positive"),
        ("false_alarms", "false_positive"),
        ("failures", "sim_failures"),
    ):
        assert sum(m[mode_key] for m in per_mode) == agreement[key]
    assert "monitor: failures caught, false alarms" in (tmp_path / "run" / "report.html").read_text()
    with h5py.File(tmp_path / "run" / "failures.hdf5", "r") as file:
        for demo in file["data"].values():
            frames = demo.attrs["num_samples"]
            for key in ("monitor_score", "anomaly", "failure", "t_min"):
                assert demo[key].shape == (frames,), key
            assert demo["heatmap"].shape == (frames, 7, 7)
            verdict = json.loads(demo.attrs["monitor"])
            assert verdict["frames"] == frames and verdict["anomaly_frames"] == int(demo["anomaly"][()].sum())
            assert demo.attrs["failed"] == demo.attrs["sim_failure"]  # outcome=both rewards the simulator's verdict
            if json.loads(demo.attrs["perturbations"]) == ["table_color_blue"]:  # a whole new table colour
                assert verdict["anomaly_frames"] == frames


def test_failure_dataset_round_trip_replays_first_state(tmp_path):
    cfg = config("search=uniform", "search.total_rollouts=2", "task.perturbations=[cube_color_red,cube_offset_far]")
    run_search(cfg, tmp_path)
    runner = Runner(prepare(cfg, tmp_path / "again").spec.task)
    with h5py.File(tmp_path / "failures.hdf5", "r") as file:
        assert json.loads(file["data"].attrs["candidates"]) == ["cube_color_red", "cube_offset_far"]
        for name in ("demo_0", "demo_1"):
            demo = file["data"][name]
            assert "<mujoco" in demo.attrs["model_file"] and demo["actions"].shape == (demo.attrs["num_samples"], 7)
            frame = restore_first_state(runner, demo)
            np.testing.assert_array_equal(frame, demo["obs/agentview_image"][0])
    runner.close()


def test_evaluate_cli_compares_a_run_with_ground_truth(tmp_path):
    from test_ranking import write_truth

    run_search(config("search=uniform", "search.total_rollouts=4"), tmp_path)
    truth = write_truth(
        tmp_path / "truth.json",
        {"table_color_blue": 0.0, "light_color_blue": 0.0, "cube_color_red": 1.0, "cube_heavy": 1.0},
        policy=FAKE,
    )
    result = subprocess.run(
        [sys.executable, "-m", "diagnosis.evaluate", f"run={tmp_path}", f"ground_truth={truth}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "pairwise_accuracy: 1.000"
