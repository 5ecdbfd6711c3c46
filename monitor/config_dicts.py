"""Monitor configs to and from JSON-ready dicts, so fitted monitors save their settings without pickle.

`dataclasses.asdict` writes a config; `config_from_dict` rebuilds it, nested configs (an EncoderConfig inside a
PadimConfig, ...) and tuples (JSON has only lists) included, from the dataclass's own type hints.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """The dataclass `cls` from `asdict`-style data; unknown keys are an error naming the valid ones."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; valid: {', '.join(sorted(names))}")
    return cls(**{key: _value(hints[key], value) for key, value in data.items()})


def _value(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        if dataclasses.is_dataclass(option) and isinstance(value, dict):
            return config_from_dict(option, value)
        if typing.get_origin(option) is tuple and isinstance(value, list):
            return tuple(value)
    return value
