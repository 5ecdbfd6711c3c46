"""Episodes to and from robomimic-layout HDF5.

    data            attrs: total, env_args (JSON), task
    data/demo_<i>   attrs: num_samples, model_file, seed, outcome, perturbations (JSON list)
                    datasets: actions, states, rewards, dones, obs/<key>, and any per-step extras (labels)
    mask/train, mask/valid: demo names

Opening an existing file appends: numbering continues, so long collections resume where they stopped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import h5py
import numpy as np

from envs.rollout import Episode
from envs.tasks import TaskSpec, get_task


def env_args(task: TaskSpec) -> dict:
    """robomimic's description of the environment a dataset came from."""
    return {
        "env_name": task.env_name,
        "type": 1,  # robomimic's EnvType.ROBOSUITE_TYPE
        "env_kwargs": {
            "robots": task.robot, "control_freq": task.control_freq, "horizon": task.horizon,
            "camera_names": [task.camera], "camera_heights": task.image_size, "camera_widths": task.image_size,
            "use_camera_obs": True, "use_object_obs": True, "has_renderer": False, "has_offscreen_renderer": True,
            "reward_shaping": False, "ignore_done": True,
        },
        "failscope_task": task.name,
    }


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
        per-step datasets (labels) and `attrs` per-episode attributes stored beside the standard ones."""
        name = f"demo_{len(self.data)}"
        group = self.data.create_group(name)
        steps = episode.length
        group.attrs.update(
            num_samples=steps, model_file=self.model_xml, seed=episode.seed, outcome=episode.outcome,
            perturbations=json.dumps(list(episode.perturbations)), **(attrs or {}),
        )
        group.create_dataset("actions", data=episode.actions if actions is None else actions)
        group.create_dataset("states", data=episode.states)
        rewards = np.zeros(steps)
        if episode.success:
            rewards[-1] = 1.0
        dones = np.zeros(steps, dtype=np.int64)
        dones[-1] = 1
        group.create_dataset("rewards", data=rewards)
        group.create_dataset("dones", data=dones)
        obs = group.create_group("obs")
        keys = self.obs_keys or tuple(episode.observations)
        for key in keys:
            if key in episode.observations:
                obs.create_dataset(key, data=episode.observations[key])
        if episode.frames is not None:
            obs.create_dataset(
                f"{self.task.camera}_image", data=episode.frames, compression="gzip", compression_opts=4,
                chunks=(min(steps, 64), *episode.frames.shape[1:]),
            )
        for key, value in (extras or {}).items():
            group.create_dataset(key, data=value)
        self.data.attrs["total"] = int(self.data.attrs.get("total", 0)) + steps
        return name

    def write_split(self, valid_fraction: float = 0.1, seed: int = 0) -> None:
        """Rewrites mask/train and mask/valid over every demo in the file."""
        names = sorted(self.data, key=lambda n: int(n.split("_")[1]))
        order = np.random.default_rng(seed).permutation(len(names))
        # At least one validation demo whenever a split is asked for and there are two or more demos.
        n_valid = max(1, int(round(valid_fraction * len(names)))) if len(names) > 1 and valid_fraction > 0 else 0
        valid = sorted((names[i] for i in order[:n_valid]), key=lambda n: int(n.split("_")[1]))
        train = [n for n in names if n not in set(valid)]
        mask = self.file.require_group("mask")
        for split, members in (("train", train), ("valid", valid)):
            if split in mask:
                del mask[split]
            mask.create_dataset(split, data=np.array(members, dtype="S"))

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def demo_names(file: h5py.File, split: str | None = None) -> list[str]:
    """Demo names in numeric order, or those of a mask split."""
    if split is not None:
        if "mask" not in file or split not in file["mask"]:
            raise ValueError(f"{file.filename} has no split {split!r}")
        return [n.decode() for n in file["mask"][split][:]]
    return sorted(file["data"], key=lambda n: int(n.split("_")[1]))


def iter_demos(path: str | Path, split: str | None = None) -> Iterator[tuple[str, h5py.Group]]:
    with h5py.File(path, "r") as file:
        for name in demo_names(file, split):
            yield name, file["data"][name]
