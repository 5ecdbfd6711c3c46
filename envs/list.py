"""`python -m envs.list task=lift`: the task's perturbations as a table."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from envs.cli import parse_config
from envs.perturbations import task_perturbations


@dataclass
class ListConfig:
    task: str = "lift"
    """Task whose perturbations to list."""


def main(argv: list[str] | None = None) -> None:
    config = parse_config(ListConfig, argv)
    try:
        perturbations = task_perturbations(config.task)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    table = Table(title=f"perturbations of task {config.task!r}")
    for column in ("name", "family", "timing", "description"):
        table.add_column(column)
    for p in perturbations.values():
        table.add_row(p.name, p.family, p.timing, p.description)
    console = Console(width=140)
    console.print(table)
    console.print(f"{len(perturbations)} perturbations")


if __name__ == "__main__":
    main()
