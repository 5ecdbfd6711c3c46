"""One smoke test per entry point, run as a user would (a subprocess), on a tiny budget."""

import re
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
