"""FIDeL scoring variants on the SimFails `filter` split: which OT cost, frame score and temporal prior to use.

    MUJOCO_GL=egl python -m experiments.fidel_variants [variants=all] [data=...] [out=...]

Every variant is fitted by `FidelMonitor.fit` on the `fit` split (memory, prior potentials, conformal bands; its
encoder swapped for a cache of the same features) and scored online, frame by frame, as `FidelMonitor.step` does
(windowed search, warm starts). Feature baselines (PaDiM, PaDiM-step) are scored on the same frames for reference.
Only the `filter` split is scored: FIDeL's defaults are chosen here, and the `test` split stays untouched for
`python -m monitor.evaluate`. Printed per variant: frame AUROC against the `anomaly` labels over the whole filter
split, and per kind of filter episode (each against the nominal filter episodes' frames, as monitor.evaluate does
for the test split).

Encoder features of every frame are cached in outputs/fidel_variants/ (keyed by the data file and encoder config),
so a rerun only pays for the OT. torch runs on 1 thread (the machine is shared).
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from envs.cli import parse_config
from envs.markdown import markdown_table
from monitor.dataset import simfails_path
from monitor.encoders import EncoderConfig, PatchEncoder
from monitor.fidel import FidelConfig
from monitor.metrics import auroc
from monitor.scoring import LABELS, CachedEncoder, SimFailsSplit, episode_group, fit_monitor, score_baseline

# Variants: changes to FidelConfig fields (ot.* / memory.* keys go to OTConfig / MemoryConfig) from FIDeL as
# published (PUBLISHED).
PUBLISHED = {
    "frame_score": "transport",
    "top_k": 1,
    "heatmap": "min",
    "time_weight": 0.0,
    "lag": None,
    "time_score_weight": 0.0,
    "ot.position_weight": 0.0,
}
TOP3 = {"frame_score": "heatmap", "top_k": 3, "heatmap": "transport"}
"""The transported-cost heatmap's top-3 mean as the frame score."""
VARIANTS: dict[str, dict | None] = {
    "published (mean transport cost)": {},
    "max heatmap": {"frame_score": "heatmap", "top_k": 1},
    "top-3 heatmap": {"frame_score": "heatmap", "top_k": 3},
    "max transported heatmap": {**TOP3, "top_k": 1},
    "top-3 transported heatmap": TOP3,
    "band-normalised heatmap": {"frame_score": "band"},
    "band-normalised transported heatmap": {"frame_score": "band", "heatmap": "transport"},
    "position λ=0.3": {"ot.position_weight": 0.3},
    "position λ=1": {"ot.position_weight": 1.0},
    "position λ=1 + max heatmap": {"ot.position_weight": 1.0, "frame_score": "heatmap"},
    "time γ=1": {"time_weight": 1.0},
    "time γ=3": {"time_weight": 3.0},
    "time γ=10": {"time_weight": 10.0},
    "lag 1 (near-monotone t_min)": {"lag": 1},
    "top-3 transported, time γ=0.5": {**TOP3, "time_weight": 0.5},
    "top-3 transported, time γ=1": {**TOP3, "time_weight": 1.0},
    "top-3 transported, time γ=3": {**TOP3, "time_weight": 3.0},
    "top-5 transported, time γ=1": {**TOP3, "top_k": 5, "time_weight": 1.0},
    "top-3 transported, time γ=1, ε=1": {**TOP3, "time_weight": 1.0, "ot.epsilon": 1.0},
    "top-3 transported, time γ=1, σ floor 0.2": {**TOP3, "time_weight": 1.0, "memory.sigma_floor": 0.2},
    "top-3 transported, time γ=1, λ=1": {**TOP3, "time_weight": 1.0, "ot.position_weight": 1.0},
    "top-3 transported, time γ=1, λ=0.3, full search": {
        **TOP3,
        "time_weight": 1.0,
        "ot.position_weight": 0.3,
        "window": None,
    },
    "top-3 transported, time γ=1, λ=0.3, lag 1": {**TOP3, "time_weight": 1.0, "ot.position_weight": 0.3, "lag": 1},
    "top-3 transported, time γ=1, λ=0.3, score + 1·abs(t_min − k)/T": {
        **TOP3,
        "time_weight": 1.0,
        "ot.position_weight": 0.3,
        "time_score_weight": 1.0,
    },
    "top-3 transported, time γ=1, λ=0.3, time anchored on progress": {
        **TOP3,
        "time_weight": 1.0,
        "ot.position_weight": 0.3,
        "time_anchor": "progress",
    },
    "defaults: top-3 transported, time γ=1, λ=0.3": None,
}
"""name → changes to FIDeL as published; None = FidelConfig's defaults."""


