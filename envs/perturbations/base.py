"""The perturbation interface and the family registry.

A perturbation is a frozen description (name, language description, family, timing, parameters) plus hooks that
act on a live `Scene`. Parameters are validated when the perturbation is built, before any sim is touched.
Model edits need no undo: `Scene.restore()` copies every perturbable array back before each episode.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from envs.choices import Registry

if TYPE_CHECKING:
    from envs.scene import Scene
    from envs.tasks import TaskSpec

FAMILIES: Registry[type[Perturbation]] = Registry("perturbation family")

COLORS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.8, 0.1, 0.1, 1.0),
    "green": (0.1, 0.7, 0.1, 1.0),
    "blue": (0.1, 0.2, 0.8, 1.0),
    "gray": (0.5, 0.5, 0.5, 1.0),
    "cyan": (0.1, 0.8, 0.8, 1.0),
    "yellow": (0.9, 0.8, 0.1, 1.0),
    "black": (0.05, 0.05, 0.05, 1.0),
    "white": (0.95, 0.95, 0.95, 1.0),
    "purple": (0.5, 0.1, 0.6, 1.0),
    "orange": (0.9, 0.5, 0.1, 1.0),
}


def register_family(cls: type[Perturbation]) -> type[Perturbation]:
    """Class decorator: adds a perturbation family to FAMILIES under `cls.family`."""
    return FAMILIES.register(cls.family)(cls)


def get_family(name: str) -> type[Perturbation]:
    return FAMILIES[name]


def _numbers(what: str, values: Iterable[float]) -> np.ndarray:
    """`values` as floats; anything that is not a plain number (text, None, a bool, a nested list) is a ValueError
    naming the parameter. Integers past float's range become ±inf, so the range check reports them."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{what} must be a list of numbers, got {values!r}")
    values = list(values)
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"{what} must be numbers, got {tuple(values)!r}")
        try:
            out.append(float(v))
        except OverflowError:
            out.append(math.inf if v > 0 else -math.inf)
    return np.asarray(out, dtype=float)


def check_range(what: str, values: Iterable[float], low: float, high: float, *, positive: bool = False) -> None:
    """ValueError naming the parameter when a value is not a number in [low, high] (or (0, high] when `positive`)."""
    values = _numbers(what, values)
    bad = ~np.isfinite(values) | (values < low) | (values > high) | (positive & (values <= 0))
    if bad.any():
        bound = f"in (0, {high}]" if positive else f"in [{low}, {high}]"
        raise ValueError(f"{what} must be {bound}, got {tuple(values.tolist())}")


def check_int(what: str, value: object, low: int, high: int | None = None) -> None:
    """ValueError naming the parameter unless `value` is an integer (not a bool) in [low, high]."""
    bound = f">= {low}" if high is None else f"in [{low}, {high}]"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be an integer {bound}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{what} must be an integer {bound}, got {value}")


def check_length(what: str, values: Sequence[float], n: int) -> None:
    """ValueError naming the parameter unless `values` is a sequence (tuple, list, array) of `n` values."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise ValueError(f"{what} needs {n} values (a tuple or list), got {values!r}")
    if len(values) != n:
        raise ValueError(f"{what} needs {n} values, got {len(values)}")


@dataclass(frozen=True)
class Bounds:
    """Where a family parameter may lie: `length` numbers (None: one number) in [low, high] ((0, high] when
    `positive`), or an integer in [low, high] when `integer`."""

    low: float
    high: float
    length: int | None = None
    positive: bool = False
    integer: bool = False

    def check(self, name: str, value: object) -> None:
        """ValueError naming the parameter and the bound when `value` lies outside."""
        if self.integer:
            check_int(name, value, int(self.low), int(self.high))
        elif self.length is None:
            check_range(name, [value], self.low, self.high, positive=self.positive)
        else:
            check_length(name, value, self.length)
            check_range(name, value, self.low, self.high, positive=self.positive)

    def describe(self) -> str:
        if self.integer:
            return f"integer in [{self.low:g}, {self.high:g}]"
        interval = f"(0, {self.high:g}]" if self.positive else f"[{self.low:g}, {self.high:g}]"
        return interval if self.length is None else f"{self.length} × {interval}"


def param(
    default: Any = dataclasses.MISSING,
    *,
    low: float,
    high: float,
    length: int | None = None,
    positive: bool = False,
    integer: bool = False,
) -> Any:
    """A family parameter with its bounds (checked when a perturbation is built; `envs.list families=true` shows
    them). A parameter whose default is None may be left None: "not set"."""
    bounds = Bounds(low, high, length, positive, integer)
    return field(default=default, metadata={"bounds": bounds})


def parameter_space(family: type[Perturbation]) -> dict[str, Bounds]:
    """The family's bounded parameters: the space its perturbations are points of."""
    return {f.name: f.metadata["bounds"] for f in dataclasses.fields(family) if "bounds" in f.metadata}


