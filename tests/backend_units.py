"""Units of work for the backend tests: importable by worker processes and Ray actors (`tests.backend_units`)."""

import os
from pathlib import Path


def square(x: int) -> int:
    return x * x


def dies_once_at_three(unit: tuple[str, int]) -> tuple[int, int]:
    """Kills its worker (as the OOM killer would) the first time it gets 3, raises for 5; else (10 x, its pid)."""
    marker, x = unit
    if x == 3:
        try:  # exclusive create: the first attempt dies, the retry finds the marker
            os.close(os.open(f"{marker}_{x}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            os.kill(os.getpid(), 9)
        except FileExistsError:
            pass
    if x == 5:
        raise ValueError("five is refused")
    return 10 * x, os.getpid()


def always_dies(unit: object) -> None:
    os.kill(os.getpid(), 9)


def pid(unit: object) -> int:
    return os.getpid()


def marker_count(marker: str) -> int:
    return len(list(Path(marker).parent.glob(Path(marker).name + "*")))
