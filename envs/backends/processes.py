"""The `processes` backend: one single-process pool per worker on this machine, so a worker that dies takes only
its own unit with it, and is replaced by a fresh process."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

from envs.backends import DEFAULT_RETRIES, Backend, Worker, init_worker


class ProcessWorker(Worker):
    lost = (BrokenProcessPool,)

    def __init__(self) -> None:
        self.pool = self._start()

    @staticmethod
    def _start() -> ProcessPoolExecutor:
        # spawn: a worker starts from a clean interpreter, never inheriting a GL context or torch's threads.
        return ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=init_worker)

    def submit(self, fn: Callable[[Any], Any], unit: Any) -> Future:
        return self.pool.submit(fn, unit)

    def restart(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._start()

    def close(self) -> None:
        # Ctrl-C or an early stop: units not yet started are dropped; a running one finishes in its process.
        self.pool.shutdown(wait=False, cancel_futures=True)


class ProcessBackend(Backend):
    name = "processes"

    def __init__(self, workers: int, retries: int = DEFAULT_RETRIES):
        super().__init__([ProcessWorker() for _ in range(workers)], retries)
