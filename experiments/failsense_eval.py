"""`python -m experiments.failsense_eval data=data/smf_stack.hdf5`: I-FailSense on an SMF file, over seeds, beside the
baseline that sees no instruction.

For each seed: `monitor.failsense.train` with the instruction and with it blanked (`blind=true`), then
`monitor.failsense.evaluate` on the test split (held-out colour pairs). Reports, as mean ± std over seeds, every
predictor of the ablation (stage-1 head alone, each FS block, the blocks' majority, the weighted vote) on SMF pairs,
the share of control failures (never trained on) detected, and the vote's false alarms on aligned pairs. A seed whose
checkpoint and evaluation exist is reused, so an interrupted run resumes. Writes `<out>.md` and `.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from envs.cli import command_line, parse_config
from envs.markdown import markdown_table
from monitor.failsense import evaluate, train

VERDICT = "vote (blocks + head)"


@dataclass
class FailSenseEvalConfig:
    data: str = "data/smf_stack.hdf5"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    runs: str = "runs/failsense_eval"
    """Where each seed's checkpoints go."""
    stage1_epochs: int = 12
    stage2_epochs: int = 12
    out: str = "experiments/results/failsense_smf_stack"


def run_one(config: FailSenseEvalConfig, *, seed: int, blind: bool) -> dict:
    folder = Path(config.runs) / f"{'blind' if blind else 'full'}_seed{seed}"
    result = folder / "evaluation_test.json"
    if not result.is_file():
        train.train(
            train.TrainConfig(
                data=config.data,
                out=str(folder),
                seed=seed,
                blind=blind,
                stage1_epochs=config.stage1_epochs,
                stage2_epochs=config.stage2_epochs,
            )
        )
        measured = evaluate.evaluate(evaluate.EvaluateConfig(checkpoint=str(folder), data=config.data))
        result.write_text(json.dumps(measured, indent=2) + "\n")
    return json.loads(result.read_text())


def spread(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def summary_rows(results: list[dict]) -> list[list[str]]:
    rows = []
    for name in results[0]["smf"]:
        metrics = [spread([r["smf"][name][k] for r in results]) for k in ("accuracy", "precision", "recall", "f1")]
        rows.append([name, *metrics, spread([r["control_detection"][name] for r in results])])
    return rows


def report(config: FailSenseEvalConfig, full: list[dict], blind: list[dict]) -> str:
    header = ["predictor", "accuracy", "precision", "recall", "F1", "control failures detected"]
    cards = [json.loads((Path(config.runs) / f"full_seed{s}" / "failsense.json").read_text()) for s in config.seeds]
    return "\n".join(
        [
            f"# I-FailSense on {config.data}",
            "",
            f"Command: `{command_line('experiments.failsense_eval', config)}`; dataset card: "
            f"`{Path(config.data).with_suffix('.md')}`. Seeds {config.seeds}; mean ± std over seeds; test split "
            f"(colour pairs never seen in training), {full[0]['smf'][VERDICT]['n']} SMF pairs and "
            f"{full[0]['control_failures']} control failures (drop, missed; never trained on). Training: "
            f"{cards[0]['train_pairs']} pairs, {np.mean([c['wall_time_s'] for c in cards]):.0f} s per model on "
            "this machine.",
            "",
            "## With the instruction",
            "",
            markdown_table(header, summary_rows(full)),
            "",
            f"False alarms of the vote on aligned pairs: {spread([r['false_alarm_on_aligned'] for r in full])}.",
            "",
            "## Baseline: the same model and training with every instruction blanked",
            "",
            markdown_table(header, summary_rows(blind)),
            "",
            f"False alarms of the vote on aligned pairs: {spread([r['false_alarm_on_aligned'] for r in blind])}.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    config = parse_config(FailSenseEvalConfig, argv)
    full, blind = [], []
    for seed in config.seeds:  # seed by seed, so a stopped run has whole pairs to resume from
        full.append(run_one(config, seed=seed, blind=False))
        blind.append(run_one(config, seed=seed, blind=True))
    text = report(config, full, blind)
    Path(config.out).parent.mkdir(parents=True, exist_ok=True)
    Path(config.out).with_suffix(".md").write_text(text)
    document = {"command": command_line("experiments.failsense_eval", config), "full": full, "blind": blind}
    Path(config.out).with_suffix(".json").write_text(json.dumps(document, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
