"""`python -m monitor.failsense.train data=data/smf_stack.hdf5 out=runs/failsense/smf_stack`: I-FailSense's two
training stages on an SMF file (monitor.failsense.dataset).

Stage 1 trains the projector, the LoRA adapters and the stage-1 head; stage 2 freezes them and trains the FS
blocks (monitor.failsense.model). Each stage keeps the epoch with the best accuracy on the `valid` split. Only the
`aligned` and `misaligned` pairs of the `train` split are trained on: control failures stay unseen. The image
features are computed once (the vision encoder is frozen). Writes `failsense.safetensors` and `failsense.json`
(the config, the command, the dataset, each stage's validation accuracy and the wall time).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from envs.cli import command_line, parse_config
from monitor.failsense.dataset import Examples, read_examples
from monitor.failsense.model import FailSense, FailSenseConfig

TRAINED_KINDS = ("aligned", "misaligned")


@dataclass
class TrainConfig:
    data: str = "data/smf_stack.hdf5"
    out: str = "runs/failsense/smf_stack"
    model: FailSenseConfig = field(default_factory=FailSenseConfig)
    stage1_epochs: int = 12
    stage2_epochs: int = 12
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    blind: bool = False
    """The baseline that sees no instruction: every instruction is blanked, in training and evaluation."""
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("stage1_epochs", "stage2_epochs", "batch"):
            if getattr(self, key) < 0 or (key == "batch" and self.batch < 2):
                raise ValueError(f"{key} must be >= {2 if key == 'batch' else 0}, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def instructions(examples: Examples, index: np.ndarray, *, blind: bool) -> list[str]:
    return ["" if blind else examples.instruction[i] for i in index]


def batches(index: np.ndarray, size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled batches; a last batch of one is dropped (batch norm needs two)."""
    order = rng.permutation(index)
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        if len(chunk) > 1:
            yield chunk


def stage_logits(model: FailSense, stage: int, patches: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """(B, 1) stage-1 head logits or (B, K) FS block logits."""
    if stage == 1:
        hidden, mask = model.encode(patches, texts)
        return model.head_logit(hidden, mask).unsqueeze(1)
    with torch.no_grad():  # the post-trained model is frozen in stage 2
        hidden, mask = model.encode(patches, texts)
    return model.block_logits(hidden, mask)


def accuracy(
    model: FailSense, stage: int, features: torch.Tensor, examples: Examples, index: np.ndarray, *, blind: bool
) -> float:
    """Stage 1: the head's accuracy; stage 2: the blocks' mean accuracy."""
    model.eval()
    correct = []
    with torch.no_grad():
        for start in range(0, len(index), 64):
            chunk = index[start : start + 64]
            texts = instructions(examples, chunk, blind=blind)
            logits = stage_logits(model, stage, features[examples.episode[chunk]], texts)
            labels = torch.from_numpy(examples.label[chunk]).unsqueeze(1)
            correct.append(((logits > 0).long() == labels).float().mean(dim=1))
    return float(torch.cat(correct).mean()) if correct else float("nan")


def set_train_mode(model: FailSense, stage: int) -> None:
    """Dropout and batch norm train only in what the stage trains."""
    model.eval()
    if stage == 1:
        model.language.train()
        model.projector.train()
    else:
        model.blocks.train()


def train_stage(
    model: FailSense,
    *,
    stage: int,
    config: TrainConfig,
    features: torch.Tensor,
    examples: Examples,
    train: np.ndarray,
    valid: np.ndarray,
) -> list[float]:
    """Trains one stage and keeps its best epoch on `valid`; returns the validation accuracy per epoch."""
    epochs = config.stage1_epochs if stage == 1 else config.stage2_epochs
    parameters = model.stage_parameters(stage)
    optimiser = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng([config.seed, stage])
    history, best, best_state = [], -1.0, None
    for _ in tqdm(range(epochs), desc=f"stage {stage}", unit="epoch"):
        set_train_mode(model, stage)
        for chunk in batches(train, config.batch, rng):
            texts = instructions(examples, chunk, blind=config.blind)
            logits = stage_logits(model, stage, features[examples.episode[chunk]], texts)
            labels = torch.from_numpy(examples.label[chunk]).float().unsqueeze(1).expand_as(logits)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        history.append(accuracy(model, stage, features, examples, valid, blind=config.blind))
        if history[-1] > best:
            best = history[-1]
            best_state = {k: v.clone() for k, v in model.trained_state().items()}
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    return history


def train(config: TrainConfig) -> Path:
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    examples = read_examples(config.data)
    if (config.model.frames, config.model.views) != (examples.frames, examples.views):
        raise ValueError(
            f"{config.data} has {examples.frames} frames × {examples.views} views per trajectory image; "
            f"set model.frames={examples.frames} model.views={examples.views}"
        )
    train_index = examples.select(splits=("train",), kinds=TRAINED_KINDS)
    valid_index = examples.select(splits=("valid",), kinds=TRAINED_KINDS)
    if len(train_index) < 2 or len(valid_index) < 1:
        raise ValueError(f"{config.data} has {len(train_index)} train and {len(valid_index)} valid pairs; need more")
    model = FailSense(config.model)
    features = model.features(examples.images)
    common = dict(config=config, features=features, examples=examples, train=train_index, valid=valid_index)
    stage1 = train_stage(model, stage=1, **common)
    stage2 = train_stage(model, stage=2, **common)
    card = {
        "command": command_line("monitor.failsense.train", config),
        "data": config.data,
        "train_pairs": len(train_index),
        "valid_pairs": len(valid_index),
        "blind": config.blind,
        "valid_accuracy": {"stage1_head": stage1, "stage2_blocks": stage2},
        "training": {k: v for k, v in asdict(config).items() if k not in ("model", "data", "out")},
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    return model.save(config.out, card)


def main(argv: list[str] | None = None) -> None:
    config = parse_config(TrainConfig, argv)
    try:
        out = train(config)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"wrote {out}/failsense.safetensors and failsense.json")


if __name__ == "__main__":
    main()
