"""The failure dataset: every rollout of a search, in robomimic layout, labelled frame by frame.

    data/demo_<i>   attrs: (robomimic) num_samples, model_file; (envs.hdf5) seed, outcome, perturbations;
                           failed, sim_failure, search_step, depth, monitor (JSON summary or "null")
                    datasets: actions, states, rewards, dones, obs/<low-dim keys>, obs/agentview_image, and, when a
                           monitor watched: monitor_score, monitor_threshold, anomaly, failure, t_min, heatmap
    data            attrs: task, env_args, candidates (JSON list of the search's perturbations)

Monitors can be trained on it, and any rollout can be replayed: its model, perturbations, seed and states are
stored (`restore_first_state`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from envs.hdf5 import EpisodeWriter, deferred_interrupt, demo_names
from envs.perturbations import Perturbation, resolve
from envs.perturbations.user import perturbation_from_dict, to_dict
from envs.rollout import Episode, Runner
from envs.tasks import TaskSpec


def monitor_labels(episode: Episode) -> dict[str, np.ndarray]:
    """Per-frame monitor outputs as arrays (empty when no monitor watched the rollout)."""
    outputs = episode.monitor_outputs
    if not outputs:
        return {}
    labels = {
        "monitor_score": np.array([o.score for o in outputs], dtype=np.float32),
        "monitor_threshold": np.array([o.threshold for o in outputs], dtype=np.float32),
        "anomaly": np.array([o.is_anomaly for o in outputs], dtype=np.uint8),
        "failure": np.array([o.is_failure for o in outputs], dtype=np.uint8),
        "t_min": np.array([o.t_min for o in outputs], dtype=np.int32),
    }
    if all(o.heatmap is not None for o in outputs):
        labels["heatmap"] = np.stack([o.heatmap for o in outputs]).astype(np.float16)
    return labels


class FailureDatasetWriter:
    """Appends search rollouts (the `info` dicts of `FailureSearchEnv.step`) to `failures.hdf5`."""

    def __init__(self, path: str | Path, task: TaskSpec, model_xml: str, candidates: Sequence[Perturbation]):
        self.writer = EpisodeWriter(path, task, model_xml)
        self.writer.data.attrs["candidates"] = json.dumps([p.name for p in candidates])
        # What each name meant (user-defined ones included), so a replay needs neither the catalogue nor the file.
        self.writer.data.attrs["definitions"] = json.dumps([to_dict(p) for p in candidates])

    def __len__(self) -> int:
        return len(self.writer)

    def truncate(self, keep: int) -> int:
        """Deletes every rollout after the first `keep` (a resumed search reruns them); returns how many went."""
        data = self.writer.data
        extra = [name for name in data if int(name.split("_")[1]) >= keep]
        for name in extra:
            data.attrs["total"] = int(data.attrs.get("total", 0)) - int(data[name].attrs.get("num_samples", 0))
            del data[name]
        if extra:
            self.writer.file.flush()
        return len(extra)

    def write(self, info: dict[str, Any], search_step: int) -> str:
        attrs = {
            "failed": bool(info["failed"]),
            "sim_failure": bool(info["sim_failure"]),
            "search_step": search_step,
            "depth": int(info["depth"]),
            "monitor": json.dumps(info["monitor"]),
        }
        with deferred_interrupt():
            name = self.writer.write(info["rollout"], extras=monitor_labels(info["rollout"]), attrs=attrs)
            self.writer.file.flush()
        return name

    def close(self) -> None:
        self.writer.close()


def read_rollouts(path: str | Path) -> list[dict[str, Any]]:
    """Per-rollout attributes (no arrays), in order: enough to rebuild counts or pick rollouts to show."""
    rows = []
    with h5py.File(path, "r") as file:
        for name in demo_names(file):
            attrs = file["data"][name].attrs
            rows.append(
                {
                    "demo": name,
                    "seed": int(attrs["seed"]),
                    "outcome": str(attrs["outcome"]),
                    "perturbations": json.loads(attrs["perturbations"]),
                    "failed": bool(attrs["failed"]),
                    "length": int(attrs["num_samples"]),
                    "search_step": int(attrs["search_step"]),
                    "sim_failure": bool(attrs["sim_failure"]),
                    "monitor": json.loads(attrs["monitor"]),
                }
            )
    return rows


def restore_first_state(runner: Runner, group: h5py.Group) -> np.ndarray:
    """Puts `runner`'s scene into a stored rollout's first state (its perturbations applied to the model, then
    the stored simulator state) and returns the camera frame there: the start of a replay."""
    names = json.loads(group.attrs["perturbations"])
    defined = {d["name"]: d for d in json.loads(group.file["data"].attrs.get("definitions", "[]"))}
    perturbations = [perturbation_from_dict(defined[n]) if n in defined else n for n in names]
    perturbations = resolve(runner.task, perturbations)
    episode = runner.episode([p for p in perturbations if p.at_step is None], int(group.attrs["seed"]), True)
    episode.start()
    runner.scene.env.sim.set_state_from_flattened(group["states"][0])
    runner.scene.forward()
    return runner.renderer.render(runner.scene.data)
