"""Rollout backends: every unit's result in order on processes and on Ray, a killed worker restarted and its unit
run again, a unit's own error returned without retries, and the same results whichever backend ran them (ground
truth and the search, a Ray actor killed in the middle of a search included).

Ray tests share one local cluster (2 CPUs) started by the `ray_cluster` fixture; they are skipped where Ray is
not installed (`pip install 'failscope[ray]'`; CI installs it).
"""

import json
import os
from pathlib import Path

import pytest
from test_search_cli import config
from test_search_faults import assert_same_run

from diagnosis.search import run_search
from envs.backends import RayOptions, RolloutSettings, UnitFailed, failure_message, open_backend
from envs.cli import parse_config
from experiments.ground_truth import GroundTruthConfig
from experiments.ground_truth import main as ground_truth
from tests import backend_units

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local Ray cluster for this module. Actors inherit the environment of the process that started it, so the
    kill switch of tests.fake_policies:SelfKilling is set here: each search worker dies once, at the start of its
    second rollout."""
    ray = pytest.importorskip("ray")
    marker = tmp_path_factory.mktemp("ray_kill") / "fired"
    saved = {k: os.environ.get(k) for k in ("FAILSCOPE_TEST_AFTER", "FAILSCOPE_TEST_MARKER")}
    os.environ.update(FAILSCOPE_TEST_AFTER="1", FAILSCOPE_TEST_MARKER=str(marker))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield marker
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(params=["processes", "ray"])
def backend_name(request):
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    return request.param


def test_results_come_in_order_a_killed_worker_is_replaced_and_a_unit_error_is_not_retried(backend_name, tmp_path):
    with open_backend(backend_name, workers=2) as backend:
        assert [r for _, r in backend.map(backend_units.square, range(9))] == [x * x for x in range(9)]
        units = [(str(tmp_path / "m"), x) for x in range(7)]
        results = [r for _, r in backend.map(backend_units.dies_once_at_three, units)]
        assert [r[0] for i, r in enumerate(results) if i != 5] == [0, 10, 20, 30, 40, 60]
        assert isinstance(results[5], UnitFailed) and results[5].error == "ValueError: five is refused"
        assert results[5].attempts == 1  # its own error: the same unit would raise again
        assert backend_units.marker_count(str(tmp_path / "m")) == 1  # unit 3 killed its worker once, then ran

        backend.retries = 1
        ((_, lost),) = backend.map(backend_units.always_dies, [0])
        ((_, after),) = backend.map(backend_units.square, [4])
        assert isinstance(lost, UnitFailed) and lost.attempts == 2 and "died 2 times" in lost.error
        assert after == 16  # its worker was replaced once more, for the units after it
        assert "1 unit(s) failed (0: its worker died 2 times" in failure_message([lost])


def test_workers_zero_runs_units_in_this_process():
    with open_backend("processes", workers=0) as backend:
        assert {r for _, r in backend.map(backend_units.pid, range(3))} == {os.getpid()}


@pytest.mark.parametrize(
    "settings, message",
    [
        (RolloutSettings(backend="slurm"), "unknown backend 'slurm'; valid: processes, ray"),
        (RolloutSettings(workers=-1), "workers must be >= 0, got -1"),
        (RolloutSettings(backend="ray", ray=RayOptions(num_cpus=0)), "ray.num_cpus must be > 0"),
    ],
)
def test_bad_rollout_settings_are_one_line_errors(settings, message):
    if settings.backend == "ray":
        pytest.importorskip("ray")
    with pytest.raises(ValueError, match=message):
        settings.check()


def test_ray_settings_are_dotted_keys_of_every_rollout_command():
    config = parse_config(GroundTruthConfig, ["backend=ray", "ray.address=auto", "ray.num_cpus=2"])
    assert config.backend == "ray" and config.ray == RayOptions(address="auto", num_cpus=2.0)
    with pytest.raises(SystemExit, match="bad argument.*ray.cpus"):
        parse_config(GroundTruthConfig, ["ray.cpus=2"])


def test_ground_truth_is_the_same_on_ray_as_in_process(ray_cluster, tmp_path):
    rows = {}
    for backend, workers in (("processes", 0), ("ray", 2)):
        out = tmp_path / backend
        ground_truth(
            ["task=lift", "policy=scripted", "episodes=2", f"workers={workers}", f"backend={backend}", f"out={out}"]
            + ["perturbations=nominal,table_color_green"]
        )
        (result,) = out.glob("ground_truth_lift_scripted_subset_*.json")
        rows[backend] = json.loads(result.read_text())["perturbations"]
    assert rows["ray"] == rows["processes"] and len(rows["ray"]) == 2


@pytest.mark.slow  # two searches and restarted actors; the default suite kills a Ray actor under Backend.map
def test_search_on_ray_with_actors_killed_mid_run_equals_the_same_search_on_processes(ray_cluster, tmp_path):
    """Both workers die at the start of their second rollout: each is replaced, restored to where it stood and
    reruns that rollout, so the run is rollout for rollout the one two local processes give."""
    two_workers = ["search=uniform", "search.n_envs=2", "search.total_rollouts=4"]
    reference = run_search(config(*two_workers), tmp_path / "processes")
    killed = run_search(
        config(*two_workers, "backend=ray", "policy.name=tests.fake_policies:SelfKilling"), tmp_path / "ray"
    )
    assert ray_cluster.exists()  # a worker did die
    assert killed["status"] == reference["status"] == "complete" and killed["budget"]["backend"] == "ray"
    assert_same_run(tmp_path / "ray", tmp_path / "processes")
