"""The `ray` backend: one Ray actor per worker, each a long-lived process that keeps its renderer and policy between
units, on this machine's own Ray cluster or on one it joins (`ray.address`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from envs.backends import DEFAULT_RETRIES, Backend, RayOptions, Worker, init_worker


def import_ray():
    """Ray, or an error saying how to install it (it is an optional extra)."""
    try:
        import ray
    except ImportError:
        raise ValueError("backend=ray needs Ray: pip install 'failscope[ray]'") from None
    return ray


def connect(options: RayOptions, workers: int) -> bool:
    """Starts or joins the cluster (once per process); True when this call started a local one."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    local = not options.address
    ray.init(
        address=options.address or None,
        # A local cluster is sized to the run; a joined one already has its resources.
        num_cpus=math.ceil(workers * options.num_cpus) if local else None,
        include_dashboard=False,
        log_to_driver=False,  # workers' import chatter stays in Ray's logs; their errors come back with the units
        configure_logging=False,
    )
    return local


class UnitRunner:
    """The actor: runs units with the module-level function it is given (whose caches live as long as it does)."""

    def __init__(self, threads: int):
        init_worker(threads)

    def run(self, fn: Callable[[Any], Any], unit: Any) -> Any:
        return fn(unit)


class RayWorker(Worker):
    def __init__(self, options: RayOptions):
        ray = import_ray()
        self.lost = (ray.exceptions.RayActorError,)
        self.options = options
        self.actor_class = ray.remote(num_cpus=options.num_cpus, max_restarts=0)(UnitRunner)
        self.actor = self._start()

    def _start(self):
        return self.actor_class.remote(max(1, int(self.options.num_cpus)))

    def submit(self, fn: Callable[[Any], Any], unit: Any) -> Future:
        return self.actor.run.remote(fn, unit).future()

    def restart(self) -> None:
        self.close()
        self.actor = self._start()

    def close(self) -> None:
        import_ray().kill(self.actor, no_restart=True)


class RayBackend(Backend):
    name = "ray"

    def __init__(self, workers: int, options: RayOptions, retries: int = DEFAULT_RETRIES):
        self.started_cluster = connect(options, workers)
        super().__init__([RayWorker(options) for _ in range(workers)], retries)

    def describe_error(self, exc: BaseException) -> str:
        cause = getattr(exc, "cause", None)  # RayTaskError carries the unit's own exception
        return super().describe_error(cause if isinstance(cause, BaseException) else exc)

    def close(self) -> None:
        super().close()
        if self.started_cluster:
            import_ray().shutdown()
