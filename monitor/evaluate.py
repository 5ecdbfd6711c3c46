"""`python -m monitor.evaluate task=lift`: FIDeL against its baselines on SimFails (`python -m monitor.dataset`).

Every method learns and calibrates on the `fit` split only (FIDeL: memory Y, calibration E_A/E_B; the baselines:
the same Y to learn from and E_A ∪ E_B to calibrate their threshold, at the same α). The trained semantic filters
learn on the `filter` split; everything below is measured on the `test` split, with nothing tuned on it.

Per method, on every test frame (pooled over episodes):
- AUROC and F1 at the best threshold of the raw frame score against the `anomaly` labels (and AUROC against the
  `failure` labels);
- for each thresholding (FIDeL: CP-time&space, CP-time, Gaussian; baselines: their calibrated threshold): TPR
  and TNR of `is_anomaly` against `anomaly`, balanced accuracy (TPR+TNR)/2, and weighted accuracy
  β·TPR + (1−β)·TNR with β the share of normal frames (each class weighted by the other's share, so the rarer
  class counts more);
- end-to-end failure detection: `is_failure` (an anomaly the semantic filter calls a failure) against the `failure`
  labels, frame by frame and per episode (an episode is flagged when any frame is), for each filter: `none` (every
  anomaly is a failure), `trained` (monitor.semantic.TrainedFilter fitted on the method's own flagged frames of the
  filter split, labelled by their `failure` label), `vlm` (only when `vlm_base_url` is set).
Also AUROC per kind of test episode (each against the nominal test episodes' frames), and the wall time of each stage.
The tables go to `experiments/results/monitor_<task>.md` with the commands that made them.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
import torch

from envs.cli import parse_config
from monitor.dataset import FAILURE_EVENTS, NON_VISUAL_FAMILIES, SPLITS, read_split, simfails_path
from monitor.metrics import auroc, f1_optimal, rates

if TYPE_CHECKING:
    from monitor.semantic import Example

METHODS = ("fidel", "padim", "padim_step", "patchcore", "autoencoder")
LABELS = {
    "fidel": "FIDeL (OT)", "padim": "PaDiM (global, LW cov)", "padim_step": "PaDiM-step (diag)",
    "patchcore": "PatchCore (kNN, coreset)", "autoencoder": "Conv autoencoder",
}  # fmt: skip
FIDEL_THRESHOLDS = {"time_space": "CP-time&space", "time": "CP-time", "gaussian": "Gaussian (z=3)"}
FILTERS = ("none", "trained", "vlm")


@dataclass
class EvaluateConfig:
    task: str = "lift"
    policy: str = "lift_bc_image"
    """The policy whose SimFails file is read (it names the default file)."""
    data: str = ""
    """SimFails HDF5 file; empty = monitor.dataset's default path for task and policy."""
    out: str = ""
    """Markdown results; empty = experiments/results/monitor_<task>.md."""
    alpha: float = 0.1
    """Every method's false-alarm budget: at most this share of nominal episodes raises any alarm."""
    methods: str = "all"
    """all, or comma-separated: fidel, padim, padim_step, patchcore, autoencoder."""
    filters: str = "none,trained,vlm"
    """Semantic filters for the end-to-end table (vlm runs only when vlm_base_url is set)."""
    filter_examples: int = 12
    """Trained filter: at most this many flagged frames per filter-split episode, evenly spaced."""
    autoencoder_epochs: int = 30
    """Training epochs of the autoencoder baseline."""
    vlm_base_url: str = ""
    """OpenAI-compatible endpoint for the vlm filter (e.g. http://localhost:8000/v1); empty = skip it."""
    vlm_model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    command: str = ""
    """How the dataset was made, for the report (empty = `python -m monitor.dataset task=<task>`)."""


# -- which file ------------------------------------------------------------------------------------------------------

DATASET_KINDS = {
    "simfails": ("a SimFails file", "python -m monitor.dataset task={task} policy={policy}"),
    "search": (
        "a search's failure dataset (failures.hdf5)", "python -m diagnosis.search task={task} policy.name={policy}"
    ),
    "demos": ("a demonstration file", "python -m policies.collect task={task}"),
}
"""FailScope's HDF5 files: what each is called and the command that makes one."""


