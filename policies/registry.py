"""Policies by name: `policy=scripted` on every CLI (shipped checkpoints and user paths join this registry)."""

from __future__ import annotations

from collections.abc import Callable

from envs.tasks import TaskSpec, get_task
from policies.base import Policy
from policies.scripted import ScriptedExpert

POLICIES: dict[str, Callable[[TaskSpec], Policy]] = {
    "scripted": ScriptedExpert,
}


def load_policy(name: str, task: str | TaskSpec) -> Policy:
    """Builds the named policy for a task; unknown names list the valid ones."""
    try:
        factory = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; valid policies: {', '.join(sorted(POLICIES))}") from None
    return factory(get_task(task))
