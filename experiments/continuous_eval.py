"""`python -m experiments.continuous_eval task=lift`: RoboMD's continuous search judged against ground truth, on
perturbations it never saw.

For each seed: train the failure embedding on the finished search runs with every rollout that involved a held-out
perturbation dropped (experiments.embedding_quality.HELD_OUT), run the continuous search on it
(diagnosis.continuous_search, the same code as `python -m diagnosis.search search=continuous`), then place every
Lift perturbation in the embedding from its description and the first frames of its perturbed scene at the ranking
seeds (diagnosis.rank_unseen: one rendered frame, no rollout) and rank by the agent's Gaussian log-density.
Measured against experiments/results/ground_truth_lift_bc_image.json:

- unseen: pairwise accuracy over significantly different pairs of held-out perturbations, and Kendall τ;
- mixed: every perturbation ranked from its first frames; pairwise accuracy over the significant pairs that involve
  at least one held-out perturbation (does an unseen one land at the right place among the seen ones?);
- seen: the search's own ranking of the seen perturbations (from the embeddings of their rollouts) vs ground truth,
  and its consistency with the discrete PPO search's ranking of them (RoboMD Table IV): Kendall τ and the share of
  pairs ordered alike.

Context rows on the same embedding: the agent's initial Gaussian (before any training: centred on the known
embeddings' centroid), the embedding's success head (not RoboMD's ranking, a non-RL reference), the raw 512-d action
space RoboMD uses, SAC (RoboMD's baseline), and PPO on a class-balanced known set (where the centroid is no longer
inside the failure region, so the agent must move to find failures). Writes `out` and ends with one
machine-readable line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_module
from rich.console import Console
from rich.table import Table
from scipy.stats import kendalltau

from diagnosis.continuous_search import ContinuousSearch, run_continuous_search
from diagnosis.embed import (
    EmbedConfig,
    SceneEmbedder,
    TrainedEmbedding,
    load_image_encoder,
    load_text_encoder,
    train_embedding,
)
from diagnosis.evaluation import GroundTruth, compare, default_ground_truth_path, load_ground_truth, significant_pairs
from diagnosis.rank_unseen import first_frames, rank_unseen
from diagnosis.ranking import Ranking
from envs.cli import parse_config
from envs.markdown import markdown_table
from envs.perturbations import task_perturbations
from experiments.embedding_quality import HELD_OUT, finished_runs

ABLATIONS: dict[str, tuple[str, list[str]]] = {
    "raw512": ("PPO, raw 512-d space", ["search.components=0"]),
    "whitened": ("PPO, 16 whitened principal directions", ["search.whiten=true"]),
    "sac": ("SAC, 16 principal directions", []),
    "balanced": ("PPO, class-balanced known set", []),
}
"""Ablation key → label and search overrides (sac and balanced get theirs in main)."""


@dataclass
class ContinuousEvalConfig:
    task: str = "lift"
    policy: str = "lift_bc_image"
    data: str = "outputs/search_comparison/lift"
    """Search run directories, comma-separated, or a directory of runs (see experiments.embedding_quality)."""
    methods: str = "ppo,a2c,thompson"
    """Search methods whose finished runs train the embedding when `data` is a directory of runs."""
    discrete: str = "ppo"
    """The discrete search method whose rankings the continuous one is compared with (its runs in `data`)."""
    exclude: str = ",".join(HELD_OUT)
    """Held-out perturbations: every rollout that involved one is dropped from the embedding and the search."""
    evaluate: str = ""
    """The held-out perturbations the unseen measures are computed on ("" = all of `exclude`). Holding out more
    than are scored makes a validation run: `exclude=<HELD_OUT>,<others> evaluate=<others>` chooses settings on
    perturbations other than the test set."""
    seeds: str = "0,1,2"
    """Seeds of the main configuration (PPO, 16 principal directions): embedding split and init, search init."""
    total_steps: int = 20000
    """Search steps of the PPO runs."""
    ablations: str = ",".join(ABLATIONS)
    """Also run, on the first seed (ABLATIONS; "" = none)."""
    sac_steps: int = 10000
    """Search steps of the SAC baseline (its updates cost ~10× PPO's per step)."""
    ranking_seeds: int = 4
    """Nominal initial states each perturbation's first frame is rendered at."""
    epochs: int = 100
    cache: str = "outputs/embedding/cache"
    work: str = "outputs/continuous_eval"
    """Where embeddings and search runs are written."""
    out: str = "experiments/results/continuous_lift.md"


# ---------------------------------------------------------------------------------------------------- measures
def scored(config: ContinuousEvalConfig) -> list[str]:
    """The held-out perturbations the unseen measures are computed on."""
    return [n for n in (config.evaluate or config.exclude).split(",") if n]


def pair_agreement(scores: dict[str, float], reference: dict[str, float], names: Sequence[str]) -> float:
    """Share of the pairs that `reference` orders strictly which `scores` orders the same way (ties count half)."""
    agree = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if reference[a] == reference[b]:
                continue
            sign = np.sign(scores[a] - scores[b]) * np.sign(reference[a] - reference[b])
            agree.append(0.5 if sign == 0 else float(sign > 0))
    return float(np.mean(agree)) if agree else float("nan")


def mixed_pairwise(scores: dict[str, float], truth: GroundTruth, unseen: set[str]) -> tuple[float, int]:
    """Pairwise accuracy over significant pairs with at least one unseen member."""
    pairs = [(a, b) for a, b in significant_pairs(truth, list(scores)) if a in unseen or b in unseen]
    agree = [1.0 if scores[a] > scores[b] else 0.5 if scores[a] == scores[b] else 0.0 for a, b in pairs]
    return (float(np.mean(agree)) if agree else float("nan")), len(pairs)


def unseen_measures(scores: dict[str, float], truth: GroundTruth, unseen: Sequence[str]) -> dict[str, float]:
    """Unseen-only pairwise accuracy and τ, and the mixed pairwise accuracy, for failure scores of every name."""
    values = np.array([scores[n] for n in unseen])
    held = compare(Ranking(tuple(unseen), values - values.min()), truth)
    mixed, mixed_pairs = mixed_pairwise(scores, truth, set(unseen))
    return {
        "unseen_pairwise": held["pairwise_accuracy"],
        "unseen_pairs": held["significant_pairs"],
        "unseen_tau": held["kendall_tau"],
        "mixed_pairwise": mixed,
        "mixed_pairs": mixed_pairs,
    }


def discrete_rankings(runs: Sequence[Path], method: str) -> dict[str, dict[str, float]]:
    """Failure scores of each finished discrete run of `method`, by run name."""
    found = {}
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        if summary.get("method") == method:
            found[run.name] = {row["perturbation"]: row["score"] for row in summary["ranking"]}
    return found


# ---------------------------------------------------------------------------------------------------- one search
def search_config(config: ContinuousEvalConfig, embedding: Path, seed: int, overrides: Sequence[str]):
    with initialize_config_module("diagnosis.conf", version_base=None):
        return compose(
            "config",
            overrides=[
                "search=continuous",
                "monitor=none",
                f"seed={seed}",
                f"task={config.task}",
                f"policy.name={config.policy}",
                f"task.exclude=[{config.exclude}]",
                f"search.embedding={embedding}",
                f"search.total_steps={config.total_steps}",
                *overrides,
            ],
        )


def evaluate_search(
    label: str,
    run_dir: Path,
    config: ContinuousEvalConfig,
    *,
    embedder: SceneEmbedder,
    frames: np.ndarray,
    names: list[str],
    truth: GroundTruth,
    discrete: dict[str, dict[str, float]],
    summary: dict[str, Any],
) -> dict[str, Any]:
    """Every measure of one finished continuous search (see the module docstring)."""
    unseen = scored(config)
    search = ContinuousSearch.load(run_dir)
    rows = rank_unseen(search, names, frames, embedder)
    by_name = {r["perturbation"]: r for r in rows}
    log_density = {n: by_name[n]["log_density"] for n in names}
    seen_scores = {r["perturbation"]: r["score"] for r in summary["ranking"]}
    seen = list(seen_scores)
    consistency = [pair_agreement(seen_scores, ranking, seen) for ranking in discrete.values()]
    taus = [
        kendalltau([seen_scores[n] for n in seen], [ranking[n] for n in seen]).statistic
        for ranking in discrete.values()
    ]
    return {
        "label": label,
        "run": str(run_dir),
        "steps": summary["budget"]["search_steps"],
        "wall_s": summary["wall_time_s"],
        "failures_found": summary["failures_found"],
        **unseen_measures(log_density, truth, unseen),
        "seen_pairwise": summary["ground_truth"]["pairwise_accuracy"],
        "seen_tau": summary["ground_truth"]["kendall_tau"],
        "seen_pairwise_step0": summary["curve"][0]["pairwise_accuracy"],
        "consistency_pairs": float(np.mean(consistency)) if consistency else float("nan"),
        "consistency_tau": float(np.mean(taus)) if taus else float("nan"),
        "reliability_unseen": float(np.mean([by_name[n]["reliability"] for n in unseen])),
        "reliability_seen": float(np.mean([by_name[n]["reliability"] for n in seen])),
        "unseen_order": [r["perturbation"] for r in rows if r["perturbation"] in set(unseen)],
    }


def reference_measures(
    search: ContinuousSearch,
    embedder: SceneEmbedder,
    frames: np.ndarray,
    names: list[str],
    truth: GroundTruth,
    unseen: list[str],
) -> dict[str, dict[str, float]]:
    """The non-learned references on the same embedding: the initial Gaussian and the success head."""
    seeds = frames.shape[1]
    embeddings, failure = embedder(frames.reshape(-1, *frames.shape[2:]), [[n] for n in names for _ in range(seeds)])
    coords = search.space.to_policy(embeddings)
    initial = -0.5 * (coords**2).sum(axis=1).reshape(len(names), seeds).mean(axis=1)
    head = failure.reshape(len(names), seeds).mean(axis=1)
    return {
        "initial Gaussian (no training)": unseen_measures(dict(zip(names, initial)), truth, unseen),
        "success head P(fail)": unseen_measures(dict(zip(names, head)), truth, unseen),
    }


def balanced_embedding(trained: TrainedEmbedding, directory: Path, seed: int) -> Path:
    """The same embedding with a class-balanced known set: every success and as many failures, drawn at random."""
    rng = np.random.default_rng(seed)
    successes = np.flatnonzero(~trained.failed)
    failures = rng.choice(
        np.flatnonzero(trained.failed), size=min(len(successes), int(trained.failed.sum())), replace=False
    )
    rows = np.sort(np.concatenate([successes, failures]))
    subset = dataclasses.replace(
        trained,
        known=trained.known[rows],
        failed=trained.failed[rows],
        perturbations=[trained.perturbations[i] for i in rows],
    )
    return subset.save(directory)


# ---------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    config = parse_config(ContinuousEvalConfig, argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    try:
        runs = finished_runs(config.data, config.methods.split(","))
        truth = load_ground_truth(default_ground_truth_path(config.policy, config.task), config.task, config.policy)
        seeds = [int(s) for s in config.seeds.split(",") if s.strip()]
        if not seeds:
            raise ValueError("seeds= must name at least one seed")
        ablations = [a.strip() for a in config.ablations.split(",") if a.strip()]
        unknown = [a for a in ablations if a not in ABLATIONS]
        if unknown:
            raise ValueError(f"unknown ablation(s) {', '.join(unknown)}; valid: {', '.join(ABLATIONS)}")
        outside = [n for n in scored(config) if n not in config.exclude.split(",")]
        if outside:
            raise ValueError(f"evaluate= names {', '.join(outside)}, which exclude= does not hold out")
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    unseen = scored(config)
    names = list(task_perturbations(config.task))
    discrete = discrete_rankings(finished_runs(config.data, [config.discrete]), config.discrete)
    work = Path(config.work)
    print(f"rendering first frames of {len(names)} perturbations x {config.ranking_seeds} seeds", flush=True)
    frames = first_frames(config.task, names, config.ranking_seeds)
    text_encoder = load_text_encoder("minilm")
    image_encoder = load_image_encoder(EmbedConfig().image_encoder)

    results: list[dict[str, Any]] = []
    references: dict[str, list[dict[str, float]]] = {}
    for index, seed in enumerate(seeds):
        embed_config = EmbedConfig(
            task=config.task,
            data=",".join(map(str, runs)),
            policy=config.policy,
            exclude=config.exclude,
            seed=seed,
            epochs=config.epochs,
            cache=config.cache,
        )
        trained = train_embedding(embed_config, image_encoder, text_encoder, progress=False)
        embedding = trained.save(work / f"embedding_seed{seed}")
        embedder = SceneEmbedder(trained, image=image_encoder)
        plan = [(f"PPO, 16 principal directions (seed {seed})", "ppo16", embedding, [])]
        for key in ablations if index == 0 else []:
            label, overrides, source = *ABLATIONS[key], embedding
            if key == "sac":
                overrides = [
                    "search.algorithm=sac",
                    f"search.total_steps={config.sac_steps}",
                    f"search.curve_every={config.sac_steps // 5}",
                ]
            if key == "balanced":
                source = balanced_embedding(trained, work / f"embedding_seed{seed}_balanced", seed)
            plan.append((f"{label} (seed {seed})", key, source, overrides))
        for label, key, source, overrides in plan:
            run_dir = work / f"{key}_seed{seed}"
            with contextlib.redirect_stdout(io.StringIO()):
                summary = run_continuous_search(search_config(config, source, seed, overrides), run_dir)
            result = evaluate_search(
                label,
                run_dir,
                config,
                embedder=embedder,
                frames=frames,
                names=names,
                truth=truth,
                discrete=discrete,
                summary=summary,
            )
            result["main"] = key == "ppo16"
            results.append(result)
            print(label, {k: v for k, v in result.items() if k not in ("label", "run")}, flush=True)
            if key == "ppo16":
                for name, measures in reference_measures(
                    ContinuousSearch.load(run_dir), embedder, frames, names, truth, unseen
                ).items():
                    references.setdefault(name, []).append(measures)

    discrete_measures = {
        run: {
            **compare(Ranking(tuple(ranking), np.array(list(ranking.values()))), truth),
            "unseen_as_ranked": unseen_measures(ranking, truth, unseen),
        }
        for run, ranking in discrete.items()
    }
    print_table(results)
    write_markdown(
        config,
        runs=runs,
        results=results,
        references=references,
        discrete=discrete_measures,
        unseen=unseen,
        wall_s=time.perf_counter() - started,
    )
    main_rows = [r for r in results if r["main"]]
    print(
        f"unseen_pairwise: {np.mean([r['unseen_pairwise'] for r in main_rows]):.3f} "
        f"unseen_tau: {np.mean([r['unseen_tau'] for r in main_rows]):.3f} "
        f"mixed_pairwise: {np.mean([r['mixed_pairwise'] for r in main_rows]):.3f} "
        f"consistency_pairs: {np.mean([r['consistency_pairs'] for r in main_rows]):.3f}"
    )


def print_table(results: list[dict[str, Any]]) -> None:
    table = Table(title="continuous search: unseen and seen rankings vs ground truth")
    for column in ("search", "unseen pairwise", "unseen τ", "mixed pairwise", "seen pairwise", "seen τ", "vs discrete"):
        table.add_column(column, justify="left" if column == "search" else "right")
    for r in results:
        table.add_row(
            r["label"],
            f"{r['unseen_pairwise']:.3f}",
            f"{r['unseen_tau']:.3f}",
            f"{r['mixed_pairwise']:.3f}",
            f"{r['seen_pairwise']:.3f}",
            f"{r['seen_tau']:.3f}",
            f"{r['consistency_pairs']:.3f}",
        )
    Console(width=160).print(table)


def mean_sd(values: Sequence[float]) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.3f}" if len(values) == 1 else f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def main_rows(config: ContinuousEvalConfig, main: list[dict[str, Any]]) -> list[list[str]]:
    """The main configuration's measures, mean ± sd over seeds."""

    def over(key: str) -> str:
        return mean_sd([r[key] for r in main])

    return [
        [
            "unseen pairwise accuracy (target ≥ 0.70; RoboMD 0.61–0.80)",
            over("unseen_pairwise"),
            str(main[0]["unseen_pairs"]),
        ],
        ["unseen Kendall τ", over("unseen_tau"), ""],
        [
            "mixed: all 36 ranked from first frames, pairs with ≥ 1 unseen",
            over("mixed_pairwise"),
            str(main[0]["mixed_pairs"]),
        ],
        ["seen: search ranking vs ground truth, pairwise", over("seen_pairwise"), ""],
        ["seen: Kendall τ", over("seen_tau"), ""],
        ["seen: same ranking before any training (initial Gaussian), pairwise", over("seen_pairwise_step0"), ""],
        [
            f"rank consistency with the discrete {config.discrete} search (share of pairs ordered alike, RoboMD "
            "Table IV)",
            over("consistency_pairs"),
            "",
        ],
        ["rank consistency, Kendall τ", over("consistency_tau"), ""],
        [
            "reliability: distance to the nearest known embedding / spread, unseen vs seen",
            f"{over('reliability_unseen')} vs {over('reliability_seen')}",
            "",
        ],
    ]


