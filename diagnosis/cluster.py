"""`python -m diagnosis.cluster run=<search run>`: organise a search's failed rollouts into named clusters.

`method=offline` (the default) works from perception only: a reason per failed rollout (diagnosis.reasons); the
rollouts embedded (`embed`: the shipped MiniLM over the whole reason or its scene clause, or the shipped
EfficientNet-Lite0 over the first and last frames), clustered, named by their reasons' keywords and assigned
(diagnosis.clusters). `method=llm` asks language models behind an OpenAI-compatible endpoint (`llm.base_url`,
`llm.model`) for each rollout's reason, a prompt ensemble of clusterings, their aggregation and the assignment
(diagnosis.llm_clusters), falling back step by step to the offline path when the model gives no usable answer. Writes
`clusters.json` in the run (or `out`): the clusters (name, keywords, description, size, frequency) and every
failed rollout's reason and cluster, outliers with cluster -1; and `clusters.png`, a 2-D map of the failures
(the embeddings' first two principal components) coloured by cluster. In a search run's folder, report.html is
rendered again with a section on the clusters. Prints the clusters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from diagnosis.clusters import OUTLIER, Cluster, cluster_reasons
from diagnosis.llm_clusters import LanguageModelClustering, LLMSettings
from diagnosis.reasons import Reason, failure_reasons
from envs.choices import check_choice
from envs.cli import command_line, parse_config
from envs.tasks import get_task

CLUSTERS = "clusters.json"
METHODS = ("offline", "llm")
EMBEDDINGS = ("reason", "scene", "image")
"""What is embedded: the whole reason or its first clause (how the scene differs from the nominal one), with MiniLM;
or the first and last frames, with EfficientNet-Lite0 (no language; the clusters are still named by reasons)."""


@dataclass
class ClusterConfig:
    run: str = ""
    """A search run directory (its failures.hdf5)."""
    method: str = "offline"
    """offline | llm: perception reasons and embedding clusters, or language models at `llm.base_url` (METHODS)."""
    llm: LLMSettings = field(default_factory=LLMSettings)
    """The endpoint of method=llm (an OpenAI-compatible chat-completions API) and what each request carries."""
    embed: str = "scene"
    """reason | scene | image: what each failed rollout is clustered by (EMBEDDINGS); chosen on a validation run by
    experiments.cluster_eval (experiments/results/clusters_lift.md)."""
    distance: float = 0.02
    """Cosine distance at which agglomerative clustering stops merging."""
    min_size: int = 2
    """Smaller clusters are outliers (offline; and method=llm when it falls back to the offline clusters)."""
    out: str = ""
    """Output file (default <run>/clusters.json)."""


def embed_failures(run: str, reasons: list[Reason], embed: str) -> np.ndarray:
    """One vector per failed rollout: MiniLM of its reason (`reason`) or scene clause (`scene`), or
    EfficientNet-Lite0 features of its first and last frames side by side (`image`)."""
    from diagnosis.embed import load_image_encoder, load_text_encoder

    check_choice(embed, EMBEDDINGS, "embed")
    if embed != "image":
        texts = [r.text if embed == "reason" else r.text.split("; ")[0] for r in reasons]
        return load_text_encoder("minilm")(texts)
    encode = load_image_encoder("efficientnet_lite0")
    with h5py.File(Path(run) / "failures.hdf5", "r") as file:
        key = f"obs/{get_task(str(file['data'].attrs['task'])).camera}_image"
        frames = [file["data"][r.demo][key] for r in reasons]
        firsts, lasts = np.stack([f[0] for f in frames]), np.stack([f[-1] for f in frames])
    return np.concatenate([encode(firsts), encode(lasts)], axis=1)


@dataclass(frozen=True)
class Found:
    """What a method found: each failed rollout's reason (and the model's description of it, method=llm), the
    clusters, each rollout's cluster id (OUTLIER: none) and embedding, and how it was found."""

    reasons: list[str]
    descriptions: list[str]
    clusters: list[Cluster]
    labels: np.ndarray
    embeddings: np.ndarray
    details: dict


def offline_clusters(config: ClusterConfig, reasons: list[Reason]) -> Found:
    embeddings = embed_failures(config.run, reasons, config.embed)
    texts = [r.text for r in reasons]
    clusters, labels = cluster_reasons(texts, embeddings, distance=config.distance, min_size=config.min_size)
    method = f"perception reasons; clustered by {config.embed} embeddings, agglomerative (cosine, average)"
    return Found(texts, [""] * len(texts), clusters, labels, embeddings, {"method": method})