def dataset_kind(path: str | Path) -> str:
    """Which of FailScope's HDF5 files `path` is, from its layout: `search` (data attrs candidates), `simfails`
    (data attrs late_step or fit_rejected_seeds, or mask/fit), `demos` (mask/train); failing those, by demo_0's
    attributes (search_step: search, split: simfails); else `unknown`. Readers check it first, so the wrong file is
    one sentence and not a KeyError deep in h5py. Not HDF5 → ValueError."""
    try:
        file = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path} is not a readable HDF5 file ({str(exc).splitlines()[0]})") from None
    with file:
        data = file.get("data")
        if not isinstance(data, h5py.Group):
            return "unknown"
        mask = file.get("mask")
        masks = set(mask) if isinstance(mask, h5py.Group) else set()
        if "candidates" in data.attrs:
            return "search"
        if "late_step" in data.attrs or "fit_rejected_seeds" in data.attrs or "fit" in masks:
            return "simfails"
        if "train" in masks:
            return "demos"
        first = data.get("demo_0")  # older or hand-made files: tell by a rollout's own attributes
        if isinstance(first, h5py.Group):
            if "search_step" in first.attrs:
                return "search"
            if "split" in first.attrs:
                return "simfails"
    return "unknown"


def require_dataset(path: str | Path, expected: str, task: str, policy: str = "<policy>") -> Path:
    """`path` when it is a finished dataset of kind `expected` (DATASET_KINDS); else a ValueError that says what
    it is instead and the command that makes the expected kind."""
    if expected not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {expected!r}; valid: {', '.join(DATASET_KINDS)}")
    kind = dataset_kind(path)
    what, make = DATASET_KINDS[expected]
    make = make.format(task=task, policy=policy)
    if kind != expected:
        found = DATASET_KINDS[kind][0] if kind in DATASET_KINDS else "no FailScope dataset"
        raise ValueError(f"{path} is {found}, not {what}; make one with {make}")
    if expected == "simfails":
        with h5py.File(path, "r") as file:
            missing = [s for s in SPLITS if f"mask/{s}" not in file]
        if missing:
            raise ValueError(
                f"{path} is an unfinished SimFails file (no mask/{', mask/'.join(missing)}); finish it by rerunning "
                f"{make} out={path} (it resumes)"
            )
    return Path(path)


# -- scoring ---------------------------------------------------------------------------------------------------------


class CachedEncoder:
    """A PatchEncoder that remembers each frame's features (by content): every test frame is encoded once, then
    shared by FIDeL, the feature baselines and the trained filters (which also see the same reference frames often)."""

    def __init__(self, encoder):
        self.encoder, self.config = encoder, encoder.config
        self.num_patches, self.feature_dim = encoder.num_patches, encoder.feature_dim
        self._cache: dict[bytes, torch.Tensor] = {}

    @staticmethod
    def _key(frame: np.ndarray) -> bytes:
        return hashlib.blake2b(np.ascontiguousarray(frame).tobytes(), digest_size=16).digest() + bytes(frame.shape)

    def encode(self, frames: np.ndarray, batch_size: int = 64) -> torch.Tensor:
        keys = [self._key(f) for f in frames]
        missing = {k: i for i, k in enumerate(keys) if k not in self._cache}
        if missing:
            encoded = self.encoder.encode(np.stack([frames[i] for i in missing.values()]), batch_size)
            self._cache.update(zip(missing, encoded))
        return torch.stack([self._cache[k] for k in keys])

    __call__ = encode

    def fingerprint(self, frame_shape: tuple[int, ...]) -> torch.Tensor:
        return self.encoder.fingerprint(frame_shape)


@dataclass
class Scored:
    """One method's readings of one split's frames, concatenated over episodes."""

    score: np.ndarray
    heatmap: np.ndarray
    """(N, grid, grid) float32."""
    reference: np.ndarray
    """(N,) index into the method's reference frames, for the semantic filter."""
    late: np.ndarray
    """(N,) bool: frames past every calibration episode's end, failures without a semantic filter's say."""
    decisions: dict[str, np.ndarray] = field(default_factory=dict)
    """Thresholding name → is_anomaly (N,) bool (late frames included)."""

    def to_judge(self, decision: str) -> np.ndarray:
        """Indices of the frames a semantic filter judges: flagged under `decision`, not late."""
        return np.flatnonzero(self.decisions[decision] & ~self.late)


