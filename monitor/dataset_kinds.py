"""Which of FailScope's HDF5 files a path holds: readers check it first, so the wrong file is one sentence naming
the command that makes the right one, not a KeyError deep in h5py."""

from __future__ import annotations

from pathlib import Path

import h5py

from envs.choices import check_choice
from monitor.dataset import SPLITS

DATASET_KINDS = {
    "simfails": ("a SimFails file", "python -m monitor.dataset task={task} policy={policy}"),
    "search": (
        "a search's failure dataset (failures.hdf5)",
        "python -m diagnosis.search task={task} policy.name={policy}",
    ),
    "demos": ("a demonstration file", "python -m policies.collect task={task}"),
}
"""FailScope's HDF5 files: what each is called and the command that makes one."""


def dataset_kind(path: str | Path) -> str:
    """Which of FailScope's HDF5 files `path` is, from its layout: `search` (data attrs candidates), `simfails`
    (data attrs late_step or fit_rejected_seeds, or mask/fit), `demos` (mask/train); failing those, by demo_0's
    attributes (search_step: search, split: simfails); else `unknown`. Not HDF5 → ValueError."""
    try:
        file = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path} is not a readable HDF5 file ({str(exc).splitlines()[0]})") from None
    with file:
        data = file.get("data")
        if not isinstance(data, h5py.Group):
            return "unknown"
        mask = file.get("mask")
        masks = set(mask) if isinstance(mask, h5py.Group) else set()
        if "candidates" in data.attrs:
            return "search"
        if "late_step" in data.attrs or "fit_rejected_seeds" in data.attrs or "fit" in masks:
            return "simfails"
        if "train" in masks:
            return "demos"
        first = data.get("demo_0")  # older or hand-made files: tell by a rollout's own attributes
        if isinstance(first, h5py.Group):
            if "search_step" in first.attrs:
                return "search"
            if "split" in first.attrs:
                return "simfails"
    return "unknown"


def require_dataset(path: str | Path, expected: str, task: str, policy: str = "<policy>") -> Path:
    """`path` when it is a finished dataset of kind `expected` (DATASET_KINDS); else a ValueError that says what
    it is instead and the command that makes the expected kind."""
    check_choice(expected, DATASET_KINDS, "dataset kind")
    kind = dataset_kind(path)
    what, make = DATASET_KINDS[expected]
    make = make.format(task=task, policy=policy)
    if kind != expected:
        found = DATASET_KINDS[kind][0] if kind in DATASET_KINDS else "no FailScope dataset"
        raise ValueError(f"{path} is {found}, not {what}; make one with {make}")
    if expected == "simfails":
        with h5py.File(path, "r") as file:
            missing = [s for s in SPLITS if f"mask/{s}" not in file]
        if missing:
            raise ValueError(
                f"{path} is an unfinished SimFails file (no mask/{', mask/'.join(missing)}); finish it by rerunning "
                f"{make} out={path} (it resumes)"
            )
    return Path(path)