def run_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    keys = (
        "unseen_pairwise",
        "unseen_tau",
        "mixed_pairwise",
        "seen_pairwise",
        "seen_tau",
        "seen_pairwise_step0",
        "consistency_pairs",
    )
    return [
        [r["label"], *(f"{r[k]:.3f}" for k in keys), f"{r['failures_found']}/{r['steps']}", f"{r['wall_s']:.0f}"]
        for r in results
    ]


def reference_rows(references: dict[str, list[dict[str, float]]]) -> list[list[str]]:
    keys = ("unseen_pairwise", "unseen_tau", "mixed_pairwise")
    return [[name, *(mean_sd([m[k] for m in measures]) for k in keys)] for name, measures in references.items()]


def discrete_rows(discrete: dict[str, dict[str, Any]]) -> list[list[str]]:
    return [
        [
            run,
            f"{m['pairwise_accuracy']:.3f}",
            f"{m['kendall_tau']:.3f}",
            f"{m['unseen_as_ranked']['unseen_pairwise']:.3f}",
            f"{m['unseen_as_ranked']['unseen_tau']:.3f}",
        ]
        for run, m in discrete.items()
    ]


def write_markdown(
    config: ContinuousEvalConfig,
    *,
    runs: list[Path],
    results: list[dict[str, Any]],
    references: dict[str, list[dict[str, float]]],
    discrete: dict[str, dict[str, Any]],
    unseen: list[str],
    wall_s: float,
) -> None:
    """`config.out` (the tables) and the same path with .json (every measure, for later comparison)."""
    defaults = dataclasses.asdict(ContinuousEvalConfig())
    given = {k: v for k, v in dataclasses.asdict(config).items() if v != defaults[k]}
    command = " ".join(["python -m experiments.continuous_eval", *(f"{k}={v}" for k, v in given.items())])
    truth = load_ground_truth(default_ground_truth_path(config.policy, config.task), config.task, config.policy)
    main = [r for r in results if r["main"]]
    held_out = ", ".join(f"{n} ({truth.entries[n].success_rate:.2f})" for n in config.exclude.split(",") if n)
    validation = f" **Validation run**: the unseen measures are computed on {', '.join(unseen)} only."
    target = np.mean([r["unseen_pairwise"] for r in main]) >= 0.70
    lines = [
        f"# Continuous failure search: {config.task}, {config.policy}",
        "",
        f"Command: `{command}` ({wall_s / 60:.1f} min on 2 shared CPU cores, torch 1 thread).",
        "",
        f"Embedding training data: the finished search runs {', '.join(r.name for r in runs)}, minus every rollout "
        f"that involved a held-out perturbation. Held out (unseen by the embedding and the search): {held_out}"
        " — ground-truth success rate in brackets; why these are a fair test: experiments/embedding_quality.py "
        "HELD_OUT." + (validation if config.evaluate else "") + " Unseen perturbations are placed in the embedding "
        f"from their description and the first frame of the perturbed scene at {config.ranking_seeds} nominal "
        "initial states (no rollout), then ranked by the search agent's Gaussian log-density. PPO: "
        f"{config.total_steps} search steps (nearest-neighbour lookups, no rollouts).",
        "",
        "## Main result (PPO, 16 principal directions; mean ± sd over seeds " + config.seeds + ")",
        "",
        markdown_table(["measure", "value", "pairs"], main_rows(config, main)),
        "",
        "Predicted unseen order (most failure-prone first) per seed:",
        "",
        *(
            f"- {r['label']}: " + ", ".join(f"{n} ({truth.entries[n].success_rate:.2f})" for n in r["unseen_order"])
            for r in main
        ),
        "",
        "## All runs",
        "",
        markdown_table(
            [
                "search",
                "unseen pairwise",
                "unseen τ",
                "mixed pairwise",
                "seen pairwise",
                "seen τ",
                "seen pairwise at step 0",
                "consistency with discrete",
                "failures found / steps",
                "wall s",
            ],
            run_rows(results),
        ),
        "",
        "## References on the same embeddings (unseen ranking; mean ± sd over seeds)",
        "",
        markdown_table(["ranking", "unseen pairwise", "unseen τ", "mixed pairwise"], reference_rows(references)),
        "",
        f"## The discrete {config.discrete} search on the same perturbations",
        "",
        "It rolled every perturbation out (nothing held out), so its unseen numbers are an upper reference, not a "
        "competitor.",
        "",
        markdown_table(
            ["run", "pairwise (all 36)", "τ (all 36)", "held-out pairwise", "held-out τ"], discrete_rows(discrete)
        ),
        "",
        "## Notes",
        "",
        f"- Target (unseen pairwise accuracy ≥ 0.70) {'met' if target else 'NOT met'} by the main configuration.",
        "- Protocol: the action space (one scale for all principal directions vs whitened) was chosen on a validation "
        "run that holds out six other seen perturbations on top of these and scores only those "
        "(experiments/results/continuous_lift_validation.md). Disclosure: before that, this test set was evaluated "
        "once with the whitened space as the default; the whitened row above is that configuration.",
        "- The initial Gaussian row ranks by distance to the known set's centroid; where most known rollouts fail, "
        "the centroid already lies among the failures, so compare it with the trained agent to see what training adds.",
        "- The success head is the embedding's own classifier, not RoboMD's density ranking; it is shown as a "
        "reference for what the embedding knows about an unseen perturbation.",
    ]
    Path(config.out).parent.mkdir(parents=True, exist_ok=True)
    Path(config.out).write_text("\n".join(lines) + "\n")
    record = {"command": command, "results": results, "references": references, "discrete": discrete}
    Path(config.out).with_suffix(".json").write_text(json.dumps(record, indent=1, default=float))


if __name__ == "__main__":
    main()
