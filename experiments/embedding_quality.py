"""`python -m experiments.embedding_quality task=lift`: how well the failure embedding encodes failure (RoboMD Table V,
Fig. 15), and what each of its parts buys.

Trains the embedding of diagnosis.embed on the finished search runs under `data` — every rollout that involved a
held-out perturbation (HELD_OUT, the continuous evaluation's unseen set) dropped, the same split and seed for every
variant — and measures on the held-out 20% of rollouts:

- kNN outcome accuracy versus k (a held-out rollout's outcome by majority of its k nearest training embeddings) and
  the success head's accuracy;
- the per-perturbation confusion matrix of RoboMD Table V: cosine similarity between perturbations' mean embeddings
  (rollouts that tried the perturbation alone), its MSE and Frobenius distance to the identity — raw, as RoboMD,
  and centred on the embeddings' mean (raw cosines of a non-centred embedding sit near 1 whatever it encodes) — and
  the mean centred cosine between perturbations with the same majority outcome versus different ones (what the
  contrastive loss optimises).

Variants: image+text vs image-only, BCE+contrastive vs BCE-only, first frame vs 16 frames averaged, mid+late
EfficientNet stages vs the last stage alone. Writes `out` (markdown) and a confusion-matrix figure beside it; ends
with one machine-readable line.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from diagnosis.embed import (
    EmbedConfig,
    Rollouts,
    apply,
    description_table,
    knn_accuracy,
    load_image_encoder,
    load_rollouts,
    load_text_encoder,
    perturbation_text_features,
    rollout_image_features,
    split,
    train_model,
)
from envs.cli import parse_config
from envs.markdown import markdown_table

HELD_OUT = (
    "cube_color_blue",
    "table_color_gray",
    "robot_color_green",
    "light_color_blue",
    "cube_size_0.04x0.04x0.04",
    "camera_shift_left",
    "light_dim",
)
"""Lift perturbations kept out of everything the embedding and the continuous search see. Each is a variant of a
family whose other members are seen (RoboMD's "black table" when red/green/blue tables were tried): cube colour
(red, green, gray seen), table colour (green, blue, red seen), robot colour (red, cyan, gray seen), light colour
(red, green, gray seen), cube size (half size and bar seen), camera pose (tilt seen), light intensity (bright side
light and mid-task dimming seen). Their ground-truth success rates span the range (0, 0, 1, 4, 14, 15, 18 of 20),
and two go against their family: a gray table is harmless where every other table colour fails, a green robot mostly
succeeds where a red one always fails — a ranking cannot pass by learning "colour changes fail"."""
KS = (1, 3, 5, 10, 25)
"""k of the kNN outcome accuracy."""


@dataclass
class QualityConfig:
    task: str = "lift"
    data: str = "outputs/search_comparison/lift"
    """Search run directories, comma-separated, or one directory whose finished runs (summary.json status complete)
    of `methods` are all used."""
    methods: str = "ppo,a2c,thompson"
    """Search methods whose runs are used when `data` is a directory of runs."""
    exclude: str = ",".join(HELD_OUT)
    """Held-out perturbations (every rollout that involved one is dropped)."""
    variants: str = "full,image_only,bce_only,image_only_bce_only,mean_frames,last_stage"
    """Which variants to train (VARIANTS)."""
    seed: int = 0
    epochs: int = 100
    cache: str = "outputs/embedding/cache"
    out: str = "experiments/results/embedding_lift.md"


VARIANTS: dict[str, dict[str, object]] = {
    "full": {},
    "image_only": {"text_encoder": "none"},
    "bce_only": {"contrastive_weight": 0.0},
    "image_only_bce_only": {"text_encoder": "none", "contrastive_weight": 0.0},
    "mean_frames": {"frames": "mean"},
    "last_stage": {"image_encoder": "efficientnet_lite0_last"},
}
"""Variant name → EmbedConfig fields that differ from the default (image+text, BCE+contrastive, first frame)."""


def finished_runs(data: str, methods: Sequence[str]) -> list[Path]:
    """The runs named, or the finished runs of `methods` in a directory of runs (a running search is skipped)."""
    paths = [Path(p.strip()) for p in data.split(",") if p.strip()]
    if len(paths) == 1 and not (paths[0] / "failures.hdf5").exists():
        root = paths[0]
        paths = sorted(
            run
            for run in root.iterdir()
            if run.name.split("_")[0] in methods
            and (run / "summary.json").is_file()
            and json.loads((run / "summary.json").read_text()).get("status") == "complete"
        )
        if not paths:
            raise ValueError(f"no finished search runs of {', '.join(methods)} in {root}")
    return paths


def per_perturbation_means(embeddings: np.ndarray, rollouts: Rollouts) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, mean embedding and failure rate of every perturbation tried alone at least 3 times."""
    names, means, rates = [], [], []
    for name in rollouts.names():
        rows = np.array([ps == (name,) for ps in rollouts.perturbations])
        if rows.sum() >= 3:
            names.append(name)
            means.append(embeddings[rows].mean(axis=0))
            rates.append(rollouts.failed[rows].mean())
    return names, np.array(means), np.array(rates)


def cosine_matrix(means: np.ndarray) -> np.ndarray:
    unit = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


def confusion_metrics(embeddings: np.ndarray, rollouts: Rollouts) -> tuple[dict[str, float], list[str], np.ndarray]:
    names, means, rates = per_perturbation_means(embeddings, rollouts)
    identity = np.eye(len(names))
    raw, centred = cosine_matrix(means), cosine_matrix(means - embeddings.mean(axis=0))
    fails = rates >= 0.5
    same = fails[:, None] == fails[None, :]
    off = ~np.eye(len(names), dtype=bool)
    metrics = {
        "perturbations": len(names),
        "mse_raw": float(((raw - identity) ** 2).mean()),
        "frobenius_raw": float(np.linalg.norm(raw - identity)),
        "mse_centred": float(((centred - identity) ** 2).mean()),
        "frobenius_centred": float(np.linalg.norm(centred - identity)),
        "cos_same_outcome": float(centred[same & off].mean()),
        "cos_other_outcome": float(centred[~same].mean()),
    }
    order = np.argsort(-rates, kind="stable")
    return metrics, [names[i] for i in order], centred[np.ix_(order, order)]


def evaluate_variant(
    name: str, rollouts: Rollouts, config: QualityConfig, text_table: dict[str, np.ndarray]
) -> tuple[dict[str, float], list[str], np.ndarray]:
    embed = EmbedConfig(task=config.task, epochs=config.epochs, seed=config.seed, **VARIANTS[name])
    started = time.perf_counter()
    image = rollout_image_features(
        rollouts,
        config.task,
        load_image_encoder(embed.image_encoder),
        encoder_name=embed.image_encoder,
        frames=embed.frames,
        mean_frames=embed.mean_frames,
        cache=config.cache or None,
    )
    features_s = time.perf_counter() - started
    text = perturbation_text_features(text_table, rollouts.perturbations) if embed.text_encoder != "none" else None
    valid = split(rollouts.failed, embed.valid_fraction, embed.seed)
    started = time.perf_counter()
    model = train_model(image, text, rollouts.failed, embed, ~valid, progress=False)
    train_s = time.perf_counter() - started
    embeddings, failure_prob = apply(model, image, text)
    train = ~valid
    metrics: dict[str, float] = {
        "head_accuracy": float(((failure_prob[valid] >= 0.5) == rollouts.failed[valid]).mean()),
        **{
            f"knn{k}": knn_accuracy(
                embeddings[train], rollouts.failed[train], embeddings[valid], rollouts.failed[valid], k
            )
            for k in KS
        },
        "features_s": features_s,
        "train_s": train_s,
    }
    confusion, names, matrix = confusion_metrics(embeddings, rollouts)
    metrics.update(confusion)
    return metrics, names, matrix


def plot_confusions(path: Path, panels: dict[str, tuple[list[str], np.ndarray]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 6.5), squeeze=False)
    for ax, (title, (names, matrix)) in zip(axes[0], panels.items()):
        image = ax.imshow(matrix, vmin=-1, vmax=1, cmap="coolwarm")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        ax.set_yticks(range(len(names)), names, fontsize=6)
        ax.set_title(f"{title}: centred cosine of mean embeddings\n(sorted by failure rate, worst first)", fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    config = parse_config(QualityConfig, argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    try:
        variants = [v.strip() for v in config.variants.split(",") if v.strip()]
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variant(s) {', '.join(unknown)}; valid: {', '.join(VARIANTS)}")
        runs = finished_runs(config.data, config.methods.split(","))
        exclude = [n.strip() for n in config.exclude.split(",") if n.strip()]
        rollouts = load_rollouts(runs, config.task, exclude)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    text_table = description_table(config.task, load_text_encoder("minilm"))
    results, panels = {}, {}
    for name in variants:
        results[name], names, matrix = evaluate_variant(name, rollouts, config, text_table)
        if name in ("full", "image_only"):
            panels[name] = (names, matrix)
        print(name, {k: round(v, 3) for k, v in results[name].items()}, flush=True)

    table = Table(title=f"embedding quality on {config.task} ({len(rollouts)} rollouts, held-out 20%)")
    columns = ("variant", "head acc", *(f"kNN-{k}" for k in KS), "MSE raw", "MSE centred", "cos same", "cos other")
    for column in columns:
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, m in results.items():
        table.add_row(
            name,
            f"{m['head_accuracy']:.3f}",
            *(f"{m[f'knn{k}']:.3f}" for k in KS),
            f"{m['mse_raw']:.3f}",
            f"{m['mse_centred']:.3f}",
            f"{m['cos_same_outcome']:.2f}",
            f"{m['cos_other_outcome']:.2f}",
        )
    Console(width=160).print(table)

    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure = out.with_name(out.stem + "_confusion.png")
    if panels:
        plot_confusions(figure, panels)
    wall_s = time.perf_counter() - started
    write_markdown(
        out,
        figure=figure if panels else None,
        config=config,
        runs=runs,
        rollouts=rollouts,
        exclude=exclude,
        results=results,
        wall_s=wall_s,
    )
    full = results.get("full", next(iter(results.values())))
    print(
        f"knn5_accuracy: {full['knn5']:.3f} head_accuracy: {full['head_accuracy']:.3f} "
        f"mse_centred: {full['mse_centred']:.3f}"
    )


def variant_row(name: str, m: dict[str, float]) -> list[str]:
    change = ", ".join(f"{k}={v}" for k, v in VARIANTS[name].items())
    change = change or "default: image+text, BCE+contrastive, first frame, stages 2-4"
    return [
        name,
        change,
        f"{m['head_accuracy']:.3f}",
        *(f"{m[f'knn{k}']:.3f}" for k in KS),
        f"{m['mse_raw']:.3f}",
        f"{m['frobenius_raw']:.2f}",
        f"{m['mse_centred']:.3f}",
        f"{m['frobenius_centred']:.2f}",
        f"{m['cos_same_outcome']:.2f}",
        f"{m['cos_other_outcome']:.2f}",
        f"{m['features_s']:.0f}",
        f"{m['train_s']:.0f}",
    ]


def write_markdown(
    out: Path,
    *,
    figure: Path | None,
    config: QualityConfig,
    runs: list[Path],
    rollouts: Rollouts,
    exclude: list[str],
    results: dict[str, dict[str, float]],
    wall_s: float,
) -> None:
    defaults = dataclasses.asdict(QualityConfig())
    given = {k: v for k, v in dataclasses.asdict(config).items() if v != defaults[k]}
    command = " ".join(["python -m experiments.embedding_quality", *(f"{k}={v}" for k, v in given.items())])
    valid = int(round(0.2 * len(rollouts)))
    lines = [
        f"# Failure embedding quality: {config.task}",
        "",
        f"Command: `{command}` ({wall_s / 60:.1f} min on 2 shared CPU cores, torch 1 thread; image features cached "
        f"under {config.cache})",
        "",
        f"Data: {len(rollouts)} rollouts ({rollouts.failed.mean():.0%} failed) of the finished search runs "
        f"{', '.join(r.name for r in runs)} (lift_bc_image; frames stored), after dropping every rollout that involved "
        f"a held-out perturbation: {', '.join(exclude)}. Seed {config.seed}: one stratified split, ~{valid} rollouts "
        f"held out of training; every number below is measured on them (kNN against the training embeddings). "
        f"{config.epochs} epochs, embedding R^512, margin 1, λ = 1.",
        "",
        markdown_table(
            [
                "variant",
                "what changes",
                "head acc",
                *(f"kNN-{k}" for k in KS),
                "MSE to I (raw)",
                "‖C−I‖_F (raw)",
                "MSE to I (centred)",
                "‖C−I‖_F (centred)",
                "cos same outcome",
                "cos other outcome",
                "features s",
                "train s",
            ],
            [variant_row(name, m) for name, m in results.items()],
        ),
    ]
    n = next(iter(results.values()))["perturbations"]
    lines += [
        "",
        f"Confusion matrix: cosine similarity between the mean embeddings of the {n} perturbations tried alone at "
        "least 3 times (RoboMD Table V reports MSE and Frobenius distance of this matrix to the identity; lower = "
        "perturbations more distinguishable). Raw cosines of a non-centred embedding are all near 1, so the centred "
        "version is the informative one. `cos same/other outcome`: mean centred cosine between perturbations whose "
        "majority outcome agrees / differs.",
    ]
    if figure is not None:
        lines += ["", f"![confusion matrices]({figure.name})"]
    lines += ["", "## Reading (generated from the table)", "", *reading(results)]
    out.write_text("\n".join(lines) + "\n")


def reading(results: dict[str, dict[str, float]]) -> list[str]:
    """One line per ablation: what removing or changing a part does to kNN-5 and the centred confusion MSE."""
    if "full" not in results:
        return ["- (the default variant was not run)"]
    full = results["full"]
    what = {
        "image_only": "dropping the perturbation text",
        "bce_only": "dropping the contrastive term",
        "image_only_bce_only": "dropping both",
        "mean_frames": "averaging 16 frames instead of the first",
        "last_stage": "the last EfficientNet stage alone instead of stages 2-4",
    }
    lines = []
    for name, m in results.items():
        if name == "full":
            continue
        lines.append(
            f"- {what[name]}: kNN-5 {m['knn5'] - full['knn5']:+.3f}, head accuracy "
            f"{m['head_accuracy'] - full['head_accuracy']:+.3f}, centred confusion MSE to I "
            f"{m['mse_centred'] - full['mse_centred']:+.3f} (lower = perturbations more distinguishable)."
        )
    return lines


if __name__ == "__main__":
    main()
