"""`python -m monitor.failsense.evaluate checkpoint=runs/failsense/smf_stack data=data/smf_stack.hdf5`: how well a
trained I-FailSense classifier detects failures, with the paper's ablation.

On the `split`'s aligned and misaligned pairs: accuracy, precision, recall and F1 (failure = positive) of the
stage-1 head alone, of each FS block (the last layer's block is "last layer only"), of the blocks' majority, and of
the weighted vote of blocks and head (the classifier's verdict). On control failures (`drop`, `missed`: never
trained on, so every split counts): the share detected; on the split's aligned pairs: the false-alarm rate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from envs.cli import parse_config
from monitor.failsense.blocks import weighted_vote
from monitor.failsense.dataset import SPLITS, Examples, read_examples
from monitor.failsense.model import FailSense

CONTROL_KINDS = ("drop", "missed")


@dataclass
class EvaluateConfig:
    checkpoint: str = "runs/failsense/smf_stack"
    data: str = "data/smf_stack.hdf5"
    split: str = "test"
    out: str = ""
    """Where to write the metrics as JSON (default <checkpoint>/evaluation_<split>.json)."""

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")


def binary_metrics(predicted: np.ndarray, label: np.ndarray) -> dict[str, float]:
    precision, recall, f1, _ = precision_recall_fscore_support(
        label, predicted, average="binary", pos_label=1, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(label, predicted)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "n": len(label),
    }


def votes(model: FailSense, features: torch.Tensor, examples: Examples, index: np.ndarray, *, blind: bool) -> dict:
    """Each predictor's 0/1 failure verdict on the examples at `index`."""
    head, blocks = [], []
    for start in range(0, len(index), 64):
        chunk = index[start : start + 64]
        texts = ["" if blind else examples.instruction[i] for i in chunk]
        out = model.predict(features[examples.episode[chunk]], texts)
        head.append(out["head"] > 0.5)
        blocks.append(out["blocks"] > 0.5)
    head_votes = np.concatenate(head).astype(int) if head else np.zeros(0, int)
    block_votes = np.concatenate(blocks).astype(int) if blocks else np.zeros((0, len(model.blocks)), int)
    config = model.config
    verdict = weighted_vote(
        torch.from_numpy(block_votes),
        torch.from_numpy(head_votes),
        block_weight=config.block_weight,
        head_weight=config.head_weight,
    ).numpy()
    found = {"stage-1 head": head_votes, "vote (blocks + head)": verdict}
    found["blocks' majority"] = (block_votes.mean(axis=1) > 0.5).astype(int)
    for k, layer in enumerate(model.layer_ids):
        found[f"FS block, layer {layer}"] = block_votes[:, k]
    return found


def evaluate(config: EvaluateConfig) -> dict:
    model = FailSense.load(config.checkpoint)
    card = json.loads((Path(config.checkpoint) / "failsense.json").read_text())
    blind = bool(card.get("blind", False))
    examples = read_examples(config.data)
    features = model.features(examples.images)
    smf = examples.select(splits=(config.split,), kinds=("aligned", "misaligned"))
    control = examples.select(splits=SPLITS, kinds=CONTROL_KINDS)
    aligned = examples.select(splits=(config.split,), kinds=("aligned",))
    on_smf = votes(model, features, examples, smf, blind=blind)
    verdict = "vote (blocks + head)"
    return {
        "checkpoint": config.checkpoint,
        "data": config.data,
        "split": config.split,
        "blind": blind,
        "smf": {name: binary_metrics(v, examples.label[smf]) for name, v in on_smf.items()},
        "control_detection": {
            name: float(v.mean()) if len(v) else float("nan")
            for name, v in votes(model, features, examples, control, blind=blind).items()
        },
        "control_failures": len(control),
        "false_alarm_on_aligned": float(votes(model, features, examples, aligned, blind=blind)[verdict].mean()),
    }


def print_evaluation(result: dict, console: Console) -> None:
    table = Table(title=f"I-FailSense on {result['data']} ({result['split']})")
    for column in ("predictor", "accuracy", "precision", "recall", "F1", "control failures detected"):
        table.add_column(column)
    for name, m in result["smf"].items():
        detected = result["control_detection"][name]
        row = [f"{m[k]:.3f}" for k in ("accuracy", "precision", "recall", "f1")]
        table.add_row(name, *row, f"{detected:.2f}")
    console.print(table)
    console.print(
        f"{result['smf']['stage-1 head']['n']} SMF pairs, {result['control_failures']} control failures; "
        f"false alarms of the vote on aligned pairs: {result['false_alarm_on_aligned']:.2f}"
    )


def main(argv: list[str] | None = None) -> None:
    config = parse_config(EvaluateConfig, argv)
    try:
        result = evaluate(config)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    out = Path(config.out or Path(config.checkpoint) / f"evaluation_{config.split}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_evaluation(result, Console())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
