"""One smoke test per entry point, run as a user would (a subprocess), on a tiny budget; and bad input to each
ending in one `error:` line that names the problem and what to do (tiny files built here, no rollouts)."""

import json
import re
import shlex
import subprocess
import sys

import pytest


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300)


def test_envs_list_prints_table_and_count():
    result = run_module("envs.list", "task=lift")
    assert result.returncode == 0, result.stderr
    assert "cube_color_red" in result.stdout and "event_gripper_open" in result.stdout
    count = int(re.search(r"^(\d+) perturbations$", result.stdout.strip().splitlines()[-1]).group(1))
    assert count >= 21


@pytest.mark.parametrize("args, message", [(["task=lfit"], "valid tasks"), (["tsk=lift"], "keys: task")])
def test_envs_list_bad_input(args, message):
    result = run_module("envs.list", *args)
    assert result.returncode != 0 and message in result.stderr


def test_policies_evaluate_reports_success_rate():
    result = run_module("policies.evaluate", "policy=scripted", "task=lift", "episodes=2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "success_rate: 1.000"


def test_policies_evaluate_unknown_policy_lists_choices():
    result = run_module("policies.evaluate", "policy=nope", "episodes=1")
    assert result.returncode != 0 and "valid policies: scripted" in result.stderr


@pytest.mark.slow  # a real benchmark, however short
def test_bench_rollout_prints_ratio():
    result = run_module("experiments.bench_rollout", "task=lift", "steps=20")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"ratio harness/stock: \d+\.\d\d", result.stdout.strip().splitlines()[-1])


# -- bad input: one `error:` line naming the problem and what to do ----------------------------------------------


def write_simfails(path, finished: bool = True):
    """A SimFails file in monitor.dataset's layout, one 3-frame nominal episode per split (no masks: unfinished)."""
    import h5py
    import numpy as np

    with h5py.File(path, "w") as file:
        data = file.create_group("data")
        data.attrs.update(task="lift", policy="scripted", fit_rejected_seeds="[]")
        if finished:
            data.attrs["late_step"] = 3
        for i, split in enumerate(("fit", "filter", "test")):
            group = data.create_group(f"demo_{i}")
            group.attrs.update(
                num_samples=3,
                seed=i,
                outcome="success",
                perturbations="[]",
                split=split,
                kind="nominal",
                perturbation="",
                family="nominal",
                visual_onset=-1,
                failure_onset=-1,
                failure_step=-1,
            )
            group.create_dataset("obs/agentview_image", data=np.zeros((3, 84, 84, 3), np.uint8))
            group.create_dataset("anomaly", data=np.zeros(3, np.uint8))
            group.create_dataset("failure", data=np.zeros(3, np.uint8))
            if finished:
                file.create_dataset(f"mask/{split}", data=np.array([f"demo_{i}"], dtype="S"))
    return path


@pytest.fixture
def search_data(tmp_path):
    from fake_embeddings import separable_rows, write_dataset

    return write_dataset(tmp_path / "run", separable_rows(4), policy="scripted") / "failures.hdf5"


