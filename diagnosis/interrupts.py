"""Ctrl-C during a search: the first press finishes the rollouts in flight and stops; a second stops at once.

Stopping between steps leaves nothing half done: every finished rollout is written, no worker is waiting on a
result nobody will read, and the summary and report of what was found so far are still written.
"""

from __future__ import annotations

import signal
from types import FrameType, TracebackType

from rich.console import Console


class GracefulStop:
    """While active, SIGINT sets `requested` (the search checks it after every step); a second SIGINT raises
    KeyboardInterrupt as usual."""

    def __init__(self, console: Console):
        self.console = console
        self.requested = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.console.print("[yellow]stopping after the rollouts in flight (Ctrl-C again to stop at once)[/]")

    def __enter__(self) -> GracefulStop:
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        signal.signal(signal.SIGINT, self.previous)
