"""`python -m experiments.bench_rollout task=lift`: stock robosuite stepping vs the FailScope harness, in one run.

(a) stock: `robosuite.make(..., use_camera_obs=True)` with the task camera at the policy's image size, zero actions,
    robosuite's default hard resets between episodes — what a naive perturbation search pays per step;
(b) harness: `Runner.run` with the scripted expert, recording every camera frame through the fast renderer, with
    perturbations restored in place between episodes.
Both count control steps per second of wall time, including resets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.table import Table

from envs.cli import parse_config
from envs.rollout import Runner
from envs.scene import import_robosuite
from envs.tasks import get_task
from policies.scripted import ScriptedExpert


@dataclass
class BenchConfig:
    task: str = "lift"
    steps: int = 600
    """Control steps measured per variant (after warm-up)."""


def bench_stock(task_name: str, steps: int) -> float:
    robosuite = import_robosuite()
    task = get_task(task_name)
    env = robosuite.make(
        task.env_name,
        robots=task.robot,
        has_renderer=False,
        has_offscreen_renderer=True,
        use_camera_obs=True,
        camera_names=task.camera,
        camera_heights=task.image_size,
        camera_widths=task.image_size,
        control_freq=task.control_freq,
        horizon=task.horizon,
    )
    env.reset()
    env.step(np.zeros(env.action_dim))  # warm-up
    done_steps, started = 0, time.perf_counter()
    while done_steps < steps:
        env.reset()
        for _ in range(min(task.horizon, steps - done_steps)):
            env.step(np.zeros(env.action_dim))
            done_steps += 1
    elapsed = time.perf_counter() - started
    env.close()
    return done_steps / elapsed


def bench_harness(task_name: str, steps: int) -> float:
    runner = Runner(task_name)
    policy = ScriptedExpert(task_name)
    runner.run(policy, seed=10_000, record=True)  # warm-up
    done_steps, seed, started = 0, 0, time.perf_counter()
    while done_steps < steps:
        done_steps += runner.run(policy, seed=seed, record=True).length
        seed += 1
    elapsed = time.perf_counter() - started
    runner.close()
    return done_steps / elapsed


def main(argv: list[str] | None = None) -> None:
    config = parse_config(BenchConfig, argv)
    stock = bench_stock(config.task, config.steps)
    harness = bench_harness(config.task, config.steps)
    table = Table(title=f"rollout throughput, task {config.task!r}, {get_task(config.task).image_size}px camera")
    table.add_column("variant")
    table.add_column("steps/s", justify="right")
    table.add_column("ms/step", justify="right")
    for name, rate in (
        ("stock robosuite (camera obs, zero actions)", stock),
        ("harness (scripted expert, fast renderer)", harness),
    ):
        table.add_row(name, f"{rate:.1f}", f"{1000 / rate:.1f}")
    Console(width=120).print(table)
    print(f"ratio harness/stock: {harness / stock:.2f}")


if __name__ == "__main__":
    main()