def score_fidel(monitor, features: Sequence[torch.Tensor]) -> Scored:
    """FIDeL frame by frame, online (windowed search, warm starts), exactly as `FidelMonitor.step` reads frames."""
    from monitor.fidel import torch_threads

    scores, heatmaps, t_mins, decisions = [], [], [], {name: [] for name in FIDEL_THRESHOLDS}
    grid = monitor.config.encoder.grid
    with torch_threads(1):
        for episode in features:
            monitor.scorer.reset()
            for x in episode:
                match = monitor.scorer(x)
                heatmap = match.heatmap.numpy()
                scores.append(match.score)
                heatmaps.append(heatmap.reshape(grid, grid).astype(np.float32))
                t_mins.append(match.t_min)
                for name in FIDEL_THRESHOLDS:
                    decisions[name].append(monitor.decide(match.score, match.t_min, heatmap, name)[0])
    late = late_frames(monitor, [len(e) for e in features])
    flagged = {name: np.array(values) | late for name, values in decisions.items()}
    return Scored(np.array(scores), np.stack(heatmaps), np.array(t_mins), late, flagged)


def late_frames(monitor, lengths: Sequence[int]) -> np.ndarray:
    """Per frame of episodes of these lengths, concatenated: whether the monitor calls it late (`is_late`)."""
    return np.array([monitor.is_late(k) for n in lengths for k in range(n)], dtype=bool)


def score_baseline(monitor, episodes: Sequence[np.ndarray], features: Sequence[torch.Tensor] | None) -> Scored:
    """A ThresholdMonitor over whole episodes (from shared features when the scorer takes them)."""
    from monitor.fidel import torch_threads

    scores, heatmaps, steps = [], [], []
    with torch_threads(1):
        for i, frames in enumerate(episodes):
            if features is not None and hasattr(monitor.scorer, "score_features"):
                s, h = monitor.scorer.score_features(features[i], np.arange(len(frames)))
            else:
                s, h = monitor.score_episode(frames)
            scores.append(s)
            heatmaps.append(h)
            steps.append(np.minimum(np.arange(len(frames)), len(monitor.reference_frames) - 1))
    score = np.concatenate(scores)
    late = late_frames(monitor, [len(e) for e in episodes])
    flagged = (score > monitor.threshold) | late
    return Scored(score, np.concatenate(heatmaps), np.concatenate(steps), late, {"calibrated": flagged})


# -- the run ---------------------------------------------------------------------------------------------------------


def _choice(value: str, valid: Sequence[str], what: str) -> list[str]:
    if value == "all":
        return list(valid)
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise SystemExit(f"error: unknown {what} {', '.join(unknown) or value!r}; valid: all, {', '.join(valid)}")
    return names


def episode_group(item: dict) -> str:
    """Which kind of test episode (for the per-kind AUROC table)."""
    kind, family = item["kind"], item["family"]
    if kind == "nominal":
        return "nominal"
    if kind == "reset":
        return "reset: dynamics/noise (invisible)" if family in NON_VISUAL_FAMILIES else "reset: visual"
    return "event: failure-inducing" if family in FAILURE_EVENTS else "event: benign (light, distractor)"


class Timer:
    """Wall seconds per stage (summed over calls): `with timer("fit fidel"): ...`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started


def fit_monitor(method: str, task: str, frames: list[np.ndarray], features: list[torch.Tensor], encoder, alpha: float,
                autoencoder_epochs: int):  # fmt: skip
    """One method fitted on the fit split's frames (feature baselines reuse the shared features)."""
    from monitor.baselines import (
        AutoencoderConfig, AutoencoderMonitor, Calibration, PadimConfig, PadimMonitor, PatchCoreConfig,
        PatchCoreMonitor,
    )  # fmt: skip
    from monitor.fidel import FidelConfig, FidelMonitor

    calibration = Calibration(alpha=alpha)
    if method == "fidel":
        return FidelMonitor.fit(task, frames, FidelConfig(alpha=alpha))
    if method in ("padim", "padim_step"):
        padim = PadimConfig(time="global" if method == "padim" else "step", calibration=calibration)
        return PadimMonitor.fit(task, frames, padim, encoder, features)
    if method == "patchcore":
        return PatchCoreMonitor.fit(task, frames, PatchCoreConfig(calibration=calibration), encoder, features)
    return AutoencoderMonitor.fit(task, frames, AutoencoderConfig(epochs=autoencoder_epochs, calibration=calibration))


def primary_thresholding(method: str) -> str:
    """The decision a deployed monitor would use: CP-time&space for FIDeL, the calibrated threshold otherwise."""
    return "time_space" if method == "fidel" else "calibrated"


