"""Why a failed rollout failed, from what its camera and the robot's own sensors show: the offline first step of
failure clustering (failure reasons -> clusters -> assignment, "From Perception Logs to Failure Modes").

Only perception is read, never simulator state or the perturbation's name: the first frame against the nominal
scene's first frame on the same seed (how much of the view differs, in what colour, darker or brighter, or the same
colours moved), sudden changes between consecutive frames (a mid-episode event), the gripper's finger gap and the
hand's height (closed on nothing, held something, lifted it), how the episode ended, and, when a runtime monitor
watched, when it first saw an anomaly and first called a failure. `observe` measures, `sentence` words it so that
the words, not the numbers, carry the distinctions a sentence encoder needs.

from diagnosis.reasons import failure_reasons
reasons = failure_reasons(run_dir)    # one Reason per failed rollout of failures.hdf5
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from envs.hdf5 import demo_names
from envs.perturbations import COLORS
from envs.rollout import Runner
from envs.tasks import get_task

CHANGED_LEVEL = 30
"""Grey-level difference (0..255, largest over the channels) from which a pixel counts as changed."""
SMALL_REGION, LARGE_REGION = 0.03, 0.3
"""Shares of the view below which a changed region reads as object-sized, above which as a whole surface."""
SCATTERED = 0.5
"""Changed pixels filling less than this share of their bounding box are edges that moved, not a region."""
WHOLE_VIEW = 0.85
"""Share of the view spanned by the changed pixels' bounding box from which a change reads as the light over the
whole scene, not a surface in it."""
EVEN_GAIN = 0.15
"""Largest spread of the log colour gains (over pixels, and over channels) of a change that only darkens or
brightens what was there."""
SUDDEN = 0.3
"""Share of the view changing between two consecutive frames that reads as a sudden change of the scene."""
CLOSED_GAP, SHUT_GAP = 0.035, 0.01
"""Finger gaps (m): below the first the gripper has closed, below the second it holds nothing."""
LIFT = 0.03
"""Hand rise (m) after closing that counts as lifting."""
CHANNELS = ("red", "green", "blue")


@dataclass(frozen=True)
class Observation:
    """What one rollout showed, measured."""

    steps: int
    horizon: int
    changed_share: float
    """Share of the first frame's pixels that differ from the nominal first frame."""
    extent: float
    """Share of the view spanned by the changed pixels' bounding box (2nd to 98th percentile)."""
    density: float
    """Changed pixels over their bounding box's area: low for edges that moved, high for a recoloured region."""
    row: float
    """Height of the changed pixels' centre, 0 at the top of the view, 1 at the bottom."""
    changed_colour: str | None
    """The named colour (envs.perturbations.COLORS) nearest the changed pixels' mean, if any changed."""
    gains: tuple[float, float, float]
    """Mean log ratio of the changed pixels to the nominal ones, per channel (0: unchanged, < 0: darker)."""
    gain_spread: float
    """Spread of those log ratios over the changed pixels (low: one gain over everything, as a light does)."""
    sudden_change_at: int | None
    """First step whose frame-to-frame change covers SUDDEN of the view."""
    closed_at: int | None
    """First step the gripper had closed, after having been open wider."""
    final_gap: float
    rise: float
    """How far the hand rose from its lowest point after closing (0 when it never closed)."""
    first_anomaly: int | None = None
    first_failure: int | None = None
    """The runtime monitor's first anomalous frame and first failure verdict (None: none, or no monitor)."""


def nearest_colour(rgb: np.ndarray) -> str:
    """The name of the catalogue colour nearest `rgb` (0..1)."""
    return min(COLORS, key=lambda name: float(np.sum((np.asarray(COLORS[name][:3]) - rgb) ** 2)))


def changed_pixels(first: np.ndarray, nominal: np.ndarray) -> np.ndarray:
    """Pixels of `first` that differ from `nominal` by CHANGED_LEVEL grey levels in some channel."""
    return np.abs(first.astype(np.int16) - nominal.astype(np.int16)).max(axis=-1) >= CHANGED_LEVEL


def observe(
    *,
    frames: np.ndarray,
    nominal_first_frame: np.ndarray,
    finger_qpos: np.ndarray,
    hand_height: np.ndarray,
    horizon: int,
    monitor: dict | None = None,
) -> Observation:
    """Measures one rollout: `frames` (T, H, W, 3) uint8, the nominal scene's first frame on the same seed, the
    two finger joint positions (T, 2) and the hand's height (T,)."""
    changed = changed_pixels(frames[0], nominal_first_frame)
    share, extent, density, row, colour = float(changed.mean()), 0.0, 0.0, 0.0, None
    gains, spread = np.zeros(3), 0.0
    if changed.any():
        rows, cols = np.nonzero(changed)
        height = changed.shape[0]
        box = (np.ptp(np.percentile(rows, [2, 98])) + 1) * (np.ptp(np.percentile(cols, [2, 98])) + 1)
        extent, density, row = (
            float(box / changed.size),
            min(1.0, float(changed.sum() / box)),
            float(rows.mean() / height),
        )
        colour = nearest_colour(frames[0][changed].mean(axis=0) / 255.0)
        # +8 keeps black pixels from dominating the ratio
        ratio = np.log((frames[0][changed] + 8.0) / (nominal_first_frame[changed] + 8.0))
        gains, spread = ratio.mean(axis=0), float(ratio.std(axis=0).mean())
    steps = [changed_pixels(a, b).mean() for a, b in zip(frames[1:], frames[:-1])]
    sudden = np.nonzero(np.asarray(steps) >= SUDDEN)[0]
    gap = finger_qpos[:, 0] - finger_qpos[:, 1]
    was_open = np.maximum.accumulate(gap) > CLOSED_GAP + 0.01
    closed = np.nonzero(was_open & (gap < CLOSED_GAP))[0]
    closed_at = int(closed[0]) if len(closed) else None
    rise = float(np.ptp(hand_height[closed_at:])) if closed_at is not None else 0.0
    monitor = monitor or {}
    return Observation(
        steps=len(frames),
        horizon=horizon,
        changed_share=share,
        extent=extent,
        density=density,
        row=row,
        changed_colour=colour,
        gains=tuple(float(g) for g in gains),
        gain_spread=spread,
        sudden_change_at=int(sudden[0]) + 1 if len(sudden) else None,
        closed_at=closed_at,
        final_gap=float(gap[-1]),
        rise=rise,
        first_anomaly=monitor.get("first_anomaly"),
        first_failure=monitor.get("first_failure"),
    )