def language_model_clusters(config: ClusterConfig, reasons: list[Reason]) -> Found:
    """Reasons, clusters and assignment from the model at config.llm (diagnosis.llm_clusters); the frames of each
    failed rollout, and its monitor heatmap at the first failure verdict once the robot moved, go with its
    request."""
    from tqdm import tqdm

    from diagnosis.embed import load_text_encoder

    with h5py.File(Path(config.run) / "failures.hdf5", "r") as file:
        task = get_task(str(file["data"].attrs["task"]))
        model = LanguageModelClustering(config.llm, task=task.instruction, encode=load_text_encoder("minilm"))
        descriptions, texts = [], []
        for r in tqdm(reasons, desc="failure reasons", unit="rollout"):
            demo = file["data"][r.demo]
            frames = demo[f"obs/{task.camera}_image"][:]
            # A run without a monitor stores no verdict ("null") and no heatmaps.
            step = (json.loads(demo.attrs.get("monitor", "null")) or {}).get("first_failure_acting")
            verdict = None
            if step is not None and "heatmap" in demo:
                verdict = (frames[step], demo["heatmap"][step].astype(np.float32))
            description, reason = model.reason(frames, offline=r.text, heatmap=verdict)
            descriptions.append(description)
            texts.append(reason)
    clusters, labels, embeddings = model.run(descriptions, texts, distance=config.distance, min_size=config.min_size)
    details = {
        "method": f"language model {config.llm.model} at {config.llm.base_url}: reasons from frames, "
        f"{len(model.prompts_used)} clustering prompts aggregated, assignment with outliers",
        "prompts": model.prompts_used,
        "requests": model.endpoint.requests,
        "fallbacks": dict(model.fallbacks),
    }
    return Found(texts, descriptions, clusters, labels, embeddings, details)


def clusters_document(config: ClusterConfig, reasons: list[Reason], found: Found) -> dict:
    assignments = []
    for r, text, description, label in zip(reasons, found.reasons, found.descriptions, found.labels):
        entry = {"demo": r.demo, "reason": text, "cluster": int(label)}
        assignments.append({**entry, "description": description} if description else entry)
    return {
        "run": config.run,
        "command": command_line("diagnosis.cluster", config),
        **found.details,
        "failures": len(reasons),
        "outliers": int((found.labels == OUTLIER).sum()),
        "clusters": [c.to_dict() for c in found.clusters],
        "assignments": assignments,
    }


def print_clusters(document: dict, console: Console) -> None:
    table = Table(title=f"{len(document['clusters'])} failure clusters of {document['failures']} failed rollouts")
    for column in ("id", "name", "share", "size", "a typical reason"):
        table.add_column(column, overflow="fold")
    for c in document["clusters"]:
        table.add_row(str(c["id"]), c["name"], f"{c['frequency']:.0%}", str(c["size"]), c["description"])
    console.print(table)
    console.print(f"outliers: {document['outliers']}")


def cluster_map(embeddings: np.ndarray, labels: np.ndarray, clusters: list[Cluster], path: Path) -> None:
    """The failures on their embeddings' first two principal components, coloured by cluster (outliers grey)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    points = PCA(n_components=2).fit_transform(embeddings) if len(embeddings) > 2 else np.zeros((len(labels), 2))
    fig, ax = plt.subplots(figsize=(9, 6))
    colours = plt.get_cmap("tab20")
    for c in clusters:
        mine = labels == c.id
        ax.scatter(*points[mine].T, s=14, color=colours(c.id % 20), label=f"{c.id}: {c.name}"[:48])
    if (labels == OUTLIER).any():
        ax.scatter(*points[labels == OUTLIER].T, s=14, color="#999999", marker="x", label="outliers")
    ax.set(xlabel="principal component 1", ylabel="principal component 2", title="failed rollouts by cluster")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(config: ClusterConfig) -> Path:
    check_choice(config.method, METHODS, "method")
    check_choice(config.embed, EMBEDDINGS, "embed")
    if config.min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {config.min_size}")
    reasons = failure_reasons(config.run)
    if len(reasons) < 2:
        raise ValueError(f"{config.run} has {len(reasons)} failed rollout(s); clustering needs at least 2")
    found = (offline_clusters if config.method == "offline" else language_model_clusters)(config, reasons)
    document = clusters_document(config, reasons, found)
    out = Path(config.out or Path(config.run) / CLUSTERS)
    out.write_text(json.dumps(document, indent=1))
    cluster_map(found.embeddings, found.labels, found.clusters, out.with_suffix(".png"))
    if out == Path(config.run) / CLUSTERS and (Path(config.run) / "summary.json").is_file():
        from diagnosis.report import write_report

        report = OmegaConf.load(Path(config.run) / "config.yaml").report
        write_report(Path(config.run), top_k=int(report.top_k), videos=bool(report.videos))
    print_clusters(document, Console(width=max(Console().width, 120)))
    return out


def main(argv: list[str] | None = None) -> None:
    config = parse_config(ClusterConfig, argv)
    try:
        out = run(config)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"clusters: {out}")


if __name__ == "__main__":
    main()
