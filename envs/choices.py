"""Names chosen from a fixed set (registries, config options): one check and one error wording everywhere, with the
nearest valid name suggested for a near miss, as Gymnasium's registry does."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


def did_you_mean(value: object, valid: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the valid name nearest a near miss, else ``."""
    close = difflib.get_close_matches(value, list(valid), n=1, cutoff=0.6) if isinstance(value, str) else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_choice(what: str, value: object, valid: Iterable[str]) -> ValueError:
    """The error for `value` not among `valid`: `unknown <what> 'x'; valid: a, b (did you mean 'a'?)`."""
    valid = list(valid)
    return ValueError(f"unknown {what} {value!r}; valid: {', '.join(valid)}{did_you_mean(value, valid)}")


def check_choice(value: str, valid: Iterable[str], what: str) -> str:
    """`value` when it is one of `valid`, else `unknown_choice`'s ValueError."""
    valid = list(valid)
    if value not in valid:
        raise unknown_choice(what, value, valid)
    return value


class Registry(Mapping[str, T], Generic[T]):
    """Name → entry (a factory, a class, a config), filled by `register`; looking up an unknown name raises
    `unknown_choice`'s ValueError, not a KeyError."""

    def __init__(self, what: str, entries: Mapping[str, T] | None = None):
        self.what = what
        self._entries: dict[str, T] = dict(entries or {})

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name")` adds the decorated object under `name`."""

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.what} {name!r} is already registered")
            self._entries[name] = entry
            return entry

        return add

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            raise unknown_choice(self.what, name, self._entries)
        return self._entries[name]

    def __contains__(self, name: object) -> bool:  # Mapping's own would call __getitem__ and see the ValueError
        return name in self._entries

    def get(self, name: str, default: T | None = None) -> T | None:
        return self._entries.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
