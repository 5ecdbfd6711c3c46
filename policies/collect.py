"""`python -m policies.collect task=lift episodes=200`: scripted-expert demonstrations in robomimic-layout HDF5.

DART-style: the executed arm actions carry small Gaussian noise while the recorded actions are the expert's clean
ones, so behaviour cloning sees states off the expert's path labelled with the way back. Only successful episodes
are kept. Episodes run on `workers` workers of the backend (processes, or Ray actors with `backend=ray`) and are
kept in seed order, so the file is the same whichever ran them. Re-running with the same `out` appends (numbering and
seeds continue), so an interrupted run resumes (a demo a killed run left half-written is dropped and the next one
takes its name; Ctrl-C waits for the demo being written).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from envs.backends import Backend, RolloutSettings, UnitFailed, failure_message
from envs.cli import parse_config
from envs.hdf5 import EpisodeWriter, deferred_interrupt
from envs.perturbations import get_perturbations, validate_composition
from envs.rollout import Episode, get_runner
from envs.tasks import get_task
from policies.scripted import ScriptedExpert

DATASET_OBS_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object-state")


@dataclass
class CollectConfig(RolloutSettings):
    task: str = "lift"
    episodes: int = 200
    """Successful demonstrations wanted in the file (including ones already there)."""
    out: str = ""
    """Output file (default data/<task>_scripted.hdf5)."""
    noise: float = 0.1
    """Std of the noise on executed arm actions (0 = the clean expert)."""
    yaw_jitter: float = 0.785
    """Radians: the expert grasps at a random yaw offset up to this size (see ScriptedExpert; round objects such as
    the can are always grasped at the hand's starting yaw)."""
    seed: int = 0
    """Seed of the first episode of a new file."""
    valid_fraction: float = 0.1
    perturbations: str = ""
    """Collect under these perturbations, applied together (comma-separated catalogue or user names; a composed
    mode's parts `a+b` count as a and b). The expert acts on simulator state, so it succeeds under what only changes
    the picture; what changes the physics may defeat it (see max_attempts)."""
    perturbation_file: str = ""
    """User-defined perturbations (YAML, envs/perturbations/user.py) the names may refer to."""
    max_attempts: int = 0
    """Stop after this many episodes in the file have been tried, kept or not (0: no limit)."""


class NoisyExpert:
    """Executes the expert's action plus noise, remembering the clean actions as labels."""

    def __init__(self, expert: ScriptedExpert, noise: float, seed: int):
        self.expert, self.noise = expert, noise
        self.obs_keys = expert.obs_keys
        self.action_dim = expert.action_dim
        self.rng = np.random.default_rng([seed, 31337])
        self.clean_actions: list[np.ndarray] = []

    def reset(self) -> None:
        self.expert.reset()
        self.clean_actions = []

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        clean = self.expert.act(obs)
        self.clean_actions.append(clean)
        noisy = clean.copy()
        noisy[:-1] = np.clip(noisy[:-1] + self.rng.normal(0.0, self.noise, size=len(noisy) - 1), -1.0, 1.0)
        return noisy


@dataclass(frozen=True)
class DemoUnit:
    """One attempt at a demonstration: what a worker needs to run it."""

    task: str
    seed: int
    noise: float
    yaw_jitter: float
    perturbations: tuple[str, ...] = ()
    """Names of the perturbations applied together."""
    perturbation_file: str = ""


def mode_parts(names: str) -> tuple[str, ...]:
    """Perturbation names from a comma-separated list whose items may be composed modes (`a+b`)."""
    return tuple(part.strip() for name in names.split(",") for part in name.split("+") if part.strip())


def run_demo(unit: DemoUnit) -> tuple[Episode, np.ndarray]:
    """The noisy expert's episode on the unit's seed and the clean actions it was labelled with."""
    task = get_task(unit.task)
    policy = NoisyExpert(ScriptedExpert(task, yaw_jitter=unit.yaw_jitter, seed=unit.seed), unit.noise, unit.seed)
    perturbations = get_perturbations(task, unit.perturbations, unit.perturbation_file) if unit.perturbations else []
    episode = get_runner(task.name).run(policy, perturbations, seed=unit.seed, record=True)
    return episode, np.asarray(policy.clean_actions)


def collect(config: CollectConfig, backend: Backend | None = None) -> str:
    """Collects into `config.out` (see the module docstring); `backend`: workers already open to run the episodes
    on (a caller collecting several files keeps one set), else the config's own are opened and closed."""
    config.check()
    task = get_task(config.task)
    parts = mode_parts(config.perturbations)
    if parts:
        validate_composition(task, get_perturbations(task, parts, config.perturbation_file))
    out = config.out or f"data/{task.name}_scripted.hdf5"
    runner = get_runner(task.name)
    with (
        nullcontext(backend) if backend is not None else config.open_backend() as backend,
        EpisodeWriter(out, task, runner.scene.env.sim.model.get_xml(), obs_keys=DATASET_OBS_KEYS) as writer,
    ):
        first = int(writer.data.attrs.get("next_seed", config.seed))
        kept, tried = len(writer), 0
        resumed_with = kept  # the success rate shown is of this run's attempts, not of the demos a file already had
        seeds = itertools.count(first)
        if config.max_attempts:  # attempts of earlier runs count: the file's seeds run on from `seed`
            started = int(writer.data.attrs.get("first_seed", config.seed))
            seeds = range(first, max(first, started + config.max_attempts))
        writer.data.attrs.setdefault("first_seed", first)
        progress = tqdm(total=config.episodes, initial=kept, desc=f"demos {task.name}", unit="demo")
        units = (
            DemoUnit(task.name, seed, config.noise, config.yaw_jitter, parts, config.perturbation_file)
            for seed in seeds
        )
        results = backend.map(run_demo, units) if kept < config.episodes else iter(())
        for unit, result in results:
            if isinstance(result, UnitFailed):
                raise ValueError(f"{failure_message([result])}; the demos so far are kept, rerun to resume")
            episode, clean_actions = result
            tried += 1
            with deferred_interrupt():  # the seed counter and the demo it produced go in together
                writer.data.attrs["next_seed"] = unit.seed + 1
                if episode.success:
                    writer.write(episode, actions=clean_actions)
                    kept += 1
                    progress.update()
            progress.set_postfix(kept=f"{kept}", success=f"{(kept - resumed_with) / tried:.0%}")
            if kept >= config.episodes:
                break
        progress.close()
        writer.write_split(config.valid_fraction)
    return out


def collected(path: str | Path) -> tuple[int, int]:
    """(demonstrations kept, episodes tried) of a collection file; (0, 0) before it exists."""
    if not Path(path).is_file():
        return 0, 0
    with h5py.File(path, "r") as file:
        data = file["data"]
        return len(data), int(data.attrs.get("next_seed", 0)) - int(data.attrs.get("first_seed", 0))


def main(argv: list[str] | None = None) -> None:
    config = parse_config(CollectConfig, argv)
    if config.episodes < 1:
        raise SystemExit(f"error: episodes must be >= 1, got {config.episodes}")
    try:
        out = collect(config)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    with h5py.File(out, "r") as file:
        demos, samples = len(file["data"]), int(file["data"].attrs["total"])
        print(
            f"{out}: {demos} demos, {samples} samples, "
            f"train {len(file['mask/train'])} / valid {len(file['mask/valid'])}"
        )
    if demos < config.episodes:
        tried = collected(out)[1]
        print(f"stopped at max_attempts={config.max_attempts}: the expert succeeded in {demos} of {tried} episodes")
    print(f"demos: {demos}")


if __name__ == "__main__":
    main()