def tone(gains: tuple[float, float, float]) -> str:
    """'darker' or 'brighter', with the tint of the channel a coloured light spares (its gain highest)."""
    mean = float(np.mean(gains))
    words = "darker" if mean < 0 else "brighter"
    if np.ptp(gains) >= EVEN_GAIN:
        words += f", tinted {CHANNELS[int(np.argmax(gains))]}"
    return words


def scene_words(o: Observation) -> str:
    """The first frame against the nominal scene's, in words."""
    where = "upper" if o.row < 1 / 3 else "middle" if o.row < 2 / 3 else "lower"
    if o.changed_share < 0.003:
        return "the scene looks like the nominal one"
    if o.density < SCATTERED:
        return "edges all over the view moved: the viewpoint changed"
    if o.extent > WHOLE_VIEW:
        return f"the light changed: the whole view, background included, is {tone(o.gains)}"
    if o.gain_spread < EVEN_GAIN and np.ptp(o.gains) < EVEN_GAIN:
        return f"the {where} part of the view is {tone(o.gains)}, its colours kept"
    size = (
        "a small, object-sized region"
        if o.changed_share <= SMALL_REGION
        else "a mid-sized region"
        if o.changed_share <= LARGE_REGION
        else "a large surface"
    )
    return f"{size} in the {where} part of the view turned {o.changed_colour}"


def gripper_words(o: Observation) -> str:
    """What the gripper and the hand did, in words."""
    if o.closed_at is None:
        return "the gripper never closed"
    when = f"at step {o.closed_at}"
    if o.final_gap < SHUT_GAP:
        return f"the gripper closed on nothing {when}" + (" and the empty hand rose" if o.rise >= LIFT else "")
    if o.final_gap > CLOSED_GAP + 0.01:
        return f"the gripper closed {when}, then opened again"
    lifted = "and lifted it" if o.rise >= LIFT else "but did not lift it"
    return f"the gripper closed {when} on something {100 * o.final_gap:.0f} cm wide {lifted}"


def sentence(o: Observation) -> str:
    """The observation as one sentence: scene, event, gripper, monitor, ending."""
    parts = [scene_words(o)]
    if o.sudden_change_at is not None:
        parts.append(f"the view changed suddenly at step {o.sudden_change_at}")
    parts.append(gripper_words(o))
    if o.first_failure is not None:
        parts.append(f"the monitor called a failure at step {o.first_failure}")
    elif o.first_anomaly is not None:
        parts.append(f"the monitor saw an anomaly at step {o.first_anomaly}")
    parts.append("the episode ran out of time" if o.steps >= o.horizon else f"the episode ended at step {o.steps}")
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


@dataclass(frozen=True)
class Reason:
    demo: str
    text: str
    observation: Observation
    perturbations: tuple[str, ...]
    """The rollout's perturbations: hidden truth for evaluation, never read by the reason itself."""


def failure_reasons(run_dir: str | Path) -> list[Reason]:
    """A Reason for every failed rollout in `run_dir`/failures.hdf5 (nominal first frames rendered on the same
    seeds)."""
    path = Path(run_dir) / "failures.hdf5"
    if not path.is_file():
        raise ValueError(f"{run_dir} has no failures.hdf5; run python -m diagnosis.search first")
    reasons = []
    with h5py.File(path, "r") as file:
        task = get_task(str(file["data"].attrs["task"]))
        # The run's horizon (a search may override the task's), as its robomimic env_args record it
        horizon = int(json.loads(file["data"].attrs["env_args"])["env_kwargs"].get("horizon", task.horizon))
        failed = [n for n in demo_names(file) if bool(file["data"][n].attrs["failed"])]
        if not failed:
            return []
        runner = Runner(task)
        camera = f"obs/{task.camera}_image"
        try:
            for name in failed:
                demo = file["data"][name]
                observation = observe(
                    frames=demo[camera][:],
                    nominal_first_frame=runner.first_frame([], int(demo.attrs["seed"])),
                    finger_qpos=demo["obs/robot0_gripper_qpos"][:],
                    hand_height=demo["obs/robot0_eef_pos"][:, 2],
                    horizon=horizon,
                    monitor=json.loads(demo.attrs["monitor"]),
                )
                perturbations = tuple(json.loads(demo.attrs["perturbations"]))
                reasons.append(Reason(name, sentence(observation), observation, perturbations))
        finally:
            runner.close()
    return reasons
