"""How many torch threads one policy step runs on.

A policy under test acts on a batch of one frame per step, and rollouts run one per core (search workers, ground
truth workers). Torch's default intra-op pool (one thread per core) then only makes each worker's threads compete
with the other worker's: a batch-of-one forward pass is many times slower than on one thread
(`python -m experiments.bench_policy_threads`, experiments/results/bench_policy_threads.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

STEP_THREADS = 1
"""Torch threads of one policy step (None: torch's default)."""


@contextmanager
def step_threads(threads: int | None = STEP_THREADS) -> Iterator[None]:
    """Runs the block on `threads` torch threads and restores the process's count after, so that training in the
    same process (periodic rollout evaluations) keeps its own."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