def reference_frames(method: str, monitor) -> np.ndarray:
    return monitor.memory.reference_frames if method == "fidel" else monitor.reference_frames


def filter_examples(scored: Scored, bounds: np.ndarray, decision: str, per_episode: int) -> np.ndarray:
    """Indices of up to `per_episode` frames per episode that a semantic filter would judge (`Scored.to_judge`),
    evenly spaced (long failed episodes would drown the rest)."""
    judged, picks = scored.to_judge(decision), []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        flagged = judged[(judged >= start) & (judged < stop)]
        if len(flagged) > per_episode:
            flagged = flagged[np.rint(np.linspace(0, len(flagged) - 1, per_episode)).astype(int)]
        picks.extend(flagged.tolist())
    return np.array(picks, dtype=int)


def flagged_examples(
    references: np.ndarray, scored: Scored, split: Split, decision: str, per_episode: int
) -> list[Example]:
    """Training examples for a trained semantic filter: up to `per_episode` frames per episode that the monitor
    flagged (thresholding `decision`), each with the monitor's reference frame and heatmap, labelled by the frame's
    simulator `failure` label."""
    from monitor.semantic import Example

    picks = filter_examples(scored, split.bounds, decision, per_episode)
    return [
        Example(references[scored.reference[i]], split.frames[i], scored.heatmap[i], bool(split.failure[i]))
        for i in picks
    ]


@dataclass
class Split:
    """One split's episodes, with frames and labels concatenated over episodes."""

    episodes: list[dict]
    frames: np.ndarray
    anomaly: np.ndarray
    failure: np.ndarray
    bounds: np.ndarray
    """Episode e's frames are [bounds[e], bounds[e+1])."""

    @classmethod
    def read(cls, path: Path, name: str) -> "Split":
        episodes = read_split(path, name)
        return cls(
            episodes, np.concatenate([e["frames"] for e in episodes]), np.concatenate([e["anomaly"] for e in episodes]),
            np.concatenate([e["failure"] for e in episodes]), np.cumsum([0] + [len(e["anomaly"]) for e in episodes]),
        )  # fmt: skip


def end_to_end(
    method: str, monitor, name: str, scored: dict, filter_split: Split, test: Split, encoder, config: EvaluateConfig,
    timer: Timer,
) -> tuple[np.ndarray | None, str]:
    """(is_failure per test frame, a note) with semantic filter `name`; None when the filter cannot be built."""
    from monitor.semantic import TrainedFilter, build_semantic_filter

    decision, references = primary_thresholding(method), reference_frames(method, monitor)
    s = scored[method, "test"]
    if name == "none":
        return s.decisions[decision].copy(), ""
    if name == "vlm":
        is_failure, where = s.late.copy(), s.to_judge(decision)
        vlm = build_semantic_filter("vlm", base_url=config.vlm_base_url, model=config.vlm_model)
        with timer(f"vlm filter {method}"):
            for i in where:
                is_failure[i] = vlm(monitor.instruction, references[s.reference[i]], test.frames[i], s.heatmap[i])[0]
        return is_failure, f"{LABELS[method]}: vlm filter ({config.vlm_model}) on {len(where)} flagged test frames"
    examples = flagged_examples(references, scored[method, "filter"], filter_split, decision, config.filter_examples)
    labels = np.array([e.is_failure for e in examples], dtype=bool)
    if len(examples) < 2 or labels.all() or not labels.any():
        return None, (
            f"{LABELS[method]}: no trained filter ({int(labels.sum())} failure / {int((~labels).sum())} benign flagged "
            "frames in the filter split)"
        )
    with timer(f"trained filter {method}"):
        trained = TrainedFilter.fit(examples, encoder=encoder)
        is_failure = trained_failures(trained, references, s, test.frames, decision)
    note = (
        f"{LABELS[method]}: trained filter on {len(examples)} flagged filter-split frames ({int(labels.sum())} "
        f"failure), train accuracy {100 * trained.stats['train_accuracy']:.0f}%"
    )
    return is_failure, note


def trained_failures(
    trained, references: np.ndarray, scored: Scored, frames: np.ndarray, decision: str
) -> np.ndarray:
    """is_failure per frame as a monitor with this trained filter decides: late frames are failures, the other
    frames flagged under `decision` are failures when the filter says so."""
    is_failure, where = scored.late.copy(), scored.to_judge(decision)
    for start in range(0, len(where), 256):
        chunk = where[start : start + 256]
        p = trained.predict_proba(references[scored.reference[chunk]], frames[chunk], scored.heatmap[chunk])
        is_failure[chunk] = p > trained.config.threshold
    return is_failure


