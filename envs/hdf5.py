"""Episodes to and from robomimic-layout HDF5.

    data            attrs: total, env_args (JSON), task
    data/demo_<i>   attrs: num_samples, model_file, seed, outcome, perturbations (JSON list), complete
                    datasets: actions, states, rewards, dones, obs/<key>, next_obs/<key>, and any per-step extras
                    (labels); next_obs is obs one step on with the last step repeated, what robomimic's
                    SequenceDataset loads by default
    mask/train, mask/valid: demo names

Crash safety: an episode is written into a staging group, marked `complete` and only then moved into data/ (one link
operation), with Ctrl-C held until the file is flushed, so a killed run never leaves a demo that reads as complete.
Opening an existing file appends: it first drops what a killed run left (the staging group; in files from before the
marker, demos cut off between datasets), then numbering continues, so long collections resume where they stopped.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from envs.rollout import Episode
from envs.tasks import TaskSpec, get_task

STANDARD_DATASETS = ("actions", "states", "rewards", "dones")
"""Datasets every written demo holds."""
STAGING = "incomplete_demo"
"""Root-level group an episode is written into before it is moved into data/; left over only by a killed run."""


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Holds Ctrl-C until the block is done, so an interrupted run never leaves half a record in a file. Nests; outside
    the main thread (where signal handlers cannot be set) it holds nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[tuple[int, Any]] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        for signum, frame in received:  # every press, in order: a handler may count them (press twice to force)
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                signal.raise_signal(signum)


def is_complete(group: h5py.Group) -> bool:
    """Whether a writer finished this demo. Groups from before the `complete` marker count as finished unless empty or
    holding only some of STANDARD_DATASETS (the old writer was cut off between two); hand-made groups with none of
    them (label-only files, test fixtures) are taken as they are."""
    if "complete" in group.attrs:
        return bool(group.attrs["complete"])
    present = [key in group for key in STANDARD_DATASETS]
    return len(group) > 0 and (all(present) or not any(present))


def _index(name: str) -> int:
    return int(name.split("_")[1])


def env_args(task: TaskSpec) -> dict:
    """robomimic's description of the environment a dataset came from."""
    return {
        "env_name": task.env_name,
        "type": 1,  # robomimic's EnvType.ROBOSUITE_TYPE
        "env_kwargs": {
            "robots": task.robot,
            "control_freq": task.control_freq,
            "horizon": task.horizon,
            "camera_names": [task.camera],
            "camera_heights": task.image_size,
            "camera_widths": task.image_size,
            "use_camera_obs": True,
            "use_object_obs": True,
            "has_renderer": False,
            "has_offscreen_renderer": True,
            "reward_shaping": False,
            "ignore_done": True,
        },
        "failscope_task": task.name,
    }


def _write_obs(group: h5py.Group, key: str, value: np.ndarray, image: bool) -> None:
    """obs/<key> and next_obs/<key> (one step on, the last step repeated, as robomimic's own datasets end), images
    gzip'd in chunks of up to 64 frames."""
    value = np.asarray(value)
    storage = {"compression": "gzip", "compression_opts": 4, "chunks": (min(len(value), 64), *value.shape[1:])}
    for prefix, data in (("obs", value), ("next_obs", np.concatenate([value[1:], value[-1:]]))):
        group.create_dataset(f"{prefix}/{key}", data=data, **(storage if image else {}))


