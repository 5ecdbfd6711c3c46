"""`key=value` command lines for the small entry points, parsed into a typed dataclass config.

Hydra's override syntax without Hydra's run directories: OmegaConf checks keys and types, and an unknown key is
reported with the valid ones.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import shlex
import sys
import textwrap
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
    unknown = [a.split("=", 1)[0] for a in argv if "=" in a and _field_of(a.split("=", 1)[0], config_cls) is None]
    if malformed or unknown:
        bad = ", ".join(a if a.isprintable() else repr(a) for a in malformed + unknown)
        raise SystemExit(f"error: bad argument(s) {bad}; expected key=value with keys: {', '.join(fields)}")
    merged = OmegaConf.structured(config_cls)
    for argument in argv:  # one at a time, so an error can name the argument it comes from
        key, value = argument.split("=", 1)
        field = _field_of(key, config_cls)
        if value.strip() == "???":  # OmegaConf's "missing": merged, it would silently keep the default
            raise SystemExit(f"error: {key}=??? gives no value; {key} takes {_type_name(field)}")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([argument]))
        except (OmegaConfBaseException, yaml.YAMLError) as exc:
            raise SystemExit(
                f"error: bad value in {argument!r} ({_first_line(exc)}); {key} takes {_type_name(field)}"
            ) from None
    try:
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:  # interpolations (${...}) and missing values (???) resolve here
        where = getattr(exc, "full_key", None)
        raise SystemExit(f"error: {where + ': ' if where else ''}{_first_line(exc)}") from None
    except ValueError as exc:  # a config's own checks (__post_init__) on the values given
        raise SystemExit(f"error: {exc}") from None


def _field_of(key: str, config_cls: type) -> dataclasses.Field | None:
    """The field a (dotted) key names: `ray.address` is field `address` of the dataclass in field `ray`."""
    head, _, rest = key.partition(".")
    field = {f.name: f for f in dataclasses.fields(config_cls)}.get(head)
    if field is None or not rest:
        return field
    nested = field.default_factory if field.default_factory is not dataclasses.MISSING else None
    return _field_of(rest, nested) if isinstance(nested, type) and dataclasses.is_dataclass(nested) else None


def _first_line(exc: BaseException) -> str:
    problem = getattr(exc, "problem", None)  # YAML's own words for what it could not read
    if isinstance(problem, str) and problem.strip():
        return problem.strip()
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _type_name(field: dataclasses.Field) -> str:
    """A field's type as written (`int`, `str | None`), for messages."""
    return field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))


def field_docs(config_cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal under it in the class body, as the configs here write them),
    read from the source: Python keeps no attribute docstrings at run time."""
    docs = {}
    for base in reversed(config_cls.__mro__[1:]):  # inherited fields (shared settings) keep their docs
        if dataclasses.is_dataclass(base):
            docs.update(field_docs(base))
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(config_cls)))
    except (OSError, TypeError, SyntaxError):  # no source (a frozen or dynamic class): no docs, still usable
        return docs
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, following in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                if isinstance(following.value.value, str):
                    docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def usage(config_cls: type) -> str:
    """`--help`: the command, then each key with its default and what it does (a nested dataclass's keys dotted)."""
    spec = sys.modules["__main__"].__spec__
    command = f"python -m {spec.name}" if spec else Path(sys.argv[0]).name
    return "\n".join([f"usage: {command} key=value ...", "", *_key_lines(config_cls, "")])


def _key_lines(config_cls: type, prefix: str) -> list[str]:
    lines = []
    docs = field_docs(config_cls)
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        if dataclasses.is_dataclass(default):
            lines += _key_lines(type(default), f"{prefix}{f.name}.")
            continue
        lines.append(f"  {prefix}{f.name}={default}")
        if f.name in docs:
            lines += [f"      {line}" for line in textwrap.wrap(docs[f.name], 100)]
    return lines


def shown_path(path: str | Path) -> Path:
    """`path` as a CLI prints it: relative to the working directory when inside it, else as given."""
    path = Path(path)
    return path.relative_to(Path.cwd()) if path.is_absolute() and path.is_relative_to(Path.cwd()) else path


def command_line(module: str, config: object) -> str:
    """The command that rebuilds `config` with parse_config: `python -m module` and each key that differs from
    its default (nested dataclasses as dotted keys), quoted for a shell."""
    defaults = type(config)()
    changed = []

    def walk(value: object, default: object, prefix: str) -> None:
        for field in dataclasses.fields(value):
            mine, theirs = getattr(value, field.name), getattr(default, field.name)
            if dataclasses.is_dataclass(mine):
                walk(mine, theirs, f"{prefix}{field.name}.")
            elif mine != theirs:
                shown = f"[{','.join(map(str, mine))}]" if isinstance(mine, (list, tuple)) else str(mine)
                changed.append(shlex.quote(f"{prefix}{field.name}={shown}"))

    walk(config, defaults, "")
    return " ".join([f"python -m {module}", *changed])