def _pct(value: float) -> str:
    return "–" if np.isnan(value) else f"{100 * value:.1f}"


def main(argv: list[str] | None = None) -> None:
    from monitor.encoders import PatchEncoder

    config = parse_config(EvaluateConfig, argv)
    torch.set_num_threads(1)
    methods = _choice(config.methods, METHODS, "method(s)")
    filters = _choice(config.filters, FILTERS, "filter(s)")
    if "vlm" in filters and not config.vlm_base_url:
        filters.remove("vlm")
    try:
        path = require_dataset(simfails_path(config.data, config.task, config.policy), "simfails", config.task,
                               config.policy)  # fmt: skip
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    timer = Timer()
    with timer("read data"):
        splits = {name: Split.read(path, name) for name in ("fit", "filter", "test")}
    encoder = CachedEncoder(PatchEncoder())
    with timer("encode frames (shared)"):
        features = {
            name: [encoder.encode(split.frames[a:b]) for a, b in zip(split.bounds[:-1], split.bounds[1:])]
            for name, split in splits.items()
        }
    fit_frames = [e["frames"] for e in splits["fit"].episodes]
    monitors, scored = {}, {}
    for method in methods:
        with timer(f"fit {method}"):
            monitors[method] = fit_monitor(
                method, config.task, fit_frames, features["fit"], encoder.encoder, config.alpha,
                config.autoencoder_epochs,
            )  # fmt: skip
        for name in ("filter", "test"):
            with timer(f"score {method}"):
                if method == "fidel":
                    scored[method, name] = score_fidel(monitors[method], features[name])
                else:
                    episodes = [e["frames"] for e in splits[name].episodes]
                    scored[method, name] = score_baseline(monitors[method], episodes, features[name])
        print(f"{method}: fitted and scored", flush=True)

    test = splits["test"]
    raw_rows, threshold_rows, area = [], [], {}
    for method in methods:
        s = scored[method, "test"]
        area[method] = auroc(s.score, test.anomaly)
        f1 = f1_optimal(s.score, test.anomaly)[0]
        raw_rows.append([LABELS[method], _pct(area[method]), _pct(f1), _pct(auroc(s.score, test.failure))])
        for name, predicted in s.decisions.items():
            r = rates(predicted, test.anomaly)
            label = FIDEL_THRESHOLDS.get(name, f"calibrated (α={config.alpha})")
            values = [_pct(r[k]) for k in ("tpr", "tnr", "balanced", "weighted")]
            threshold_rows.append([LABELS[method], label, *values])

    group_of_frame = np.repeat([episode_group(e) for e in test.episodes], np.diff(test.bounds))
    group_rows = []
    for group in sorted(set(group_of_frame)):
        chosen = (group_of_frame == group) | (group_of_frame == "nominal")
        mine = group_of_frame == group
        episodes = sum(episode_group(e) == group for e in test.episodes)
        row = [group, str(episodes), f"{int(test.anomaly[mine].sum())}/{int(mine.sum())}"]
        group_rows.append(row + [_pct(auroc(scored[m, "test"].score[chosen], test.anomaly[chosen])) for m in methods])

    failed = np.array([e["outcome"] != "success" for e in test.episodes])
    episode_of_frame = np.repeat(np.arange(len(test.episodes)), np.diff(test.bounds))
    end_rows, notes, tnr = [], [], {}
    for method in methods:
        for name in filters:
            is_failure, note = end_to_end(
                method, monitors[method], name, scored, splits["filter"], test, encoder, config, timer
            )
            if note:
                notes.append(note)
            if is_failure is None:
                continue
            frame_rates = rates(is_failure, test.failure)
            tnr[method, name] = frame_rates["tnr"]
            flagged = np.zeros(len(test.episodes), bool)
            np.logical_or.at(flagged, episode_of_frame, is_failure)
            episode_rates = rates(flagged, failed)
            end_rows.append([
                LABELS[method], name, *(_pct(frame_rates[k]) for k in ("tpr", "tnr", "balanced")),
                *(_pct(episode_rates[k]) for k in ("tpr", "tnr", "balanced")),
            ])  # fmt: skip

    dataset_rows = []
    for name, split in splits.items():
        for kind in sorted({e["kind"] for e in split.episodes}):
            items = [e for e in split.episodes if e["kind"] == kind]
            dataset_rows.append([
                name, kind, str(len(items)), str(sum(e["outcome"] != "success" for e in items)),
                str(sum(len(e["anomaly"]) for e in items)), str(sum(int(e["anomaly"].sum()) for e in items)),
                str(sum(int(e["failure"].sum()) for e in items)),
            ])  # fmt: skip
    baselines = [m for m in methods if m != "fidel"]
    target_rows = []
    if "fidel" in methods:
        for m in baselines:
            margin = 100 * (area["fidel"] - area[m])
            verdict = "met" if margin >= 3 else "missed"
            target_rows.append([f"AUROC: FIDeL − {LABELS[m]}", f"{margin:+.1f} points", "≥ +3", verdict])
    for m in methods:
        if (m, "none") in tnr and (m, "trained") in tnr:
            change = 100 * (tnr[m, "trained"] - tnr[m, "none"])
            target_rows.append([f"frame TNR (failure): {LABELS[m]}, trained − none", f"{change:+.1f} points", "> 0",
                                "met" if change > 0 else "missed"])  # fmt: skip
    command = "python -m monitor.evaluate " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [
        f"# Runtime monitors on SimFails-{config.task} ({config.policy})", "",
        "Generated by the commands below (MUJOCO_GL=egl, on a 2-core CPU shared with other jobs):", "",
        "```", config.command or f"python -m monitor.dataset task={config.task}", command.strip(), "```", "",
        f"Data: `{path}`. Every method learns and calibrates on the `fit` split only, at α = {config.alpha}: FIDeL's "
        "conformal bands, and for the baselines the conformal quantile of the calibration episodes' maximum scores "
        "(same episodes: FIDeL's memory Y to learn from, its E_A ∪ E_B to calibrate). Trained semantic filters learn "
        "on the `filter` split. Every number below is on the `test` split, frames pooled over episodes; nothing was "
        "tuned on it. Label rules: monitor/dataset.py. Method details: monitor/baselines/.", "",
        "## Dataset", "",
        markdown_table(
            ["split", "kind", "episodes", "failed", "frames", "anomaly frames", "failure frames"], dataset_rows
        ), "",
        "## Targets", "", markdown_table(["quantity", "measured", "target", ""], target_rows), "",
        "## Anomaly detection, raw frame scores", "",
        markdown_table(["method", "AUROC (anomaly)", "F1@optimal", "AUROC (failure)"], raw_rows), "",
        "## Anomaly detection, thresholded (is_anomaly vs anomaly labels)", "",
        "Weighted accuracy = β·TPR + (1−β)·TNR with β the share of normal frames.", "",
        markdown_table(["method", "thresholding", "TPR", "TNR", "balanced acc", "weighted acc"], threshold_rows), "",
        "## AUROC by kind of test episode (its frames and the nominal test episodes' frames)", "",
        markdown_table(["episodes", "n", "anomalous frames", *(LABELS[m] for m in methods)], group_rows), "",
        "## End-to-end failure detection (is_failure vs failure labels)", "",
        "FIDeL decides anomalies with CP-time&space, the baselines with their calibrated threshold; the filter then "
        "judges each anomalous frame, except late ones (past every calibration episode's end), which are failures. "
        "Episode level: flagged = any frame judged a failure, truth = the episode failed."
        + ("" if "vlm" in filters else " The vlm filter was not run (no endpoint: set vlm_base_url)."), "",
        markdown_table(["method", "filter", "frame TPR", "frame TNR", "frame bal. acc", "episode TPR", "episode TNR",
                "episode bal. acc"], end_rows), "",
        *(f"- {note}" for note in notes), "",
        "## Wall time (s)", "",
        markdown_table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in timer.seconds.items()]), "",
        f"Load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end; torch on 1 thread.", "",
    ]  # fmt: skip
    out = Path(config.out or f"experiments/results/monitor_{config.task}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines[lines.index("## Targets") :]))
    print(f"wrote {out}")
    best = max((area[m] for m in baselines), default=float("nan"))
    fidel = area.get("fidel", float("nan"))
    print(f"fidel_auroc: {100 * fidel:.1f}  best_baseline_auroc: {100 * best:.1f}  margin: {100 * (fidel - best):.1f}")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
