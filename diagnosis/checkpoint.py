"""A search's resume point: the method's state, its workers' states and the rollout count they belong to.

    checkpoint/   meta.json (rollouts, method), workers.json, and the method's own files (SearchMethod.files)
    state.json    rollouts recorded, wall time, status, metric curve, and `checkpoint_rollouts`

A checkpoint is written into a fresh folder and swapped in whole, and state.json is replaced atomically, so a
run killed at any instant leaves either the previous checkpoint or the new one, never a mix. Rollouts recorded
after the last checkpoint are kept in failures.hdf5 until a resume, which drops and reruns them: with the method's
and the workers' states restored, the rerun gives the same rollouts, so the resumed run ends as an uninterrupted
one would.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from envs.json_files import read_json

CHECKPOINT = "checkpoint"
STATE = "state.json"


def write_json_atomic(path: Path, data: Any) -> None:
    """Replaces `path` in one step (a kill mid-write leaves the old file)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1))
    os.replace(temporary, path)


def save_checkpoint(
    run_dir: Path, rollouts: int, method: str, save_method: Callable[[Path], None], workers: Sequence[dict]
) -> None:
    """Writes checkpoint/ for the state after `rollouts` rollouts; `save_method(folder)` writes the method's files."""
    final = run_dir / CHECKPOINT
    fresh = run_dir / (CHECKPOINT + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir()
    save_method(fresh)
    (fresh / "workers.json").write_text(json.dumps(list(workers)))
    (fresh / "meta.json").write_text(json.dumps({"rollouts": rollouts, "method": method}))
    old = run_dir / (CHECKPOINT + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    fresh.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def checkpoint_rollouts(run_dir: Path) -> int:
    """Rollouts the checkpoint in `run_dir` stands after (0 when there is none)."""
    meta = run_dir / CHECKPOINT / "meta.json"
    return int(json.loads(meta.read_text())["rollouts"]) if meta.is_file() else 0


def check_resumable(run_dir: Path, method: str, method_files: Sequence[str]) -> int:
    """The rollout count a resume starts from; ValueError naming what is missing or unreadable otherwise."""
    state_path = run_dir / STATE
    fix = "start a new run"
    state = read_json(state_path, fix=fix, shown=f"search.resume={run_dir}: {STATE}") if state_path.is_file() else {}
    folder = run_dir / CHECKPOINT
    if not (folder / "meta.json").is_file():
        if state.get("checkpoint_rollouts", 0):
            raise ValueError(
                f"search.resume={run_dir}: {CHECKPOINT}/ is missing; the run cannot continue, start a new run"
            )
        return 0  # stopped before its first checkpoint: it starts over, and its recorded rollouts run again
    try:
        meta = json.loads((folder / "meta.json").read_text())
        json.loads((folder / "workers.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"search.resume={run_dir}: the checkpoint cannot be read ({exc}); start a new run") from None
    if meta.get("method") != method:
        raise ValueError(f"search.resume={run_dir}: the checkpoint is of method {meta.get('method')!r}, not {method!r}")
    missing = [name for name in method_files if not (folder / name).is_file()]
    if missing:
        raise ValueError(
            f"search.resume={run_dir}: {CHECKPOINT}/{missing[0]} is missing; the run cannot continue, start a new run"
        )
    return int(meta["rollouts"])
