"""`python -m monitor.train_filter task=lift`: the trained semantic filter a policy's monitor ships with.

The filter decides which anomalies the FIDeL monitor flags are task failures
(monitor.semantic.trained.TrainedFilter). It is trained on what the search's own monitor sees: the monitor
`monitor.build.build_monitor` fits for the policy (same nominal seeds and default settings, so the cached copy is
shared), run online over the SimFails `filter` split
(`python -m monitor.dataset`); up to `per_episode` flagged frames per episode become examples, labelled by the
simulator's per-frame `failure` label. The `test` split, when present, gives a held-out check of the filter on the
frames the monitor flags there.

The folder it writes (default `monitor/filters/<policy>`) is what `monitor.semantic=auto` (the search's default)
and `monitor.semantic=trained` without a path load for that policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from envs.cli import parse_config, shown_path
from monitor.build import NOMINAL_EPISODES, NOMINAL_SEED, build_monitor
from monitor.dataset import simfails_path

SHIPPED_FILTERS = Path(__file__).resolve().parent / "filters"
"""Trained semantic filters that ship with the package, one folder per policy."""


def shipped_filter(policy: str) -> Path | None:
    """The shipped trained filter for `policy` (a shipped policy's name), or None."""
    path = SHIPPED_FILTERS / Path(policy).name
    return path if (path / "semantic_filter.json").is_file() else None


def shipped_filter_names() -> list[str]:
    return sorted(p.name for p in SHIPPED_FILTERS.glob("*") if (p / "semantic_filter.json").is_file())


@dataclass
class TrainFilterConfig:
    task: str = "lift"
    policy: str = "lift_bc_image"
    """The policy under test: its monitor is fitted (or loaded from the cache) as the search does."""
    data: str = ""
    """SimFails HDF5 file; empty = monitor.dataset's default path for task and policy."""
    out: str = ""
    """Folder to write; empty = monitor/filters/<policy> (the shipped location)."""
    per_episode: int = 12
    """At most this many flagged frames per filter-split episode, evenly spaced."""
    monitor: str = ""
    """A saved FIDeL monitor folder (FidelMonitor.save); empty = the search's monitor for task and policy."""
    episodes: int = NOMINAL_EPISODES
    """Successful nominal rollouts the monitor is fitted on (the search's monitor.episodes)."""
    nominal_seed: int = NOMINAL_SEED
    """Their first seed (the search's monitor.nominal_seed)."""


def main(argv: list[str] | None = None) -> None:
    from monitor.dataset_kinds import require_dataset
    from monitor.fidel import FidelMonitor
    from monitor.metrics import rates
    from monitor.scoring import SimFailsSplit, flagged_examples, monitor_failures, score_fidel, trained_verdicts
    from monitor.semantic.trained import TrainedFilter

    config = parse_config(TrainFilterConfig, argv)
    torch.set_num_threads(1)
    try:  # the data first: a wrong file fails before minutes of fitting
        path = require_dataset(
            simfails_path(config.data, config.task, config.policy), "simfails", config.task, config.policy
        )
        if config.monitor:
            monitor = FidelMonitor.load(config.monitor, task=config.task)
        else:
            monitor = build_monitor(config.task, config.policy, config.episodes, config.nominal_seed)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    references, decision = monitor.memory.reference_frames, monitor.config.thresholding

    def scored(split: SimFailsSplit):
        return score_fidel(monitor, [monitor.encoder.encode(frames) for frames in split.episode_frames()])

    train = SimFailsSplit.read(path, "filter")
    examples = flagged_examples(references, scored(train), train, decision, config.per_episode)
    trained = TrainedFilter.fit(examples, encoder=monitor.encoder)
    out = trained.save(config.out or SHIPPED_FILTERS / Path(config.policy).name)
    failures = sum(e.is_failure for e in examples)
    print(
        f"trained on {len(examples)} flagged filter-split frames ({failures} failure, {len(examples) - failures} "
        f"benign); train accuracy {trained.stats['train_accuracy']:.3f}"
    )
    print(f"wrote {shown_path(out)}")

    test = SimFailsSplit.read(path, "test")
    s = scored(test)
    verdicts = trained_verdicts(trained, references, s, test.frames, decision)

    def tpr_tnr(is_failure: np.ndarray) -> str:
        r = rates(is_failure, test.failure)
        return f"{r['tpr']:.3f} / {r['tnr']:.3f}"

    flagged_count, late = int(s.is_anomaly(decision).sum()), int(s.late.sum())
    print(
        f"test split: {flagged_count} of {len(test.failure)} frames flagged ({late} late, the filter judged the "
        f"rest); frame failure detection TPR / TNR without the filter {tpr_tnr(s.is_anomaly(decision))}, with it "
        f"{tpr_tnr(monitor_failures(s, verdicts))}; without the overrun rule (the filter also judges late frames): "
        f"without the filter {tpr_tnr(s.is_anomaly(decision, overrun=False))}, with it "
        f"{tpr_tnr(monitor_failures(s, verdicts, overrun=False))}"
    )


if __name__ == "__main__":
    main()
