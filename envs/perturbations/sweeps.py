"""Sweeps: points along one parameter of a family, where a policy's failure boundary is found.

Each sweep starts from the task's catalogue perturbation of that family (so target and timing are the catalogue's)
and replaces one parameter by each value; values equal to the nominal scene's (a mass scale of 1, a zero offset)
are left out: they change nothing and would be refused. Every value lies inside the family's declared bounds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

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
    nominal: float = 0.0
    """The parameter's value in the nominal scene (a vector parameter's first component)."""
    log: bool = False
    """Whether the parameter acts on a log scale (scales, noise levels): grids between points are geometric."""

    def scalar(self, value: object) -> float:
        """The number a point varies: the value, or a vector value's first component."""
        return float(value[0]) if isinstance(value, tuple) else float(value)

    def point(self, scalar: float) -> object:
        """The parameter value of a scalar (a vector parameter moves along its first component)."""
        if isinstance(self.values[0], tuple):
            return (scalar,) + (0.0,) * (len(self.values[0]) - 1)
        return scalar


def _along_x(values: tuple[float, ...], length: int) -> tuple[tuple[float, ...], ...]:
    return tuple((v,) + (0.0,) * (length - 1) for v in values)


SWEEPS = (
    Sweep("object_mass", "scale", (0.25, 0.5, 2.0, 4.0, 8.0, 16.0, 32.0), "object mass ×", nominal=1.0, log=True),
    Sweep("friction", "scale", (0.05, 0.1, 0.2, 0.5, 2.0, 4.0, 8.0), "object friction ×", nominal=1.0, log=True),
    Sweep(
        "light_intensity", "scale", (0.05, 0.1, 0.25, 0.5, 0.75, 1.5, 2.5), "light intensity ×", nominal=1.0, log=True
    ),
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
    Sweep("action_noise", "std", (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6), "action noise std", log=True),
    Sweep(
        "obs_noise", "image_std", (2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 120.0), "camera noise std (grey levels)", log=True
    ),
)
"""The sweeps the ground truth runs: seven points each, spread on a log or symmetric scale."""


def _value_name(value: object) -> str:
    if isinstance(value, tuple):
        return "x".join(f"{v:g}" for v in value)
    return f"{value:g}"


def get_sweep(family: str) -> Sweep:
    for sweep in SWEEPS:
        if sweep.family == family:
            return sweep
    raise ValueError(f"no sweep for family {family!r}; valid: {', '.join(s.family for s in SWEEPS)}")


def _make_point(sweep: Sweep, base: Perturbation, value: object, spec: TaskSpec) -> Perturbation:
    point = dataclasses.replace(
        base,
        name=f"{sweep.family}_{sweep.field}_{_value_name(value)}",
        description=f"{sweep.label} {_value_name(value)}",
        **{sweep.field: value},
    )
    point.check_task(spec)
    return point


SIDES = ("above", "below")


@dataclass(frozen=True)
class BoundaryGrid:
    """Points along one side of a sweep's parameter, from the point nearest the nominal scene to the farthest: where
    a boundary search looks for the value at which success falls below one half."""

    sweep: Sweep
    side: str
    scalars: tuple[float, ...]
    positions: tuple[float, ...]
    """Each point's place between the nearest (0) and the farthest (1), on the sweep's scale (log or linear)."""
    perturbations: tuple[Perturbation, ...]

    def scalar_at(self, position: float) -> float:
        near, far = self.scalars[0], self.scalars[-1]
        if self.sweep.log:
            return float(near * (far / near) ** position)
        return float(near + (far - near) * position)


def boundary_grid(
    task: str | TaskSpec, catalogue: dict[str, Perturbation], family: str, side: str | None = None, points: int = 13
) -> BoundaryGrid:
    """`points` evenly spaced values (on the sweep's scale) between the sweep's nearest and farthest points on one
    side of the nominal value, with the sweep's own points on that side among them (so a ground-truth sweep is
    compared point for point). `side` defaults to the side of the task's catalogue perturbation of the family."""
    spec = get_task(task)
    sweep = get_sweep(family)
    base = next((p for p in catalogue.values() if p.family == family), None)
    if base is None:
        raise ValueError(f"task {spec.name} has no {family} perturbation to sweep")
    if side is None:
        side = "above" if sweep.scalar(getattr(base, sweep.field)) > sweep.nominal else "below"
    if side not in SIDES:
        raise ValueError(f"boundary side must be one of {', '.join(SIDES)}, got {side!r}")
    own = sorted(
        (sweep.scalar(v) for v in sweep.values if (sweep.scalar(v) > sweep.nominal) == (side == "above")),
        key=lambda x: abs(x - sweep.nominal),
    )
    if len(own) < 2:
        raise ValueError(f"the {family} sweep has fewer than two points {side} its nominal value {sweep.nominal:g}")
    if points < 3:
        raise ValueError(f"a boundary grid needs at least 3 points, got {points}")
    near, far = own[0], own[-1]

    def position(x: float) -> float:
        if sweep.log:
            return float(np.log(x / near) / np.log(far / near))
        return float((x - near) / (far - near))

    grid = np.linspace(0.0, 1.0, points)
    spaced = [near * (far / near) ** t if sweep.log else near + (far - near) * t for t in grid]
    # The sweep's own points replace the grid points nearest them, so that names (and ground truth) coincide.
    for x in own:
        spaced[int(np.argmin(np.abs(grid - position(x))))] = x
    scalars = sorted({float(f"{x:.3g}") for x in spaced}, key=lambda x: abs(x - sweep.nominal))
    return BoundaryGrid(
        sweep=sweep,
        side=side,
        scalars=tuple(scalars),
        positions=tuple(position(x) for x in scalars),
        perturbations=tuple(_make_point(sweep, base, sweep.point(x), spec) for x in scalars),
    )


def sweep_points(task: str | TaskSpec, catalogue: dict[str, Perturbation]) -> list[tuple[Sweep, object, Perturbation]]:
    """(sweep, value, perturbation) for every point of every sweep whose family the task's catalogue has."""
    spec = get_task(task)
    points = []
    for sweep in SWEEPS:
        base = next((p for p in catalogue.values() if p.family == sweep.family), None)
        if base is None:
            continue
        for value in sweep.values:
            points.append((sweep, value, _make_point(sweep, base, value, spec)))
    return points
