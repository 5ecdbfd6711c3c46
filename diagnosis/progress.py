"""Progress of a long search: a live bar in a terminal, plain lines in a log.

A rich bar redrawn in place is what a person at a terminal wants; written to a file or a pipe (CI, `nohup`, a
cluster job) it collapses into truncated fragments. Off a terminal the search prints one line every `every`
rollouts instead: rollouts done, failures, elapsed time and the time left at the rate so far.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def clock(seconds: float) -> str:
    """h:mm:ss, as rich's columns show time."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class SearchProgress:
    """`update(done, failures, info)` after every step; use as a context manager."""

    def __init__(self, console: Console, total: int, done: int, every: int = 20):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.console, self.total, self.start_done, self.every = console, total, done, every
        self.live = console.is_terminal
        self.last_printed = done
        self.bar: Progress | None = None

    def __enter__(self) -> SearchProgress:
        self.started = time.perf_counter()
        if self.live:
            self.bar = Progress(
                TextColumn("[bold]search"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("rollouts"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console,
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("search", total=self.total, completed=self.start_done, info="")
        return self

    def update(self, done: int, failures: int, info: str = "") -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, info=f"failures {failures}" + (f" | {info}" if info else ""))
            return
        if done - self.last_printed >= self.every or (done >= self.total > self.last_printed):
            self.console.print(self.line(done, failures, time.perf_counter() - self.started), highlight=False)
            self.last_printed = done

    def line(self, done: int, failures: int, elapsed: float) -> str:
        """`search 40/400 rollouts, 31 failures, elapsed 0:01:02, ETA 0:09:18` (ETA from this session's rate)."""
        new = done - self.start_done
        eta = clock(elapsed / new * (self.total - done)) if new > 0 else "?"
        return f"search {done}/{self.total} rollouts, {failures} failures, elapsed {clock(elapsed)}, ETA {eta}"

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.bar is not None:
            self.bar.__exit__(kind, error, trace)