@dataclass(frozen=True, kw_only=True)
class Perturbation:
    """Base class of every family. Subclasses add their parameters as fields and override the hooks they need."""

    family: ClassVar[str]
    timing_kinds: ClassVar[frozenset[str]] = frozenset({"reset", "step"})
    """When this family may fire: at reset, at a control step (a mid-episode event), or both."""

    name: str
    description: str
    at_step: int | None = None
    """None: applied right after reset. An int: fired once, before the action of that control step."""
    target: int = field(default=0)
    """Which of the task's objects an object perturbation acts on (0 = the primary object)."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a perturbation's name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.description, str):
            raise ValueError(f"perturbation {self.name!r}: description must be a string, got {self.description!r}")
        if self.at_step is not None:
            check_int(f"perturbation {self.name!r}: at_step", self.at_step, 0)
        check_int(f"perturbation {self.name!r}: target", self.target, 0)
        kind = self.timing_kind
        if kind not in self.timing_kinds:
            raise ValueError(
                f"perturbation {self.name!r} of family {self.family!r} cannot fire at {kind}; "
                f"allowed: {', '.join(sorted(self.timing_kinds))}"
            )
        for f in dataclasses.fields(self):
            if "bounds" in f.metadata and not (getattr(self, f.name) is None and f.default is None):
                f.metadata["bounds"].check(f.name, getattr(self, f.name))
        self.check_params()

    @property
    def timing_kind(self) -> str:
        return "reset" if self.at_step is None else "step"

    @property
    def timing(self) -> str:
        return "reset" if self.at_step is None else f"step {self.at_step}"

    def check_params(self) -> None:
        """Raises ValueError for what the declared bounds (`param`) cannot say, e.g. a non-zero direction."""

    def check_task(self, task: TaskSpec) -> None:
        """Raises ValueError when this perturbation cannot act on the task."""
        if self.at_step is not None and self.at_step >= task.horizon:
            raise ValueError(
                f"perturbation {self.name!r} fires at step {self.at_step}, beyond task {task.name!r}'s horizon "
                f"{task.horizon}"
            )
        if self.target >= len(task.objects):
            raise ValueError(f"perturbation {self.name!r} targets object {self.target}; task has {len(task.objects)}")

    def params(self) -> dict[str, Any]:
        """The family parameters (for summaries and datasets)."""
        skip = {"name", "description", "at_step"}
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    # ----------------------------------------------------------------------------------------------- hooks
    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        """Edits the live model/state once (at reset or at `at_step`)."""

    def act(self, action: np.ndarray, t: int, rng: np.random.Generator) -> np.ndarray:
        """Filters the policy's action at every step (noise, forced gripper)."""
        return action

    def observe(self, obs: dict[str, np.ndarray], t: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Filters what the policy sees at every step."""
        return obs

    def during(self, scene: Scene, t: int, rng: np.random.Generator) -> Perturbation | None:
        """Edits the live scene before the frame of every step t (a shaking camera, flickering lights, a moving
        object): edits are made relative to `scene.episode_start_values`, so they never accumulate. An event
        triggered by the scene's state (envs/perturbations/triggered.py) returns the step event it turns into,
        which then takes its place; everything else returns None."""
        return None

    @property
    def acts_during(self) -> bool:
        """Whether this perturbation edits the scene at every step (its family overrides `during`)."""
        return type(self).during is not Perturbation.during
