"""Sweeps: points along one parameter of a family, where a policy's failure boundary is found.

Each sweep starts from the task's catalogue perturbation of that family (so target and timing are the catalogue's)
and replaces one parameter by each value; values equal to the nominal scene's (a mass scale of 1, a zero offset)
are left out: they change nothing and would be refused. Every value lies inside the family's declared bounds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from envs.perturbations.base import Perturbation
from envs.tasks import TaskSpec, get_task


@dataclass(frozen=True)
class Sweep:
    family: str
    field: str
    values: tuple
    """Points of the parameter (scalars, or whole tuples for vector parameters)."""
    label: str
    """What the parameter means, for descriptions: `{label} {value}`."""


def _along_x(values: tuple[float, ...], length: int) -> tuple[tuple[float, ...], ...]:
    return tuple((v,) + (0.0,) * (length - 1) for v in values)


SWEEPS = (
    Sweep("object_mass", "scale", (0.25, 0.5, 2.0, 4.0, 8.0, 16.0, 32.0), "object mass ×"),
    Sweep("friction", "scale", (0.05, 0.1, 0.2, 0.5, 2.0, 4.0, 8.0), "object friction ×"),
    Sweep("light_intensity", "scale", (0.05, 0.1, 0.25, 0.5, 0.75, 1.5, 2.5), "light intensity ×"),
    Sweep(
        "camera_pose",
        "offset",
        _along_x((-0.15, -0.1, -0.05, -0.02, 0.02, 0.05, 0.1), 3),
        "camera moved along x by (m)",
    ),
    Sweep(
        "init_offset",
        "offset",
        _along_x((-0.15, -0.1, -0.05, -0.02, 0.02, 0.05, 0.1), 2),
        "object placed off along x by (m)",
    ),
    Sweep("action_noise", "std", (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6), "action noise std"),
    Sweep("obs_noise", "image_std", (2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 120.0), "camera noise std (grey levels)"),
)
"""The sweeps the ground truth runs: seven points each, spread on a log or symmetric scale."""


def _value_name(value: object) -> str:
    if isinstance(value, tuple):
        return "x".join(f"{v:g}" for v in value)
    return f"{value:g}"


def sweep_points(task: str | TaskSpec, catalogue: dict[str, Perturbation]) -> list[tuple[Sweep, object, Perturbation]]:
    """(sweep, value, perturbation) for every point of every sweep whose family the task's catalogue has."""
    spec = get_task(task)
    points = []
    for sweep in SWEEPS:
        base = next((p for p in catalogue.values() if p.family == sweep.family), None)
        if base is None:
            continue
        for value in sweep.values:
            point = dataclasses.replace(
                base,
                name=f"{sweep.family}_{sweep.field}_{_value_name(value)}",
                description=f"{sweep.label} {_value_name(value)}",
                **{sweep.field: value},
            )
            point.check_task(spec)
            points.append((sweep, value, point))
    return points