def error_of(main, argv) -> str:
    with pytest.raises(SystemExit) as exit:
        main(argv)
    message = str(exit.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_embed_given_a_simfails_file_says_it_needs_a_search_dataset(tmp_path):
    from diagnosis.embed import main

    simfails = write_simfails(tmp_path / "simfails.hdf5")
    assert error_of(main, ["task=lift", f"data={simfails}", "policy=scripted"]) == (
        f"error: {simfails} is a SimFails file, not a search's failure dataset (failures.hdf5); make one with "
        "python -m diagnosis.search task=lift policy.name=scripted"
    )


@pytest.mark.parametrize("module", ["monitor.evaluate", "monitor.train_filter"])
def test_monitor_clis_given_a_search_dataset_say_how_to_make_simfails(module, search_data, tmp_path):
    import importlib

    main = importlib.import_module(module).main
    # monitor= a missing folder: should the data check ever come after the monitor, this fails fast, not fits one
    argv = ["task=lift", "policy=scripted", f"data={search_data}", f"monitor={tmp_path / 'none'}"]
    assert error_of(main, argv if module.endswith("train_filter") else argv[:3]) == (
        f"error: {search_data} is a search's failure dataset (failures.hdf5), not a SimFails file; make one with "
        "python -m monitor.dataset task=lift policy=scripted"
    )


def test_monitor_evaluate_on_an_unfinished_simfails_file_says_to_resume(tmp_path):
    from monitor.evaluate import main

    simfails = write_simfails(tmp_path / "simfails.hdf5", finished=False)
    assert "is an unfinished SimFails file (no mask/fit, mask/filter, mask/test)" in error_of(
        main, ["task=lift", "policy=scripted", f"data={simfails}"]
    )


def test_a_corrupt_summary_is_one_error_line_on_stderr(tmp_path):
    (tmp_path / "summary.json").write_text('{"task": "lift", "pol')  # a search killed while writing it
    result = run_module("diagnosis.evaluate", f"run={tmp_path}")
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'summary.json'} is not valid JSON (Unterminated string starting at: line 1 column 18 "
        "(char 17)); rerun the search (python -m diagnosis.search) or restore the file"
    ]


SUMMARY = {
    "task": "lift",
    "policy": "scripted",
    "method": "ppo",
    "budget": {"rollouts_done": 4},
    "ranking": [{"perturbation": "cube_color_red", "score": 0.5}],
    "metrics": {},
}


@pytest.mark.parametrize(
    "text, problem",
    [
        ('{"task": "lift", "pol', r"is not valid JSON \(Unterminated string"),  # truncated
        ("<html>", r"is not valid JSON \(Expecting value"),
        ("[1, 2]", "holds a JSON list, not a search summary object"),
        (json.dumps({"task": "lift"}), "lacks policy, method, budget, ranking, metrics"),
        (json.dumps({**SUMMARY, "ranking": {}}), r"wrong type for ranking \(dict, not list\)"),
        (json.dumps({**SUMMARY, "ranking": [{"score": 1}]}), "ranking row 0 is not an object with perturbation and"),
        (json.dumps({**SUMMARY, "budget": {}}), "budget lacks rollouts_done"),
    ],
)
def test_diagnosis_evaluate_on_a_corrupt_summary_names_the_file_and_problem(tmp_path, text, problem):
    from diagnosis.evaluate import main

    (tmp_path / "summary.json").write_text(text)
    message = error_of(main, [f"run={tmp_path}"])
    assert message.startswith(f"error: {tmp_path / 'summary.json'}") and re.search(problem, message), message
    assert message.endswith("rerun the search (python -m diagnosis.search) or restore the file")


def test_help_lists_each_key_with_its_default_and_what_it_does():
    result = run_module("monitor.evaluate", "--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "usage: python -m monitor.evaluate key=value ..."
    at = lines.index("  alpha=0.1")
    assert lines[at + 1].strip().startswith("Every method's false-alarm budget")


def test_every_console_script_names_a_module_main():
    import importlib
    import tomllib
    from pathlib import Path

    scripts = tomllib.loads(Path("pyproject.toml").read_text())["project"]["scripts"]
    assert "failscope-search" in scripts
    for name, target in scripts.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name


def test_command_line_rebuilds_the_config_it_was_given():
    from diagnosis.improve import ImproveConfig
    from envs.cli import command_line, parse_config

    config = parse_config(ImproveConfig, ["run=runs/a b", "top_k=3", "ray.num_cpus=2", "control=false"])
    command = command_line("diagnosis.improve", config)
    assert command == "python -m diagnosis.improve ray.num_cpus=2.0 'run=runs/a b' top_k=3 control=False"
    assert parse_config(ImproveConfig, shlex.split(command)[3:]) == config
