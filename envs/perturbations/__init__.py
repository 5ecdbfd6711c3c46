"""Perturbation families and each task's named perturbation set.

from envs.perturbations import task_perturbations, get_perturbations
get_perturbations("lift", ["cube_color_red", "light_dim"])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from envs.choices import did_you_mean

# Importing the family modules registers them in FAMILIES.
from envs.perturbations import (  # noqa: F401
    appearance,
    composed,
    dynamics,
    events,
    geometry,
    moving,
    noise,
    placement,
    temporal,
    triggered,
)
from envs.perturbations.base import COLORS, FAMILIES, Perturbation, get_family, register_family
from envs.perturbations.catalog import default_perturbations
from envs.perturbations.user import load_perturbation_file
from envs.tasks import TaskSpec, get_task

__all__ = [
    "NOMINAL",
    "COLORS",
    "FAMILIES",
    "Perturbation",
    "get_family",
    "register_family",
    "task_perturbations",
    "get_perturbations",
    "split_files",
    "resolve",
    "validate_composition",
]

NOMINAL = "nominal"
"""The name of the unperturbed condition wherever conditions are listed by name (ground truths, evaluations)."""


def task_perturbations(task: str | TaskSpec, files: str | Iterable[str | Path] = ()) -> dict[str, Perturbation]:
    """The task's perturbations by name, in catalogue order, then those of the user `files` (YAML, see
    envs/perturbations/user.py; comma-separated when a string), each checked against the task. A user name that
    is already taken is an error."""
    spec = get_task(task)
    available = {p.name: p for p in default_perturbations(spec)}
    for path in split_files(files):
        for p in load_perturbation_file(path):
            if p.name in available:
                raise ValueError(f"{path}: perturbation {p.name!r} is already defined (by the catalogue or a file)")
            try:
                p.check_task(spec)
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
            available[p.name] = p
    return available


def split_files(files: str | Iterable[str | Path]) -> list[Path]:
    """Perturbation files as paths ("a.yaml,b.yaml", a list, or empty)."""
    if isinstance(files, str):
        files = [f for f in files.split(",") if f.strip()]
    return [Path(str(f).strip()) for f in files]


def get_perturbations(
    task: str | TaskSpec, names: str | Iterable[str], files: str | Iterable[str | Path] = ()
) -> list[Perturbation]:
    """Looks perturbations up by name ("a,b" or a list) among the task's and the user `files`' ones; unknown names
    list the valid ones."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    available = task_perturbations(task, files)
    names = list(names)
    odd = [n for n in names if not isinstance(n, str)]
    if odd:
        raise ValueError(f"perturbation names must be strings, got {odd!r}; valid: {', '.join(available)}")
    chosen = [n.strip() for n in names]
    unknown = [n for n in chosen if n not in available]
    if unknown:
        raise ValueError(
            f"unknown perturbation(s) {', '.join(unknown)} for task {get_task(task).name!r}; "
            f"valid: {', '.join(available)}{did_you_mean(unknown[0], available)}"
        )
    return [available[n] for n in chosen]


def resolve(task: str | TaskSpec, items: Iterable[Perturbation | str]) -> list[Perturbation]:
    """Perturbation objects from a mix of objects and names (names looked up in the task's set)."""
    items = list(items)
    names = iter(get_perturbations(task, [p for p in items if isinstance(p, str)]))
    return [next(names) if isinstance(p, str) else p for p in items]


def validate_composition(task: str | TaskSpec, perturbations: Sequence[Perturbation]) -> None:
    """Checks that a set of perturbations can be applied together to a task."""
    spec = get_task(task)
    names = [p.name for p in perturbations]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"perturbation(s) given twice: {', '.join(repeated)}")
    for p in perturbations:
        p.check_task(spec)
