"""`python -m envs.list task=lift`: the task's perturbations as a table."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from envs.cli import parse_config
from envs.perturbations import FAMILIES, task_perturbations
from envs.perturbations.base import parameter_space
from envs.perturbations.triggered import Triggered
from envs.perturbations.user import family_fields


@dataclass
class ListConfig:
    task: str = "lift"
    """Task whose perturbations to list."""
    perturbation_file: str = ""
    """User-defined perturbations to list after the catalogue (YAML, envs/perturbations/user.py; comma-separated)."""
    families: bool = False
    """List the perturbation families and the fields a user-defined entry of each may set, instead."""


def summary(cls: type) -> str:
    """A family's docstring's first line (not the signature dataclasses write where there is none)."""
    doc = cls.__doc__ or ""
    return "" if doc.startswith(f"{cls.__name__}(") else doc.strip().split("\n")[0]


def list_families(console: Console) -> None:
    table = Table(title="perturbation families (fields of a user-defined entry)")
    for column in ("family", "timing", "fields", "description"):
        table.add_column(column)
    for name, cls in FAMILIES.items():
        space = parameter_space(cls)
        triggered = issubclass(cls, Triggered)  # armed at reset, fired by the scene: no at_step of its own
        fields = ", ".join(
            f"{f}: {space[f].describe()}" if f in space else f
            for f in family_fields(name)
            if f not in ("name", "description") and not (triggered and f == "at_step")
        )
        timing = "when the scene triggers it" if triggered else ", ".join(sorted(cls.timing_kinds))
        table.add_row(name, timing, fields, summary(cls))
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    config = parse_config(ListConfig, argv)
    console = Console(width=140)
    if config.families:
        list_families(console)
        return
    try:
        perturbations = task_perturbations(config.task, config.perturbation_file)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    table = Table(title=f"perturbations of task {config.task!r}")
    for column in ("name", "family", "timing", "description"):
        table.add_column(column)
    for p in perturbations.values():
        table.add_row(p.name, p.family, p.timing, p.description)
    console.print(table)
    console.print(f"{len(perturbations)} perturbations")


if __name__ == "__main__":
    main()
