"""Perturbation families and each task's named perturbation set.

from envs.perturbations import task_perturbations, get_perturbations
get_perturbations("lift", ["cube_color_red", "light_dim"])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from envs.choices import did_you_mean

# Importing the family modules registers them in FAMILIES.
from envs.perturbations import appearance, dynamics, events, geometry, noise, placement  # noqa: F401
from envs.perturbations.base import COLORS, FAMILIES, Perturbation, get_family, register_family
from envs.perturbations.catalog import default_perturbations
from envs.tasks import TaskSpec, get_task

__all__ = [
    "COLORS",
    "FAMILIES",
    "Perturbation",
    "get_family",
    "register_family",
    "task_perturbations",
    "get_perturbations",
    "resolve",
    "validate_composition",
]


def task_perturbations(task: str | TaskSpec) -> dict[str, Perturbation]:
    """The task's perturbations by name, in catalogue order."""
    return {p.name: p for p in default_perturbations(get_task(task))}


def get_perturbations(task: str | TaskSpec, names: str | Iterable[str]) -> list[Perturbation]:
    """Looks perturbations up by name ("a,b" or a list); unknown names list the valid ones."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    available = task_perturbations(task)
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
