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
  class counts more), with and without the overrun rule;
- end-to-end failure detection: `is_failure` (an anomaly the semantic filter calls a failure) against the `failure`
  labels, frame by frame and per episode (an episode is flagged when any frame is), for each filter: `none` (every
  anomaly is a failure), `trained` (monitor.semantic.trained.TrainedFilter fitted on the method's own flagged
  frames of the filter split, labelled by their `failure` label), `vlm` (only when `vlm_base_url` is set); each
  with the overrun rule (frames past every calibration episode's end are failures) and without it (the filter
  alone decides).
Also AUROC per kind of test episode (each against the nominal test episodes' frames), and the wall time of each stage.
The tables go to `experiments/results/monitor_<task>.md` with the commands that made them.

The scoring itself lives in monitor/scoring.py; this module computes (`evaluate`), turns results into table rows
and renders the markdown (`render`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from envs.cli import parse_config
from envs.markdown import markdown_table
from monitor import held_out
from monitor.dataset import dataset_design, simfails_path
from monitor.dataset_kinds import require_dataset
from monitor.fidel import FidelConfig
from monitor.metrics import auroc, f1_optimal, rates
from monitor.scoring import (
    FIDEL_THRESHOLDS,
    LABELS,
    METHODS,
    CachedEncoder,
    Scored,
    SimFailsSplit,
    Timer,
    episode_group,
    fit_monitor,
    flagged_examples,
    monitor_failures,
    primary_thresholding,
    reference_frames,
    score_split,
    trained_verdicts,
)

FILTERS = ("none", "trained", "vlm")
OVERRUN = {True: "on", False: "off"}
"""The overrun rule's two settings as the end-to-end table names them."""


@dataclass
class MonitorEvaluateConfig:
    task: str = "lift"
    policy: str = "lift_bc_image"
    """The policy whose SimFails file is read (it names the default file)."""
    design: str = "seeds"
    """Which SimFails file is meant when `data` is empty: seeds (SimFails) or families (SimFails v2)."""
    data: str = ""
    """SimFails HDF5 file; empty = monitor.dataset's default path for task, policy and design."""
    out: str = ""
    """Markdown results; empty = experiments/results/monitor_<task>.md (SimFails v2: monitor_v2_<task>.md)."""
    alpha: float = 0.1
    """Every method's false-alarm budget: at most this share of nominal episodes raises any alarm."""
    methods: str = "all"
    """all, or comma-separated: fidel, padim, padim_step, patchcore, autoencoder, logpzo (reads `policy`'s encoder)."""
    filters: str = "none,trained,vlm"
    """Semantic filters for the end-to-end table (vlm runs only when vlm_base_url is set)."""
    filter_examples: int = 12
    """Trained filter: at most this many flagged frames per filter-split episode, evenly spaced."""
    autoencoder_epochs: int = 30
    """Training epochs of the autoencoder baseline."""
    fidel: FidelConfig = field(default_factory=FidelConfig)
    """FIDeL's settings (e.g. fidel.time_anchor=progress); its alpha is `alpha`."""
    vlm_base_url: str = ""
    """OpenAI-compatible endpoint for the vlm filter (e.g. http://localhost:8000/v1); empty = skip it."""
    vlm_model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    command: str = ""
    """How the dataset was made, for the report (empty = `python -m monitor.dataset task=<task>`)."""


@dataclass
class FilterResult:
    """One semantic filter on one method's flagged test frames."""

    method: str
    name: str
    verdicts: np.ndarray
    """(N,) bool per test frame: the filter's failure verdict where the method flagged an anomaly, else False."""


@dataclass
class Evaluation:
    """Everything `evaluate` measured, ready to be turned into rows."""

    config: MonitorEvaluateConfig
    path: Path
    methods: list[str]
    filters: list[str]
    splits: dict[str, SimFailsSplit]
    scored: dict[tuple[str, str], Scored]
    """(method, split name) → readings."""
    results: list[FilterResult]
    notes: list[str]
    timer: Timer
    area: dict[str, float] = field(default_factory=dict)
    """method → frame AUROC against the test split's anomaly labels."""
    design: str = "seeds"
    """The file's design: seeds, or families (SimFails v2: held-out families in test, monitor/held_out.py)."""


def _choice(value: str, valid: Sequence[str], what: str) -> list[str]:
    if value == "all":
        return list(valid)
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise SystemExit(f"error: unknown {what} {', '.join(unknown) or value!r}; valid: all, {', '.join(valid)}")
    return names


# -- compute ---------------------------------------------------------------------------------------------------------


def evaluate(config: MonitorEvaluateConfig) -> Evaluation:
    """Fits every method on `fit`, scores `filter` and `test`, runs every semantic filter on the test frames."""
    from monitor.encoders import PatchEncoder

    methods = _choice(config.methods, METHODS, "method(s)")
    filters = _choice(config.filters, FILTERS, "filter(s)")
    if "vlm" in filters and not config.vlm_base_url:
        filters.remove("vlm")
    try:
        path = require_dataset(
            simfails_path(config.data, config.task, config.policy, config.design),
            "simfails",
            config.task,
            config.policy,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    timer = Timer()
    with timer("read data"):
        splits = {name: SimFailsSplit.read(path, name) for name in ("fit", "filter", "test")}
    encoder = CachedEncoder(PatchEncoder())
    with timer("encode frames (shared)"):
        features = {name: [encoder.encode(f) for f in split.episode_frames()] for name, split in splits.items()}
    monitors, scored = {}, {}
    for method in methods:
        with timer(f"fit {method}"):
            monitors[method] = fit_monitor(
                method=method,
                task=config.task,
                frames=splits["fit"].episode_frames(),
                features=features["fit"],
                encoder=encoder.encoder,
                alpha=config.alpha,
                autoencoder_epochs=config.autoencoder_epochs,
                policy=config.policy,
                fidel=config.fidel,
            )
        for name in ("filter", "test"):
            with timer(f"score {method}"):
                scored[method, name] = score_split(method, monitors[method], splits[name], features[name])
        print(f"{method}: fitted and scored", flush=True)

    evaluation = Evaluation(
        design=dataset_design(path),
        config=config,
        path=path,
        methods=methods,
        filters=filters,
        splits=splits,
        scored=scored,
        results=[],
        notes=[],
        timer=timer,
    )
    test = splits["test"]
    for method in methods:
        evaluation.area[method] = auroc(scored[method, "test"].score, test.anomaly)
        for name in filters:
            verdicts, note = filter_verdicts(evaluation, method, monitors[method], name, encoder)
            if note:
                evaluation.notes.append(note)
            if verdicts is not None:
                evaluation.results.append(FilterResult(method, name, verdicts))
    return evaluation


def filter_verdicts(
    evaluation: Evaluation, method: str, monitor, name: str, encoder: CachedEncoder
) -> tuple[np.ndarray | None, str]:
    """(semantic filter `name`'s verdict per test frame, a note); None when the filter cannot be built."""
    from monitor.semantic import build_semantic_filter
    from monitor.semantic.trained import TrainedFilter

    config, timer = evaluation.config, evaluation.timer
    decision, references = primary_thresholding(method), reference_frames(method, monitor)
    s, test = evaluation.scored[method, "test"], evaluation.splits["test"]
    if name == "none":
        return s.flags[decision].copy(), ""
    if name == "vlm":
        verdicts, where = np.zeros_like(s.late), np.flatnonzero(s.flags[decision])
        vlm = build_semantic_filter("vlm", base_url=config.vlm_base_url, model=config.vlm_model)
        with timer(f"vlm filter {method}"):
            for i in where:
                verdicts[i] = vlm(monitor.instruction, references[s.reference[i]], test.frames[i], s.heatmap[i])[0]
        return verdicts, f"{LABELS[method]}: vlm filter ({config.vlm_model}) on {len(where)} flagged test frames"
    filter_split = evaluation.splits["filter"]
    examples = flagged_examples(
        references, evaluation.scored[method, "filter"], filter_split, decision, config.filter_examples
    )
    labels = np.array([e.is_failure for e in examples], dtype=bool)
    if len(examples) < 2 or labels.all() or not labels.any():
        return None, (
            f"{LABELS[method]}: no trained filter ({int(labels.sum())} failure / {int((~labels).sum())} benign flagged "
            "frames in the filter split)"
        )
    with timer(f"trained filter {method}"):
        trained = TrainedFilter.fit(examples, encoder=encoder)
        verdicts = trained_verdicts(trained, references, s, test.frames, decision)
    note = (
        f"{LABELS[method]}: trained filter on {len(examples)} flagged filter-split frames ({int(labels.sum())} "
        f"failure), train accuracy {100 * trained.stats['train_accuracy']:.0f}%"
    )
    return verdicts, note


# -- rows ------------------------------------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return "–" if np.isnan(value) else f"{100 * value:.1f}"


def dataset_rows(splits: dict[str, SimFailsSplit]) -> list[list[str]]:
    rows = []
    for name, split in splits.items():
        for kind in sorted({e["kind"] for e in split.episodes}):
            items = [e for e in split.episodes if e["kind"] == kind]
            rows.append(
                [
                    name,
                    kind,
                    str(len(items)),
                    str(sum(e["outcome"] != "success" for e in items)),
                    str(sum(len(e["anomaly"]) for e in items)),
                    str(sum(int(e["anomaly"].sum()) for e in items)),
                    str(sum(int(e["failure"].sum()) for e in items)),
                ]
            )
    return rows


def raw_rows(evaluation: Evaluation) -> list[list[str]]:
    test = evaluation.splits["test"]
    rows = []
    for method in evaluation.methods:
        s = evaluation.scored[method, "test"]
        f1 = f1_optimal(s.score, test.anomaly)[0]
        rows.append([LABELS[method], _pct(evaluation.area[method]), _pct(f1), _pct(auroc(s.score, test.failure))])
    return rows


def threshold_rows(evaluation: Evaluation) -> list[list[str]]:
    test = evaluation.splits["test"]
    rows = []
    for method in evaluation.methods:
        s = evaluation.scored[method, "test"]
        for name in s.flags:
            with_rule, without = rates(s.is_anomaly(name), test.anomaly), rates(s.is_anomaly(name, False), test.anomaly)
            label = FIDEL_THRESHOLDS.get(name, f"calibrated (α={evaluation.config.alpha})")
            values = [_pct(with_rule[k]) for k in ("tpr", "tnr", "balanced", "weighted")]
            rows.append([LABELS[method], label, *values, _pct(without["tpr"]), _pct(without["tnr"])])
    return rows


def group_rows(evaluation: Evaluation) -> list[list[str]]:
    test = evaluation.splits["test"]
    group_of_frame = np.repeat([episode_group(e) for e in test.episodes], np.diff(test.bounds))
    rows = []
    for group in sorted(set(group_of_frame)):
        chosen = (group_of_frame == group) | (group_of_frame == "nominal")
        mine = group_of_frame == group
        episodes = sum(episode_group(e) == group for e in test.episodes)
        row = [group, str(episodes), f"{int(test.anomaly[mine].sum())}/{int(mine.sum())}"]
        scores = [evaluation.scored[m, "test"].score for m in evaluation.methods]
        rows.append(row + [_pct(auroc(score[chosen], test.anomaly[chosen])) for score in scores])
    return rows


def end_to_end_rates(evaluation: Evaluation) -> dict[tuple[str, str, bool], tuple[dict, dict]]:
    """(method, filter, overrun rule on) → (frame rates, episode rates) of is_failure against the failure labels."""
    test = evaluation.splits["test"]
    failed = np.array([e["outcome"] != "success" for e in test.episodes])
    episode_of_frame = test.episode_of_frame()
    out = {}
    for result in evaluation.results:
        for overrun in OVERRUN:
            is_failure = monitor_failures(evaluation.scored[result.method, "test"], result.verdicts, overrun)
            flagged = np.zeros(len(test.episodes), bool)
            np.logical_or.at(flagged, episode_of_frame, is_failure)
            out[result.method, result.name, overrun] = rates(is_failure, test.failure), rates(flagged, failed)
    return out


def end_to_end_rows(measured: dict[tuple[str, str, bool], tuple[dict, dict]]) -> list[list[str]]:
    rows = []
    for (method, name, overrun), (frame, episode) in measured.items():
        rows.append(
            [
                LABELS[method],
                name,
                OVERRUN[overrun],
                *(_pct(frame[k]) for k in ("tpr", "tnr", "balanced")),
                *(_pct(episode[k]) for k in ("tpr", "tnr", "balanced")),
            ]
        )
    return rows


def target_rows(evaluation: Evaluation, measured: dict[tuple[str, str, bool], tuple[dict, dict]]) -> list[list[str]]:
    """FIDeL's AUROC margin over each baseline (target ≥ +3 points) and what the trained filter adds to frame TNR."""
    area, rows = evaluation.area, []
    if "fidel" in evaluation.methods:
        for m in evaluation.methods:
            if m != "fidel":
                margin = 100 * (area["fidel"] - area[m])
                verdict = "met" if margin >= 3 else "missed"
                rows.append([f"AUROC: FIDeL − {LABELS[m]}", f"{margin:+.1f} points", "≥ +3", verdict])
    for m in evaluation.methods:
        if (m, "none", True) in measured and (m, "trained", True) in measured:
            change = 100 * (measured[m, "trained", True][0]["tnr"] - measured[m, "none", True][0]["tnr"])
            rows.append(
                [
                    f"frame TNR (failure): {LABELS[m]}, trained − none",
                    f"{change:+.1f} points",
                    "> 0",
                    "met" if change > 0 else "missed",
                ]
            )
    return rows


# -- render ----------------------------------------------------------------------------------------------------------


def render(evaluation: Evaluation, command: str) -> list[str]:
    """The markdown result file, line by line."""
    config, methods = evaluation.config, evaluation.methods
    measured = end_to_end_rates(evaluation)
    seconds = [[k, f"{v:.1f}"] for k, v in evaluation.timer.seconds.items()]
    name = "SimFails v2 (held-out families)" if evaluation.design == "families" else "SimFails"
    held_out_measured = held_out.verdicts(evaluation) if evaluation.design == "families" else []
    return [
        f"# Runtime monitors on {name}-{config.task} ({config.policy})",
        "",
        "Generated by the commands below (MUJOCO_GL=egl, on a 2-core CPU shared with other jobs):",
        "",
        "```",
        config.command or f"python -m monitor.dataset task={config.task}",
        command.strip(),
        "```",
        "",
        f"Data: `{evaluation.path}`. Every method learns and calibrates on the `fit` split only, at α = "
        f"{config.alpha}: FIDeL's conformal bands, and for the baselines the conformal quantile of the calibration "
        "episodes' maximum scores (same episodes: FIDeL's memory Y to learn from, its E_A ∪ E_B to calibrate). "
        "Trained semantic filters learn on the `filter` split. Every number below is on the `test` split, frames "
        "pooled over episodes; nothing was tuned on it. Label rules: monitor/dataset.py. Method details: "
        "monitor/baselines/. The overrun rule: frames past the end of every calibration episode are anomalies and "
        "failures whatever they show (`monitor.overrun`); every recall below is given with and without it.",
        "",
        "## Dataset",
        "",
        markdown_table(
            ["split", "kind", "episodes", "failed", "frames", "anomaly frames", "failure frames"],
            dataset_rows(evaluation.splits),
        ),
        "",
        "## Targets",
        "",
        markdown_table(
            ["quantity", "measured", "target", ""],
            target_rows(evaluation, measured)
            + (held_out.target_rows(evaluation, held_out_measured) if evaluation.design == "families" else []),
        ),
        "",
        "## Anomaly detection, raw frame scores",
        "",
        markdown_table(["method", "AUROC (anomaly)", "F1@optimal", "AUROC (failure)"], raw_rows(evaluation)),
        "",
        "## Anomaly detection, thresholded (is_anomaly vs anomaly labels)",
        "",
        "Weighted accuracy = β·TPR + (1−β)·TNR with β the share of normal frames. The last two columns drop the "
        "overrun rule.",
        "",
        markdown_table(
            [
                "method",
                "thresholding",
                "TPR",
                "TNR",
                "balanced acc",
                "weighted acc",
                "TPR without overrun",
                "TNR without overrun",
            ],
            threshold_rows(evaluation),
        ),
        "",
        "## AUROC by kind of test episode (its frames and the nominal test episodes' frames)",
        "",
        markdown_table(["episodes", "n", "anomalous frames", *(LABELS[m] for m in methods)], group_rows(evaluation)),
        "",
        "## End-to-end failure detection (is_failure vs failure labels)",
        "",
        "FIDeL decides anomalies with CP-time&space, the baselines with their calibrated threshold; the filter then "
        "judges each anomalous frame. Overrun on: late frames (past every calibration episode's end) are failures "
        "whatever the filter says; off: the filter judges them like any other anomalous frame. Episode level: "
        "flagged = any frame judged a failure, truth = the episode failed."
        + ("" if "vlm" in evaluation.filters else " The vlm filter was not run (no endpoint: set vlm_base_url)."),
        "",
        markdown_table(
            [
                "method",
                "filter",
                "overrun rule",
                "frame TPR",
                "frame TNR",
                "frame bal. acc",
                "episode TPR",
                "episode TNR",
                "episode bal. acc",
            ],
            end_to_end_rows(measured),
        ),
        "",
        *(f"- {note}" for note in evaluation.notes),
        "",
        *(held_out_sections(evaluation, held_out_measured) if evaluation.design == "families" else []),
        "## Wall time (s)",
        "",
        markdown_table(["stage", "seconds"], seconds),
        "",
        f"Load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end; torch on 1 thread.",
        "",
    ]


def held_out_sections(evaluation: Evaluation, measured: list[held_out.Verdicts]) -> list[str]:
    """SimFails v2's own tables (monitor/held_out.py): per-group AUROC, false alarms, lead times."""
    alarms, groups = held_out.false_alarm_rows(evaluation, measured)
    return [
        "## Held-out families: failure AUROC per group and family of episodes",
        "",
        "Every failure frame of the test split (positives) against the group's frames that are not failure frames "
        "(negatives), raw scores: does a benign variation score below real failures?",
        "",
        markdown_table(
            ["group", "family", "episodes", "negative frames", *(LABELS[m] for m in evaluation.methods)],
            held_out.group_auroc_rows(evaluation),
        ),
        "",
        "## Held-out families: false alarms and episode TPR",
        "",
        "Share of successful episodes with any failure verdict, per group of benign episodes and over all of them; "
        "episode TPR = share of failed test episodes with a failure verdict.",
        "",
        markdown_table(
            [
                "method",
                "filter",
                "overrun rule",
                *(f"false alarms: {g}" for g in groups),
                "false alarms: all benign",
                "episode TPR",
            ],
            alarms,
        ),
        "",
        "## Held-out failure events: detection lead time (frames)",
        "",
        "Per failed episode of a held-out failure event: frames from the first failure verdict to the labelled "
        "failure onset (the event's first visible frame) and to the step the simulator found the object lost (off "
        "the table; episodes that ran out of time have none); positive = the verdict came first. Medians over "
        "detected episodes.",
        "",
        markdown_table(
            [
                "method",
                "filter",
                "overrun rule",
                "family",
                "detected",
                "median lead to onset",
                "object lost",
                "median lead to object lost",
            ],
            held_out.lead_rows(evaluation, measured),
        ),
        "",
    ]


def main(argv: list[str] | None = None) -> None:
    config = parse_config(MonitorEvaluateConfig, argv)
    torch.set_num_threads(1)
    evaluation = evaluate(config)
    command = "python -m monitor.evaluate " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = render(evaluation, command)
    stem = "monitor_v2" if evaluation.design == "families" else "monitor"
    out = Path(config.out or f"experiments/results/{stem}_{config.task}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines[lines.index("## Targets") :]))
    print(f"wrote {out}")
    area = evaluation.area
    best = max((area[m] for m in evaluation.methods if m != "fidel"), default=float("nan"))
    fidel = area.get("fidel", float("nan"))
    print(f"fidel_auroc: {100 * fidel:.1f}  best_baseline_auroc: {100 * best:.1f}  margin: {100 * (fidel - best):.1f}")


if __name__ == "__main__":
    main()
