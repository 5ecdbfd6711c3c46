"""A search that survives faults: Ctrl-C at exact rollouts, a killed worker, resume equal to an uninterrupted run,
the same seed giving the same run, and resumes that cannot continue refused in one line.

Faults are injected by the policy under test at a given rollout (tests.fake_policies), never by a timer.
"""

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_search_cli import TINY, config

from diagnosis.bandits import UniformAllocation
from diagnosis.dataset import read_rollouts
from diagnosis.search import load_resumed, prepare, run_search

ROOT = Path(__file__).parent.parent
INTERRUPTING = "policy.name=tests.fake_policies:SelfInterrupting"
PPO_SETTINGS = ["search.hyperparameters.n_steps=2", "search.hyperparameters.batch_size=2", "search.checkpoint_every=1"]
PPO_TINY = ["search=ppo", *PPO_SETTINGS]


def demos(path: Path) -> list[dict]:
    """Every rollout of a failures.hdf5 as plain values: what two equal runs must agree on."""
    rows = []
    with h5py.File(path, "r") as file:
        for row in read_rollouts(path):
            demo = file["data"][row["demo"]]
            rows.append({**row, "actions": demo["actions"][:], "states": demo["states"][:]})
    return rows


def assert_same_run(a: Path, b: Path) -> None:
    ranking_a = json.loads((a / "summary.json").read_text())["ranking"]
    ranking_b = json.loads((b / "summary.json").read_text())["ranking"]
    assert [(r["perturbation"], r["score"]) for r in ranking_a] == [(r["perturbation"], r["score"]) for r in ranking_b]
    rows_a, rows_b = demos(a / "failures.hdf5"), demos(b / "failures.hdf5")
    assert len(rows_a) == len(rows_b)
    for x, y in zip(rows_a, rows_b):
        for key in ("seed", "perturbations", "outcome", "failed", "search_step", "length"):
            assert x[key] == y[key], (x["demo"], key)
        np.testing.assert_array_equal(x["actions"], y["actions"])
        np.testing.assert_array_equal(x["states"], y["states"])