NOTE = (
    "Frame AUROC (anomaly labels) on the filter split only; per kind: that kind's frames and the nominal "
    "episodes' frames (nominal: the nominal episodes alone, whose anomalous frames are those of the failed one). "
    "Variants change FIDeL as published unless marked defaults; s = seconds to fit and score."
)


@dataclass
class VariantsConfig:
    task: str = "lift"
    policy: str = "lift_bc_image"
    data: str = ""
    """SimFails HDF5 file; empty = monitor.dataset's default path for task and policy."""
    variants: str = "all"
    """all, or a comma-separated list of indices into VARIANTS (0 = published), or extra variants given as
    `key=value;key=value` groups separated by `|` (e.g. `ot.position_weight=0.5;frame_score=heatmap`)."""
    stages: str = ""
    """Encoder stages, e.g. `2,3` (empty = the default encoder)."""
    alpha: float = 0.1
    normalised: bool = False
    """Also score each variant's frame score normalised per memory time by its fitted bands (Gaussian z-score,
    CP-time nonconformity)."""
    baselines: str = "padim,padim_step"
    """Feature baselines (monitor.evaluate names) also scored on the filter split, for reference; "none" = none."""
    out: str = ""
    """Also write the table as markdown to this file."""


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return None if text == "None" else text


def chosen_variants(spec: str) -> dict[str, dict]:
    names = list(VARIANTS)
    if spec == "all":
        return dict(VARIANTS)
    if "=" in spec:
        out = {}
        for group in spec.split("|"):
            changes = dict(item.split("=", 1) for item in group.split(";") if item)
            out[group] = {k: _value(v) for k, v in changes.items()}
        return out
    return {names[int(i)]: VARIANTS[names[int(i)]] for i in spec.split(",")}


def configure(base: FidelConfig, changes: dict | None) -> FidelConfig:
    if changes is None:
        return base
    changes = {**PUBLISHED, **changes}
    ot = {k[3:]: v for k, v in changes.items() if k.startswith("ot.")}
    memory = {k[7:]: v for k, v in changes.items() if k.startswith("memory.")}
    rest = {k: v for k, v in changes.items() if not k.startswith(("ot.", "memory."))}
    return replace(base, ot=replace(base.ot, **ot), memory=replace(base.memory, **memory), **rest)


def cached_features(
    path: Path, splits: dict[str, SimFailsSplit], encoder: PatchEncoder
) -> dict[str, list[torch.Tensor]]:
    """Per split, each episode's patch features, cached in outputs/fidel_variants/ by data file and encoder config."""
    key = hashlib.blake2b(f"{path.resolve()}:{path.stat().st_mtime}:{encoder.config}".encode(), digest_size=8)
    features = {}
    for name, split in splits.items():
        cache = Path("outputs/fidel_variants") / f"{name}-{key.hexdigest()}.pt"
        if cache.is_file():
            features[name] = torch.load(cache)
            continue
        features[name] = [encoder.encode(split.frames[a:b]) for a, b in zip(split.bounds[:-1], split.bounds[1:])]
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(features[name], cache)
    return features


