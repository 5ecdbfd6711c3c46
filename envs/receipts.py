"""What applying a perturbation changed: the model arrays it edited (how many entries, by how much), the simulator
state it moved, the per-step filters it installs and, for reset-time perturbations, how far the first camera frame
moved from the nominal scene's at the same seed. Every rollout keeps one receipt per perturbation (stored with it
in the HDF5 files), and a perturbation whose receipt is empty changed nothing: `check_effect` refuses it, since
a silent no-op would be reported as robustness.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from envs.perturbations import Perturbation
from envs.tasks import TaskSpec, get_task

if TYPE_CHECKING:
    from envs.scene import Scene

FILTERS = ("act", "observe", "during")
"""Per-step hooks a family may override instead of (or beside) editing the scene once."""


def filters_of(perturbation: Perturbation) -> list[str]:
    """The per-step hooks `perturbation`'s family overrides (noise, a forced gripper); a composed one's parts'."""
    parts = getattr(perturbation, "parts", None)
    if parts:
        return [hook for hook in FILTERS if any(hook in filters_of(part) for part in parts)]
    return [hook for hook in FILTERS if getattr(type(perturbation), hook) is not getattr(Perturbation, hook)]


def applied(
    scene: Scene, perturbation: Perturbation, apply: Callable[[], None], fields: tuple[str, ...]
) -> dict[str, Any]:
    """Runs `apply` (the perturbation acting on `scene`) and returns its receipt: `model` {array: [entries
    changed, largest change]}, `state` {qpos/qvel: largest change}, `filters`."""
    before = {name: getattr(scene.model, name).copy() for name in fields}
    qpos, qvel = scene.data.qpos.copy(), scene.data.qvel.copy()
    apply()
    model = {}
    for name, old in before.items():
        new = getattr(scene.model, name)
        changed = old != new
        if changed.any():
            delta = np.abs(new.astype(np.float64) - old.astype(np.float64))
            model[name] = [int(changed.sum()), float(delta.max())]
    state = {
        key: float(np.abs(now - was).max())
        for key, now, was in (("qpos", scene.data.qpos, qpos), ("qvel", scene.data.qvel, qvel))
        if len(was) and np.any(now != was)
    }
    return {"perturbation": perturbation.name, "model": model, "state": state, "filters": filters_of(perturbation)}


def is_empty(receipt: dict[str, Any]) -> bool:
    return not (receipt["model"] or receipt["state"] or receipt["filters"])


def check_effect(receipt: dict[str, Any], task: str) -> None:
    """ValueError when the perturbation changed nothing."""
    if is_empty(receipt):
        raise ValueError(
            f"perturbation {receipt['perturbation']!r} changes nothing in task {task!r}'s scene (no model array, "
            "no simulator state, no per-step filter): its values are the nominal ones or it acts on nothing there"
        )


_CHECKED: set[tuple[str, Perturbation]] = set()
"""(task spec, perturbation) pairs already found to change something in this process (the answer cannot change)."""


def check_effects(task: str | TaskSpec, perturbations: list[Perturbation], seed: int = 0) -> None:
    """Applies each perturbation alone to the nominal scene of `task` at `seed` (an event as if it fired at the
    start); a ValueError names the first that changes nothing. What a CLI checks before it spends rollouts on
    its perturbations."""
    from envs.scene import EDITABLE_FIELDS, Scene

    spec = get_task(task)
    todo = [p for p in perturbations if (repr(spec), p) not in _CHECKED]
    if not todo:
        return
    scene = Scene(spec)  # its own, closed after: no simulator lingers in a process that forks workers
    rng = np.random.default_rng([seed, 7919])
    try:
        for p in todo:
            scene.reset(seed)
            check_effect(applied(scene, p, lambda p=p: p.apply(scene, rng), EDITABLE_FIELDS), spec.name)
            _CHECKED.add((repr(spec), p))
    finally:
        scene.close()


def describe(receipt: dict[str, Any]) -> str:
    """One line of what a receipt says, for reports: `light_dim: light_diffuse ×3 (by up to 0.455), ...; the first
    frame moved 56.5 grey levels on average`."""
    parts = [f"{name} ×{count} (by up to {largest:.3g})" for name, (count, largest) in receipt["model"].items()]
    parts += [f"{key} moved by up to {largest:.3g}" for key, largest in receipt["state"].items()]
    parts += [f"filters every step's {hook}" for hook in receipt["filters"]]
    when = "" if receipt.get("step") is None else f" at step {receipt['step']}"
    text = f"{receipt['perturbation']}{when}: {', '.join(parts) or 'nothing'}"
    if "pixels" in receipt:
        text += f"; the first frame moved {receipt['pixels']:.1f} grey levels on average"
    return text


def pixel_change(nominal: np.ndarray, perturbed: np.ndarray) -> float:
    """Mean absolute difference of two uint8 frames, in grey levels (0–255)."""
    return float(np.abs(nominal.astype(np.int16) - perturbed.astype(np.int16)).mean())
