"""Where rollouts run: `processes` (worker processes on this machine, the default) or `ray` (actors on a Ray
cluster), behind one interface.

A rollout-hungry job (ground truth, SimFails, demonstrations) hands its work to a backend as *units*, small
picklable values such as (case, seed), and a module-level function that turns one unit into its result. Workers
build what they need (renderer, policy, monitor) inside themselves on first use, so a unit's result depends on the
unit alone, never on which worker ran it. `Backend.map` yields each unit with its result in the order the units
came, with:

- a worker that dies (killed, out of memory, crashed) restarted and its unit run again, up to `retries` times,
  after which the unit's result is a `UnitFailed` naming the loss;
- an exception raised by the unit itself returned at once as a `UnitFailed` (the same unit would raise again).

The search steps its workers in lockstep instead (SB3's VecEnv): `envs.backends.ray_vec_env` is its Ray form.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar

from envs.choices import check_choice

BACKENDS = ("processes", "ray")
DEFAULT_RETRIES = 2
"""Restarts a unit gets after the worker running it died, before it is given up as failed."""
LOOKAHEAD = 4
"""Units started per worker ahead of the oldest unfinished one (results are yielded in order; this bounds what
waits behind a slow unit)."""

_END, _RETRY = object(), object()
log = logging.getLogger(__name__)
U = TypeVar("U")
R = TypeVar("R")


@dataclass
class RayOptions:
    """`ray.*` settings of every command that takes `backend=ray`."""

    address: str = ""
    """'' starts a Ray cluster on this machine for the run; 'auto' joins the cluster `ray start --head` started
    here; host:port joins that one."""
    num_cpus: float = 1.0
    """CPUs each worker actor reserves (its torch threads follow)."""


@dataclass
class RolloutSettings:
    """The settings every rollout-hungry command shares (its config inherits them): `workers=`, `backend=`,
    `ray.address=`, `ray.num_cpus=`."""

    workers: int = 2
    """Rollout workers (one per core is best: each renders on the CPU); 0 runs them in this process."""
    backend: str = "processes"
    """Where they run: processes (this machine) or ray (a Ray cluster: pip install 'failscope[ray]')."""
    ray: RayOptions = field(default_factory=RayOptions)

    def check(self) -> None:
        """ValueError for settings that cannot run (before any work starts): an unknown backend, negative workers,
        backend=ray without Ray installed or with ray.num_cpus <= 0."""
        check_settings(self.backend, self.workers, self.ray)

    def open_backend(self) -> Backend:
        return open_backend(self.backend, workers=self.workers, ray=self.ray)


@dataclass(frozen=True)
class UnitFailed:
    """A unit that gave no result: its own exception, or a worker that died under it more than `retries` times."""

    unit: Any
    error: str
    attempts: int


class WorkerLost(ConnectionError):
    """A worker died and could not be brought back (what a dead process's pipe raises, so callers catch one kind)."""


def init_worker(threads: int = 1) -> None:
    """What every worker does first: Ctrl-C is the parent's to handle, torch gets the worker's share of threads."""
    import torch

    with contextlib.suppress(ValueError):  # not the main thread of the worker: no signal handlers to set
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(max(1, threads))


class Worker:
    """One place a unit runs at a time. `lost` are the exceptions its futures raise when it died under a unit."""

    lost: tuple[type[BaseException], ...] = ()

    def submit(self, fn: Callable[[Any], Any], unit: Any) -> Future:
        raise NotImplementedError

    def restart(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class InProcessWorker(Worker):
    """Runs units here, one after another (workers=0: debugging, tests)."""

    def submit(self, fn: Callable[[Any], Any], unit: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(unit))
        except Exception as exc:  # returned like a worker's error, not raised through the scheduler
            future.set_exception(exc)
        return future

    def restart(self) -> None:
        pass

    def close(self) -> None:
        pass


class Backend:
    """A set of workers and the scheduler that feeds them units; a context manager that closes its workers."""

    name = ""

    def __init__(self, workers: list[Worker], retries: int = DEFAULT_RETRIES):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.workers, self.retries = workers, retries

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for worker in self.workers:
            worker.close()

    def describe_error(self, exc: BaseException) -> str:
        """A unit's own exception as one line."""
        return f"{type(exc).__name__}: {exc}"

    def map(self, fn: Callable[[U], R], units: Iterable[U]) -> Iterator[tuple[U, R | UnitFailed]]:
        """Every unit with its result (or `UnitFailed`), in the order of `units`, which is read lazily: a consumer
        that stops early leaves the rest unstarted."""
        source = iter(units)
        free = list(self.workers)
        running: dict[Future, tuple[int, Any, Worker, int]] = {}
        finished: dict[int, tuple[Any, Any]] = {}
        started, next_out, exhausted = 0, 0, False
        window = LOOKAHEAD * len(self.workers)
        try:
            while True:
                while free and not exhausted and started - next_out < window:
                    unit = next(source, _END)
                    if unit is _END:
                        exhausted = True
                        break
                    worker = free.pop(0)
                    running[worker.submit(fn, unit)] = (started, unit, worker, 1)
                    started += 1
                while next_out in finished:
                    yield finished.pop(next_out)
                    next_out += 1
                if not running:
                    if exhausted:
                        return
                    continue  # the window held the next units back until these were yielded
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    index, unit, worker, attempt = running.pop(future)
                    result = self._settle(future, unit, worker, attempt)
                    if result is _RETRY:  # the worker died and was restarted: the unit runs again on it
                        running[worker.submit(fn, unit)] = (index, unit, worker, attempt + 1)
                    else:
                        finished[index] = (unit, result)
                        free.append(worker)
        finally:  # a consumer that stopped early: what has not started yet never will
            for future in running:
                future.cancel()

    def _settle(self, future: Future, unit: Any, worker: Worker, attempt: int) -> Any:
        """The unit's result, a `UnitFailed`, or _RETRY when it is to run again on the restarted worker."""
        try:
            return future.result()
        except worker.lost as exc:
            worker.restart()
            if attempt <= self.retries:
                log.warning("a worker died (%s) under %s; restarted, running it again", type(exc).__name__, unit)
                return _RETRY
            return UnitFailed(unit, f"its worker died {attempt} times (last: {type(exc).__name__})", attempt)
        except Exception as exc:
            return UnitFailed(unit, self.describe_error(exc), attempt)


def check_settings(name: str, workers: int, ray: RayOptions) -> None:
    """ValueError for settings that cannot run: an unknown backend, negative workers, backend=ray without Ray
    installed or with ray.num_cpus <= 0."""
    check_choice(name, BACKENDS, "backend")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if name == "ray":
        from envs.backends.ray_actors import import_ray

        import_ray()
        if ray.num_cpus <= 0:
            raise ValueError(f"ray.num_cpus must be > 0, got {ray.num_cpus}")


def open_backend(
    name: str = "processes", *, workers: int = 2, ray: RayOptions | None = None, retries: int = DEFAULT_RETRIES
) -> Backend:
    """The backend `name` with `workers` workers (0: run units in this process, whatever the backend)."""
    check_settings(name, workers, ray or RayOptions())
    if workers == 0:
        return Backend([InProcessWorker()], retries)
    if name == "ray":
        from envs.backends.ray_actors import RayBackend

        return RayBackend(workers, ray or RayOptions(), retries)
    from envs.backends.processes import ProcessBackend

    return ProcessBackend(workers, retries)


def failure_message(results: Iterable[UnitFailed]) -> str:
    """Failed units as one message: how many, and the first few with their errors."""
    results = list(results)
    shown = "; ".join(f"{r.unit}: {r.error}" for r in results[:3])
    return f"{len(results)} unit(s) failed ({shown}{'; ...' if len(results) > 3 else ''})"