def cli(*args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "diagnosis.search", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Reference runs (no fault) of a method, 6 rollouts, in-process: `uninterrupted(method)`, each run once."""

    @functools.cache
    def reference(method: str) -> Path:
        out = tmp_path_factory.mktemp(f"reference_{method}")
        run_search(
            config(f"search={method}", "search.total_rollouts=6", *(PPO_SETTINGS if method == "ppo" else [])), out
        )
        return out

    return reference


# uniform: stopped at a safe point; ppo: stopped mid-collection, so resume reruns rollouts after its checkpoint.
@pytest.mark.parametrize(
    "method, after",
    [
        ("uniform", 1),
        pytest.param("uniform", 4, marks=pytest.mark.slow),
        pytest.param("ppo", 3, marks=pytest.mark.slow),
    ],
)
def test_ctrl_c_at_any_rollout_keeps_each_finished_one_once_and_resume_ends_as_uninterrupted(
    tmp_path, monkeypatch, uninterrupted, method, after
):
    monkeypatch.setenv("FAILSCOPE_TEST_AFTER", str(after))
    extra = PPO_SETTINGS if method == "ppo" else []
    cfg = config(f"search={method}", "search.total_rollouts=6", INTERRUPTING, *extra)
    summary = run_search(cfg, tmp_path)
    # Ctrl-C arrives at the start of rollout after+1, which finishes; then the search stops.
    assert summary["status"] == "interrupted" and summary["budget"]["rollouts_done"] == after + 1
    assert [r["search_step"] for r in read_rollouts(tmp_path / "failures.hdf5")] == list(range(1, after + 2))
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["rollouts"] == after + 1 and state["checkpoint_rollouts"] <= after + 1

    monkeypatch.setenv("FAILSCOPE_TEST_AFTER", "-1")  # never again
    resumed = run_search(
        config(f"search={method}", "search.total_rollouts=6", INTERRUPTING, *extra, f"search.resume={tmp_path}"),
        tmp_path,
    )
    assert resumed["status"] == "complete" and resumed["budget"]["rollouts_done"] == 6
    assert_same_run(tmp_path, uninterrupted(method))


def parallel(*extra):
    """PPO with two workers: one update of 2 steps x 2 workers."""
    return [*TINY[:-1], "search.n_envs=2", "search.total_rollouts=4", *PPO_TINY, *extra]


@pytest.fixture(scope="module")
def parallel_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("parallel")
    result = cli(*parallel(), f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"summary: {out / 'summary.json'}"
    assert "failure modes of tests.fake_policies:BlueAverse" in result.stdout
    return out


def test_cli_with_two_workers_writes_every_output(parallel_reference):
    summary = json.loads((parallel_reference / "summary.json").read_text())
    assert summary["method"] == "ppo" and summary["budget"]["rollouts_done"] == 4
    for name in ("radar.png", "report.html", "failures.hdf5", "config.yaml", "state.json"):
        assert (parallel_reference / name).is_file(), name
    assert any((parallel_reference / "tensorboard").rglob("events.*"))
    assert "<video" not in (parallel_reference / "report.html").read_text()  # report.videos=false


@pytest.mark.slow
def test_cli_with_two_workers_gives_the_same_run_for_the_same_seed(tmp_path, parallel_reference):
    """Slow (a second two-worker command); the default suite checks same-seed runs in one process (the Ctrl-C
    resume tests above end exactly as an uninterrupted run)."""
    # The same command again: in another process torch may run with another thread count, and PPO's updates
    # (summed in another order) then differ in the last bits.
    result = cli(*parallel(), f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert_same_run(tmp_path, parallel_reference)


@pytest.mark.slow
def test_killed_worker_stops_the_run_keeping_its_rollouts_and_resume_ends_as_uninterrupted(tmp_path):
    reference = tmp_path / "reference"
    eight = ["search.total_rollouts=8"]
    assert cli(*parallel(*eight), f"hydra.run.dir={reference}").returncode == 0  # as a command, like the runs below
    # Each worker dies at the start of its third rollout: after the checkpoint at 4 (one PPO update of 2 x 2).
    env = {**os.environ, "FAILSCOPE_TEST_AFTER": "2", "FAILSCOPE_TEST_MARKER": str(tmp_path / "fired")}
    out = tmp_path / "run"
    killed = cli(*parallel("policy.name=tests.fake_policies:SelfKilling", *eight), f"hydra.run.dir={out}", env=env)
    assert killed.returncode == 1 and "a rollout worker died" in killed.stdout, killed.stdout + killed.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "worker_lost" and summary["budget"]["rollouts_done"] == 4
    assert len(read_rollouts(out / "failures.hdf5")) == 4
    assert json.loads((out / "state.json").read_text())["checkpoint_rollouts"] == 4
    resumed = cli(f"search.resume={out}", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(out, reference)


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """A PPO run stopped by Ctrl-C after 3 rollouts (checkpoint after 2)."""
    out = tmp_path_factory.mktemp("interrupted")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FAILSCOPE_TEST_AFTER", "2")
        summary = run_search(config(INTERRUPTING, "search.total_rollouts=6", *PPO_TINY), out)
    assert summary["status"] == "interrupted"
    return out


def copy_of(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


@pytest.mark.parametrize(
    "override, message",
    [
        ("search.n_envs=3", r"only search.total_rollouts, backend and ray.\* may change, got search.n_envs=3"),
        ("monitor=fidel", r"only search.total_rollouts, backend and ray.\* may change, got monitor=fidel"),
    ],
)
def test_resume_refuses_overrides_it_would_ignore(interrupted_run, override, message):
    with pytest.raises(ValueError, match=message):
        load_resumed(config(f"search.resume={interrupted_run}"), [f"search.resume={interrupted_run}", override])
    resumed = load_resumed(
        config(f"search.resume={interrupted_run}", "search.total_rollouts=9"),
        [f"search.resume={interrupted_run}", "search.total_rollouts=9"],
    )
    assert resumed.search.total_rollouts == 9 and resumed.search.method == "ppo"


def test_resume_error_is_one_line_on_the_command_line(interrupted_run):
    result = cli(f"search.resume={interrupted_run}", "search.n_envs=3")
    assert result.returncode != 0 and result.stderr.strip().startswith("error: search.resume continues a run")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda run: (run / "failures.hdf5").write_bytes(b"not hdf5"), "failures.hdf5 cannot be read"),
        (lambda run: (run / "checkpoint" / "ppo.zip").unlink(), "checkpoint/ppo.zip is missing"),
        (lambda run: shutil.rmtree(run / "checkpoint"), "checkpoint/ is missing"),
        (lambda run: (run / "state.json").write_text("{"), "state.json is not valid JSON"),
    ],
)
def test_resume_of_a_damaged_run_is_one_clear_error(tmp_path, monkeypatch, interrupted_run, damage, message):
    monkeypatch.setenv("FAILSCOPE_TEST_AFTER", "-1")
    run = copy_of(interrupted_run, tmp_path)
    damage(run)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        prepare(config(INTERRUPTING, "search.total_rollouts=6", *PPO_TINY, f"search.resume={run}"), run)


def test_resume_of_a_continuous_run_is_refused(tmp_path):
    from omegaconf import OmegaConf

    OmegaConf.save(config("search=continuous"), tmp_path / "config.yaml")
    with pytest.raises(ValueError, match="is a continuous search; those are not resumable"):
        load_resumed(config(f"search.resume={tmp_path}"), [f"search.resume={tmp_path}"])


def test_uniform_allocation_cycles_past_arms_whose_rollouts_errored():
    bandit = UniformAllocation(arms=3)
    handed = []
    for _ in range(6):
        arm = int(bandit.select(1)[0])
        handed.append(arm)
        if arm != 0:  # arm 0's simulation always fails: no pull is recorded
            bandit.update(arm, failed=False)
    assert handed == [0, 1, 2, 0, 1, 2]


def test_bandit_state_round_trips_through_json_and_continues_the_same_stream():
    from diagnosis.bandits import RandomAllocation

    a, b = RandomAllocation(arms=5, seed=3), RandomAllocation(arms=5, seed=3)
    a.select(4)
    b.load_state(json.loads(json.dumps(a.state())))
    np.testing.assert_array_equal(a.select(8), b.select(8))


def test_closing_workers_does_not_wait_for_a_result_already_read():
    """SB3's SubprocVecEnv.close() reads every pending result, and hangs when one was read before (a step
    interrupted halfway); close_workers sends close and joins instead."""
    import gymnasium as gym
    from stable_baselines3.common.vec_env import SubprocVecEnv

    from diagnosis.workers import close_workers

    envs = SubprocVecEnv([lambda: gym.make("CartPole-v1")] * 2, start_method="forkserver")
    envs.reset()
    envs.step_async(np.zeros(2, dtype=int))
    envs.remotes[0].recv()  # worker 0's result is read, worker 1's is not: the state a Ctrl-C can leave
    close_workers(envs, timeout_s=20)
    assert envs.closed and not any(p.is_alive() for p in envs.processes)
