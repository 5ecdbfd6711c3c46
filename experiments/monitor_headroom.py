"""How much AUROC SimFails leaves above the baselines, and where every monitor's errors sit.

    MUJOCO_GL=egl python -m experiments.monitor_headroom [splits=filter,test] [out=...]

FIDeL (its defaults) and the feature baselines are fitted on the `fit` split exactly as `python -m monitor.evaluate`
fits them (same features; the autoencoder is left out: it trains for minutes and scores lowest) and scored on each
split. Printed per split and method:

- frame AUROC against the `anomaly` labels;
- the same without the *ambiguous* frames: the not-yet-anomalous frames of episodes that end in failure. By the
  label rules (monitor/dataset.py) a failing episode is normal until its failure onset, often the late step, while
  the robot is already visibly off the nominal course (noisy actions, a missed grasp): every method scores such
  frames high;
- how much of the AUROC deficit (100 − AUROC) each episode family's frames carry, from the positive side (anomalous
  frames scored below normal ones) and the negative side (normal frames scored above anomalous ones).

The headroom line compares FIDeL's target margin (≥ +3 frame AUROC over every baseline; the FIDeL paper reports
+5.3 on BotFails) with what is left above the best baseline. Nothing is tuned here; the test split is read only to
report.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from envs.cli import parse_config
from envs.markdown import markdown_table
from experiments.fidel_variants import cached_features, fit_fidel
from monitor.dataset import simfails_path
from monitor.encoders import EncoderConfig, PatchEncoder
from monitor.fidel import FidelConfig
from monitor.metrics import auroc
from monitor.scoring import LABELS, CachedEncoder, SimFailsSplit, fit_monitor, score_baseline, score_fidel

BASELINES = ("padim", "padim_step", "patchcore")
MARGIN = 3.0
"""The target: FIDeL's frame AUROC at least this many points above every baseline."""


@dataclass
class HeadroomConfig:
    task: str = "lift"
    policy: str = "lift_bc_image"
    data: str = ""
    """SimFails HDF5 file; empty = monitor.dataset's default path for task and policy."""
    splits: str = "filter,test"
    alpha: float = 0.1
    out: str = ""
    """Also write the tables as markdown to this file."""


def _share_below(values: np.ndarray, sorted_reference: np.ndarray) -> np.ndarray:
    """For each value, the share of the reference scored below it, ties counting half (as in the AUROC)."""
    left = np.searchsorted(sorted_reference, values, "left")
    right = np.searchsorted(sorted_reference, values, "right")
    return (left + right) / 2 / len(sorted_reference)


def deficit_by_family(scores: np.ndarray, anomaly: np.ndarray, family: np.ndarray) -> dict[str, tuple[float, float]]:
    """family → (points of 100 − AUROC carried by its anomalous frames, by its normal frames). Each side sums to
    the whole deficit: an anomalous frame's share is the fraction of normal frames scored at or above it."""
    positive, negative = scores[anomaly], scores[~anomaly]
    above = 1 - _share_below(positive, np.sort(negative))
    below = _share_below(negative, np.sort(positive))
    out = {}
    for name in sorted(set(family)):
        pos = 100 * above[family[anomaly] == name].sum() / len(positive)
        neg = 100 * below[family[~anomaly] == name].sum() / len(negative)
        out[name] = (pos, neg)
    return out


def main(argv: list[str] | None = None) -> None:
    config = parse_config(HeadroomConfig, argv)
    torch.set_num_threads(1)
    path = simfails_path(config.data, config.task, config.policy)
    names = [s for s in config.splits.split(",") if s]
    splits = {name: SimFailsSplit.read(path, name) for name in ["fit", *names]}
    encoder = PatchEncoder(EncoderConfig())
    features = cached_features(path, splits, encoder)
    cached = CachedEncoder(encoder)
    cached._cache.update(zip((cached._key(f) for f in splits["fit"].frames), torch.cat(features["fit"])))
    fit_frames = [e["frames"] for e in splits["fit"].episodes]
    monitors = {"fidel": fit_fidel(FidelConfig(alpha=config.alpha), config.task, splits["fit"], cached)}
    for method in BASELINES:
        monitors[method] = fit_monitor(
            method=method,
            task=config.task,
            frames=fit_frames,
            features=features["fit"],
            encoder=encoder,
            alpha=config.alpha,
            autoencoder_epochs=0,
        )

    sections = []
    for name in names:
        split, started = splits[name], time.perf_counter()
        episodes = [e["frames"] for e in split.episodes]
        scores = {"fidel": score_fidel(monitors["fidel"], features[name]).score}
        scores.update({m: score_baseline(monitors[m], episodes, features[name]).score for m in BASELINES})
        lengths = np.diff(split.bounds)
        failing = np.repeat([bool(e["failure"].any()) for e in split.episodes], lengths)
        ambiguous = failing & ~split.anomaly
        family = np.repeat([e["family"] or "nominal" for e in split.episodes], lengths)
        rows = []
        for method, values in scores.items():
            rows.append(
                [
                    LABELS[method],
                    f"{100 * auroc(values, split.anomaly):.1f}",
                    f"{100 * auroc(values[~ambiguous], split.anomaly[~ambiguous]):.1f}",
                ]
            )
        best = max(BASELINES, key=lambda m: auroc(scores[m], split.anomaly))
        best_auroc = 100 * auroc(scores[best], split.anomaly)
        clear = max(100 * auroc(scores[m][~ambiguous], split.anomaly[~ambiguous]) for m in BASELINES)
        deficits = {m: deficit_by_family(scores[m], split.anomaly, family) for m in ("fidel", best)}
        family_header = ["family", f"{LABELS['fidel']}: anomalous", "normal", f"{LABELS[best]}: anomalous", "normal"]
        family_rows = [
            [f, *(f"{deficits[m][f][side]:.2f}" for m in ("fidel", best) for side in (0, 1))]
            for f in sorted(set(family))
        ]
        headroom = (
            f"Best baseline: {LABELS[best]} at {best_auroc:.1f}. FIDeL needs ≥ {best_auroc + MARGIN:.1f} for the "
            f"+{MARGIN:.0f} target: {100 - best_auroc:.1f} points are left above the best baseline, so FIDeL must "
            f"remove {MARGIN / (100 - best_auroc):.0%} of the best baseline's errors. {int(ambiguous.sum())} of "
            f"{int((~split.anomaly).sum())} normal frames are ambiguous; without them the best baseline scores "
            f"{clear:.1f}, so the same margin would need {clear + MARGIN:.1f}."
        )
        section = [
            f"## {name} split ({len(split.episodes)} episodes, {len(split.anomaly)} frames)",
            "",
            markdown_table(["method", "AUROC", "AUROC without ambiguous frames"], rows),
            "",
            headroom,
            "",
            "Points of the AUROC deficit carried by each family's frames (anomalous frames / normal frames):",
            "",
            markdown_table(family_header, family_rows),
            "",
        ]
        sections += section
        print("\n".join(section), f"({time.perf_counter() - started:.0f} s)", flush=True)
    if config.out:
        command = "python -m experiments.monitor_headroom " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(config.out).write_text(
            f"# SimFails-{config.task}: headroom above the baselines\n\nCommand: `{command.strip()}`\n\n"
            f"{__doc__.split(chr(10) + chr(10), 2)[2]}\n" + "\n".join(sections)
        )


if __name__ == "__main__":
    main()
