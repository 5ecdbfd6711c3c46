"""User-defined perturbations: a YAML file of entries, each a point in one family's parameter space.

    - name: cube_color_teal
      family: object_color
      description: the cube is teal
      rgba: [0.0, 0.5, 0.5, 1.0]
    - name: late_shove
      family: object_nudge
      description: the cube is shoved sideways halfway through
      at_step: 40
      velocity: [0.0, 0.6, 0.0]

The file is a list of entries (or a mapping with a `perturbations` list). Every key of an entry is a field of its
family (`name`, `description`, optional `at_step` and `target`, then the family's parameters; `python -m envs.list
task=<task> families=true` lists them); each entry is built and validated by its family, so the bounds and the
messages are the catalogue's. Every error names the file, the entry and the field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from envs.choices import did_you_mean
from envs.perturbations.base import FAMILIES, Perturbation


def family_fields(family: str) -> list[str]:
    """The keys an entry of `family` may have (besides `family`)."""
    return [f.name for f in dataclasses.fields(FAMILIES[family]) if f.init]


def perturbation_from_dict(entry: Mapping[str, Any], where: str = "perturbation") -> Perturbation:
    """One perturbation from its definition (`to_dict`'s inverse); ValueError prefixed with `where`."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: an entry must be a mapping of fields, got {entry!r}")
    entry = dict(entry)
    family = entry.pop("family", None)
    if family is None:
        raise ValueError(f"{where}: no 'family'; valid families: {', '.join(FAMILIES)}")
    if family not in FAMILIES:
        raise ValueError(
            f"{where}: unknown family {family!r}; valid families: {', '.join(FAMILIES)}{did_you_mean(family, FAMILIES)}"
        )
    cls, valid = FAMILIES[family], family_fields(family)
    unknown = [k for k in entry if k not in valid]
    if unknown:
        raise ValueError(
            f"{where}: family {family} has no field {unknown[0]!r}{did_you_mean(unknown[0], valid)}; "
            f"its fields: {', '.join(valid)}"
        )
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init
        and f.name not in entry
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{where}: family {family} needs {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    values = {key: _as_field_type(hints.get(key), value) for key, value in entry.items()}
    if "parts" in values:  # a composed perturbation: its parts are definitions too
        if not isinstance(entry["parts"], list):
            raise ValueError(f"{where}: parts must be a list of perturbation definitions")
        values["parts"] = tuple(
            perturbation_from_dict(part, f"{where}, part {i + 1}") for i, part in enumerate(entry["parts"])
        )
    try:
        return cls(**values)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _as_field_type(hint: Any, value: Any) -> Any:
    """YAML gives lists where the dataclass wants tuples (frozen, hashable perturbations)."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if isinstance(value, list) and any(typing.get_origin(option) is tuple for option in options):
        return tuple(value)
    return value


def to_dict(perturbation: Perturbation) -> dict[str, Any]:
    """The perturbation's definition: what a user file holds, JSON-ready (stored with the rollouts it was used in)."""
    out: dict[str, Any] = {"name": perturbation.name, "family": perturbation.family}
    for f in dataclasses.fields(perturbation):
        if f.init and f.name != "name":
            value = getattr(perturbation, f.name)
            if f.name == "parts":  # a composed perturbation's parts
                value = [to_dict(part) for part in value]
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def load_perturbation_file(path: str | Path) -> list[Perturbation]:
    """The perturbations a YAML file defines (see the module docstring); errors name the file, entry and field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"perturbation file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if isinstance(data, Mapping) and "perturbations" in data:
        data = data["perturbations"]
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a list of perturbation entries (or a 'perturbations' list), got {data!r}")
    items, names = [], set()
    for i, entry in enumerate(data):
        label = entry.get("name") if isinstance(entry, Mapping) else None
        where = f"{path}: entry {i}" + (f" ({label})" if label else "")
        perturbation = perturbation_from_dict(entry, where)
        if perturbation.name in names:
            raise ValueError(f"{where}: the name {perturbation.name!r} is defined twice in the file")
        names.add(perturbation.name)
        items.append(perturbation)
    return items