def fit_fidel(config: FidelConfig, task: str, fit: SimFailsSplit, encoder: CachedEncoder):
    """`FidelMonitor.fit` on the fit split, its encoder replaced by the shared cache (same features)."""
    import monitor.fidel as fidel

    original = fidel.PatchEncoder
    fidel.PatchEncoder = lambda _config: encoder
    try:
        return fidel.FidelMonitor.fit(task, [e["frames"] for e in fit.episodes], config)
    finally:
        fidel.PatchEncoder = original


def main(argv: list[str] | None = None) -> None:
    config = parse_config(VariantsConfig, argv)
    torch.set_num_threads(1)
    path = simfails_path(config.data, config.task, config.policy)
    splits = {name: SimFailsSplit.read(path, name) for name in ("fit", "filter")}
    encoder_config = (
        EncoderConfig() if not config.stages else EncoderConfig(stages=tuple(int(s) for s in config.stages.split(",")))
    )
    base = FidelConfig(alpha=config.alpha, encoder=encoder_config)
    encoder = PatchEncoder(encoder_config)
    started = time.perf_counter()
    features = cached_features(path, splits, encoder)
    cached = CachedEncoder(encoder)
    fit = splits["fit"]
    cached._cache.update(zip((cached._key(f) for f in fit.frames), torch.cat(features["fit"])))
    print(f"features ready in {time.perf_counter() - started:.0f} s", flush=True)
    test = splits["filter"]
    groups = np.repeat([episode_group(e) for e in test.episodes], np.diff(test.bounds))
    group_names = sorted(set(groups) - {"nominal"}) + ["nominal"]
    header = ["variant", "AUROC", *group_names, "s"]
    rows = []
    for name, changes in chosen_variants(config.variants).items():
        started = time.perf_counter()
        fidel = configure(base, changes)
        monitor = fit_fidel(fidel, config.task, splits["fit"], cached)
        matches = []
        for episode in features["filter"]:
            monitor.scorer.reset()
            matches.extend(monitor.scorer(x) for x in episode)
        scores = np.array([m.score for m in matches])
        t_min = np.array([m.t_min for m in matches])
        readings = {name: scores}
        if config.normalised:
            gaussian = monitor.bands["gaussian"]
            readings[f"{name} → per-t z-score"] = (scores - gaussian.mean[t_min]) / gaussian.std[t_min]
            readings[f"{name} → CP-time nonconformity"] = monitor.bands["time"].nonconformity(t_min, scores)
        for label, values in readings.items():
            row = [label, f"{100 * auroc(values, test.anomaly):.1f}"]
            for group in group_names:
                chosen = (groups == group) | (groups == "nominal")
                row.append(f"{100 * auroc(values[chosen], test.anomaly[chosen]):.1f}")
            rows.append(row + [f"{time.perf_counter() - started:.0f}"])
            print(" | ".join(rows[-1]), flush=True)
    for method in [m for m in config.baselines.split(",") if m and m != "none"]:
        started = time.perf_counter()
        frames = [e["frames"] for e in splits["fit"].episodes]
        monitor = fit_monitor(
            method=method,
            task=config.task,
            frames=frames,
            features=features["fit"],
            encoder=encoder,
            alpha=config.alpha,
            autoencoder_epochs=0,
        )
        episodes = [e["frames"] for e in test.episodes]
        scores = score_baseline(monitor, episodes, features["filter"]).score
        row = [f"baseline: {LABELS[method]}", f"{100 * auroc(scores, test.anomaly):.1f}"]
        for group in group_names:
            chosen = (groups == group) | (groups == "nominal")
            row.append(f"{100 * auroc(scores[chosen], test.anomaly[chosen]):.1f}")
        rows.append(row + [f"{time.perf_counter() - started:.0f}"])
        print(" | ".join(rows[-1]), flush=True)
    table = markdown_table(header, rows)
    print(table)
    if config.out:
        command = "python -m experiments.fidel_variants " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(config.out).write_text(
            f"# FIDeL scoring variants, SimFails-{config.task} filter split\n\nCommand: `{command.strip()}` "
            f"(encoder {encoder_config.model}, stages {encoder_config.stages})\n\n{NOTE}\n\n{table}\n"
        )


if __name__ == "__main__":
    main()
