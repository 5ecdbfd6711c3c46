"""`python -m envs.lerobot_export data=<file.hdf5> out=<dir>`: a FailScope HDF5 file (a search's failures.hdf5,
SimFails, demonstrations) as a LeRobot dataset (format v3.0, what `LeRobotDataset(repo_id, root=out)` reads).

lerobot itself cannot be installed beside this project's pins, so the layout is written with pyarrow:

    out/meta/info.json                                 features, counts, fps, codebase_version "v3.0" (written last)
    out/meta/stats.json                                min/max/mean/std/count and quantiles of every numeric feature
    out/meta/tasks.parquet                             the task's instruction (a pandas index, as the reader wants)
    out/meta/episodes/chunk-000/file-000.parquet       one row per rollout: its frame range, outcome, perturbations
    out/data/chunk-000/file-000.parquet                one row per step, one row group per rollout

Per step: `observation.image` (the camera frame as PNG inside the parquet: no video decoder needed to read it back),
`observation.state` (the file's low-dimensional observations, concatenated in key order; absent when it has none),
`action`, `next.reward`, `next.done`, and LeRobot's index columns. Per rollout (episodes parquet): `success`,
`perturbations`, `seed`, the source demo's name and, for a search's file, `failed`, `sim_failure` and
`search_step`. tests/test_lerobot_export.py reads an export back with LeRobot's own reader.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from envs.cli import parse_config, shown_path
from envs.hdf5 import demo_names
from envs.tasks import get_task

CODEBASE_VERSION = "v3.0"
DATA_FILE = "data/chunk-000/file-000.parquet"
EPISODES_FILE = "meta/episodes/chunk-000/file-000.parquet"
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
"""robosuite's OSC_POSE deltas and the gripper command, as every FailScope policy acts."""
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
"""How LeRobot (Hugging Face datasets' Image feature) stores an image in parquet."""
INDEX_FEATURES = {
    "timestamp": "float32",
    "frame_index": "int64",
    "episode_index": "int64",
    "index": "int64",
    "task_index": "int64",
}
"""Columns every LeRobot dataset has, declared in info.json like the others."""
SEARCH_ATTRS = ("failed", "sim_failure", "search_step")
IMAGE_STATS_FRAMES = 8
"""Frames per rollout the image statistics are computed on."""


@dataclass
class LeRobotExportConfig:
    data: str = ""
    """A FailScope HDF5 file (failures.hdf5 of a search run, a SimFails file, demonstrations)."""
    out: str = ""
    """The LeRobot dataset folder to write (must not exist or be empty)."""
    fps: int = 0
    """Frames per second; 0 = the task's control frequency."""


def _png(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def _stats(values: np.ndarray) -> dict[str, list]:
    """LeRobot's per-feature statistics over rows of (N, D) values."""
    values = values.reshape(len(values), -1).astype(np.float64)
    out = {"min": values.min(0), "max": values.max(0), "mean": values.mean(0), "std": values.std(0)}
    out.update({name: np.quantile(values, q, axis=0) for name, q in QUANTILES.items()})
    return {**{k: v.tolist() for k, v in out.items()}, "count": [len(values)]}


def _image_stats(frames: np.ndarray) -> dict[str, list]:
    """Per colour channel, on pixels scaled to [0, 1], each stat shaped (3, 1, 1) as LeRobot's normalisers read it."""
    pixels = (frames.reshape(-1, 3).astype(np.float32) / 255.0).T  # (3, N·H·W)
    stats = _stats(pixels.T)
    return {k: (np.asarray(v).reshape(3, 1, 1).tolist() if k != "count" else [len(frames)]) for k, v in stats.items()}


def _low_dim_keys(file: h5py.File, names: list[str], image_key: str) -> list[str]:
    """The low-dimensional observation keys every demo has, in sorted order."""
    common = None
    for name in names:
        keys = {k for k in file["data"][name]["obs"] if k != image_key and file["data"][name]["obs"][k].ndim == 2}
        common = keys if common is None else common & keys
    return sorted(common or ())


def _episode_row(group: h5py.Group, name: str, index: int, start: int, length: int, instruction: str) -> dict:
    attrs = group.attrs
    row = {
        "episode_index": index,
        "tasks": [instruction],
        "length": length,
        "data/chunk_index": 0,
        "data/file_index": 0,
        "dataset_from_index": start,
        "dataset_to_index": start + length,
        "meta/episodes/chunk_index": 0,
        "meta/episodes/file_index": 0,
        "success": str(attrs.get("outcome", "")) == "success",
        "perturbations": json.loads(attrs.get("perturbations", "[]")),
        "seed": int(attrs.get("seed", -1)),
        "source_demo": name,
    }
    for key in SEARCH_ATTRS:
        if key in attrs:
            row[key] = attrs[key].item() if hasattr(attrs[key], "item") else attrs[key]
    return row


def _tasks_table(instruction: str) -> pa.Table:
    """tasks.parquet with the instruction as its pandas index, which LeRobot's reader returns per frame (without
    the pandas metadata it silently returns the row number instead)."""
    pandas = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "pandas_version": "2.2.0",
    }
    table = pa.table({"task_index": pa.array([0], pa.int64()), "task": pa.array([instruction], pa.string())})
    return table.replace_schema_metadata({"pandas": json.dumps(pandas)})


