"""`key=value` command lines for the small entry points, parsed into a typed dataclass config.

Hydra's override syntax without Hydra's run directories: OmegaConf checks keys and types, and an unknown key is
reported with the valid ones.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

C = TypeVar("C")


def parse_config(config_cls: type[C], argv: Sequence[str] | None = None) -> C:
    """Builds `config_cls` from `key=value` arguments; exits with a clear message on bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    if any(a in ("-h", "--help") for a in argv):
        print(usage(config_cls))
        raise SystemExit(0)
    malformed = [a for a in argv if "=" not in a]
    unknown = [a.split("=", 1)[0] for a in argv if "=" in a and a.split("=", 1)[0] not in fields]
    if malformed or unknown:
        bad = ", ".join(a if a.isprintable() else repr(a) for a in malformed + unknown)
        raise SystemExit(f"error: bad argument(s) {bad}; expected key=value with keys: {', '.join(fields)}")
    merged = OmegaConf.structured(config_cls)
    for argument in argv:  # one at a time, so an error can name the argument it comes from
        key, value = argument.split("=", 1)
        if value.strip() == "???":  # OmegaConf's "missing": merged, it would silently keep the default
            raise SystemExit(f"error: {key}=??? gives no value; {key} takes {_type_name(fields[key])}")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([argument]))
        except (OmegaConfBaseException, yaml.YAMLError) as exc:
            raise SystemExit(
                f"error: bad value in {argument!r} ({_first_line(exc)}); {key} takes {_type_name(fields[key])}"
            ) from None
    try:
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:  # interpolations (${...}) and missing values (???) resolve here
        where = getattr(exc, "full_key", None)
        raise SystemExit(f"error: {where + ': ' if where else ''}{_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    problem = getattr(exc, "problem", None)  # YAML's own words for what it could not read
    if isinstance(problem, str) and problem.strip():
        return problem.strip()
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _type_name(field: dataclasses.Field) -> str:
    """A field's type as written (`int`, `str | None`), for messages."""
    return field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))


def usage(config_cls: type) -> str:
    lines = [f"usage: python -m {sys.modules['__main__'].__spec__.name if sys.modules['__main__'].__spec__ else ''} key=value ..."]
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else "(required)"
        lines.append(f"  {f.name}={default}")
    return "\n".join(lines)


def shown_path(path: str | Path) -> Path:
    """`path` as a CLI prints it: relative to the working directory when inside it, else as given."""
    path = Path(path)
    return path.relative_to(Path.cwd()) if path.is_absolute() and path.is_relative_to(Path.cwd()) else path