class EpisodeWriter:
    """Appends episodes to a robomimic-layout file; use as a context manager."""

    def __init__(self, path: str | Path, task: str | TaskSpec, model_xml: str, obs_keys: tuple[str, ...] | None = None):
        self.task = get_task(task)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = h5py.File(self.path, "a")
        self.data = self.file.require_group("data")
        existing = self.data.attrs.get("task")
        if existing is not None and existing != self.task.name:
            self.file.close()
            raise ValueError(f"{self.path} holds task {existing!r}, not {self.task.name!r}")
        self.data.attrs["task"] = self.task.name
        self.data.attrs["env_args"] = json.dumps(env_args(self.task))
        self.model_xml = model_xml
        self.obs_keys = obs_keys
        self.discarded = self._discard_incomplete()
        """Demos a killed run had left half-written, removed on opening (the next writes take their names)."""

    def _discard_incomplete(self) -> list[str]:
        """Deletes the staging group and incomplete demos, and recounts `total` over the demos that remain."""
        with deferred_interrupt():
            if STAGING in self.file:
                del self.file[STAGING]
            discarded = sorted((n for n in self.data if not is_complete(self.data[n])), key=_index)
            for name in discarded:
                del self.data[name]
            self.data.attrs["total"] = sum(int(g.attrs["num_samples"]) for g in self.data.values())
            self.file.flush()
        return discarded

    def __len__(self) -> int:
        return len(self.data)

    def write(
        self,
        episode: Episode,
        extras: Mapping[str, np.ndarray] | None = None,
        actions: np.ndarray | None = None,
        attrs: Mapping[str, object] | None = None,
    ) -> str:
        """Stores one episode; `actions` overrides the executed ones (e.g. an expert's clean labels), `extras` are
        per-step datasets (labels) and `attrs` per-episode attributes stored beside the standard ones. Ctrl-C during
        the write is raised once it is on disk; any other error leaves the file as it was."""
        name = f"demo_{max(map(_index, self.data), default=-1) + 1}"
        steps = episode.length
        with deferred_interrupt():
            group = self.file.create_group(STAGING)
            try:
                group.create_dataset("actions", data=episode.actions if actions is None else actions)
                group.create_dataset("states", data=episode.states)
                rewards = np.zeros(steps)
                if episode.success:
                    rewards[-1] = 1.0
                dones = np.zeros(steps, dtype=np.int64)
                dones[-1] = 1
                group.create_dataset("rewards", data=rewards)
                group.create_dataset("dones", data=dones)
                for key in self.obs_keys or tuple(episode.observations):
                    if key in episode.observations:
                        _write_obs(group, key, episode.observations[key], image=False)
                if episode.frames is not None:
                    _write_obs(group, f"{self.task.camera}_image", episode.frames, image=True)
                for key, value in (extras or {}).items():
                    group.create_dataset(key, data=value)
                group.attrs.update(
                    num_samples=steps,
                    model_file=self.model_xml,
                    seed=episode.seed,
                    outcome=episode.outcome,
                    perturbations=json.dumps(list(episode.perturbations)),
                    receipts=json.dumps(list(episode.receipts)),
                    **(attrs or {}),
                )
                group.attrs["complete"] = True  # last: is_complete trusts it
                self.file.move(STAGING, f"data/{name}")
            except BaseException:
                if STAGING in self.file:
                    del self.file[STAGING]
                raise
            self.data.attrs["total"] = int(self.data.attrs.get("total", 0)) + steps
            self.file.flush()
        return name

    def write_split(self, valid_fraction: float = 0.1, seed: int = 0) -> None:
        """Rewrites mask/train and mask/valid over every demo in the file."""
        names = demo_names(self.file)
        order = np.random.default_rng(seed).permutation(len(names))
        # At least one validation demo whenever a split is asked for and there are two or more demos.
        n_valid = max(1, int(round(valid_fraction * len(names)))) if len(names) > 1 and valid_fraction > 0 else 0
        valid = sorted((names[i] for i in order[:n_valid]), key=_index)
        train = [n for n in names if n not in set(valid)]
        mask = self.file.require_group("mask")
        for split, members in (("train", train), ("valid", valid)):
            if split in mask:
                del mask[split]
            mask.create_dataset(split, data=np.array(members, dtype="S"))

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def demo_names(file: h5py.File, split: str | None = None) -> list[str]:
    """Complete demos in numeric order, or those of a mask split; half-written ones (a killed run's) are skipped."""
    if split is not None:
        if "mask" not in file or split not in file["mask"]:
            raise ValueError(f"{file.filename} has no split {split!r}")
        names = [n.decode() for n in file["mask"][split][:]]
        return [n for n in names if n in file["data"] and is_complete(file["data"][n])]
    return sorted((n for n in file["data"] if is_complete(file["data"][n])), key=_index)


def iter_demos(path: str | Path, split: str | None = None) -> Iterator[tuple[str, h5py.Group]]:
    """(name, group) of each complete demo, in order, with the file open meanwhile."""
    with h5py.File(path, "r") as file:
        for name in demo_names(file, split):
            yield name, file["data"][name]