def export(data: str | Path, out: str | Path, fps: int = 0) -> dict[str, Any]:
    """Writes the LeRobot dataset; returns its info.json. ValueError for a file it cannot export."""
    data, out = Path(data), Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty; choose a new out= folder")
    with h5py.File(data, "r") as file:
        names = demo_names(file)
        if not names:
            raise ValueError(f"{data} holds no complete rollouts to export")
        task = get_task(str(file["data"].attrs.get("task", "")) or "lift")
        image_key = f"{task.camera}_image"
        missing = [n for n in names if image_key not in file["data"][n]["obs"]]
        if missing:
            raise ValueError(f"{data}: {missing[0]} has no {image_key} frames; only files with frames export")
        state_keys = _low_dim_keys(file, names, image_key)
        first = file["data"][names[0]]
        state_names = [f"{k}_{i}" for k in state_keys for i in range(first["obs"][k].shape[1])]
        action_dim = first["actions"].shape[1]
        shape = list(first["obs"][image_key].shape[1:])
        fps = fps or task.control_freq
        features = {
            "observation.image": {"dtype": "image", "shape": shape, "names": ["height", "width", "channels"]},
            **(
                {"observation.state": {"dtype": "float32", "shape": [len(state_names)], "names": state_names}}
                if state_keys
                else {}
            ),
            "action": {
                "dtype": "float32",
                "shape": [action_dim],
                "names": list(ACTION_NAMES)
                if action_dim == len(ACTION_NAMES)
                else [f"a{i}" for i in range(action_dim)],
            },
            "next.reward": {"dtype": "float32", "shape": [1], "names": None},
            "next.done": {"dtype": "bool", "shape": [1], "names": None},
            **{k: {"dtype": dtype, "shape": [1], "names": None} for k, dtype in INDEX_FEATURES.items()},
        }
        schema = pa.schema(
            [("observation.image", IMAGE_TYPE)]
            + ([("observation.state", pa.list_(pa.float32(), len(state_names)))] if state_keys else [])
            + [("action", pa.list_(pa.float32(), action_dim)), ("next.reward", pa.float32()), ("next.done", pa.bool_())]
            + [(k, pa.float32() if dtype == "float32" else pa.int64()) for k, dtype in INDEX_FEATURES.items()]
        )
        out.mkdir(parents=True, exist_ok=True)
        (out / DATA_FILE).parent.mkdir(parents=True)
        episodes, columns, start = [], {k: [] for k in features if k != "observation.image"}, 0
        images: list[np.ndarray] = []
        with pq.ParquetWriter(out / DATA_FILE, schema, compression="snappy") as writer:
            for index, name in enumerate(names):
                group = file["data"][name]
                frames = group["obs"][image_key][:]
                length = len(frames)
                step = {
                    "action": group["actions"][:].astype(np.float32),
                    "next.reward": group["rewards"][:].astype(np.float32),
                    "next.done": group["dones"][:].astype(bool),
                    "timestamp": (np.arange(length) / fps).astype(np.float32),
                    "frame_index": np.arange(length, dtype=np.int64),
                    "episode_index": np.full(length, index, np.int64),
                    "index": np.arange(start, start + length, dtype=np.int64),
                    "task_index": np.zeros(length, np.int64),
                }
                if state_keys:
                    step["observation.state"] = np.concatenate(
                        [group["obs"][k][:].astype(np.float32) for k in state_keys], axis=1
                    )
                pngs = [{"bytes": _png(f), "path": f"frame-{start + t:06d}.png"} for t, f in enumerate(frames)]
                arrays = [pa.array(pngs, type=IMAGE_TYPE)]
                for field in schema.names[1:]:
                    value = step[field]
                    arrays.append(
                        pa.FixedSizeListArray.from_arrays(pa.array(value.reshape(-1)), value.shape[1])
                        if value.ndim == 2
                        else pa.array(value)
                    )
                writer.write_table(pa.Table.from_arrays(arrays, schema=schema))  # one row group per rollout
                for key, value in step.items():
                    columns[key].append(value)
                # Image statistics from a few frames per rollout, as LeRobot samples them: every pixel of every
                # frame would not fit in memory for a large search.
                images.append(frames[np.unique(np.linspace(0, length - 1, IMAGE_STATS_FRAMES).astype(int))])
                episodes.append(_episode_row(group, name, index, start, length, task.instruction))
                start += length
    pq.write_table(pa.Table.from_pylist(episodes), _parent(out / EPISODES_FILE))
    pq.write_table(_tasks_table(task.instruction), out / "meta" / "tasks.parquet")
    stats = {"observation.image": _image_stats(np.concatenate(images))}
    stats.update({k: _stats(np.concatenate(v).astype(np.float64)) for k, v in columns.items()})
    (out / "meta" / "stats.json").write_text(json.dumps(stats))
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": "panda",
        "total_episodes": len(episodes),
        "total_frames": start,
        "total_tasks": 1,
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": int(fps),
        "splits": {"train": f"0:{len(episodes)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": None,
        "features": features,
    }
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=2))  # last: the dataset is complete
    return info


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def main(argv: list[str] | None = None) -> None:
    config = parse_config(LeRobotExportConfig, argv)
    if not config.data or not config.out:
        raise SystemExit("error: give data=<file.hdf5> and out=<new folder>")
    try:
        info = export(config.data, config.out, config.fps)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(
        f"wrote {shown_path(config.out)}: {info['total_episodes']} episodes, {info['total_frames']} frames at "
        f"{info['fps']} fps (LeRobot format {CODEBASE_VERSION}); read it with "
        f"LeRobotDataset('local/{Path(config.out).name}', root='{config.out}')"
    )


if __name__ == "__main__":
    main()
