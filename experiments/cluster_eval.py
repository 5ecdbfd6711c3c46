"""`python -m experiments.cluster_eval validation=<search run> test=<search run>`: offline failure clusters against
the hidden truth.

The truth of a failed rollout is its perturbation's family (read from failures.hdf5, never by the clustering).
Scores: weighted F1 after matching clusters to families one to one (Hungarian; unmatched clusters and outliers
count as wrong), ARI and NMI. What is embedded (diagnosis.cluster's EMBEDDINGS: the reason, its scene clause, or
raw image features with no language) and the merge distance are chosen on the validation run's failures by
weighted F1; each kind at its best validation distance and random assignment are reported on the test run.
Writes `<out>.md` and `.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, f1_score, normalized_mutual_info_score

from diagnosis.cluster import EMBEDDINGS, embed_failures
from diagnosis.clusters import OUTLIER, cluster_reasons
from diagnosis.reasons import Reason, failure_reasons
from envs.cli import command_line, parse_config
from envs.markdown import markdown_table

DISTANCES = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3)


@dataclass
class ClusterEvalConfig:
    validation: str = ""
    """Search run whose failures choose the variant."""
    test: str = ""
    """Search run the chosen variant and the baselines are reported on."""
    seed: int = 0
    out: str = "experiments/results/clusters_lift"


def families(run: str, reasons: list[Reason]) -> np.ndarray:
    """Each failed rollout's hidden truth: the family of its (first) perturbation."""
    with h5py.File(Path(run) / "failures.hdf5", "r") as file:
        definitions = {d["name"]: d["family"] for d in json.loads(file["data"].attrs["definitions"])}
    return np.array([definitions[r.perturbations[0]] if r.perturbations else "nominal" for r in reasons])


def scores(truth: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Weighted F1 after one-to-one matching, ARI and NMI (outliers: one more label that matches nothing)."""
    kinds, clusters = sorted(set(truth)), sorted(set(labels.tolist()) - {OUTLIER})
    overlap = np.array([[np.sum((truth == t) & (labels == c)) for c in clusters] for t in kinds])
    rows, columns = linear_sum_assignment(-overlap) if clusters else ([], [])
    named = {clusters[j]: kinds[i] for i, j in zip(rows, columns)}
    predicted = np.array([named.get(int(label), "unmatched") for label in labels])
    return {
        "weighted_f1": float(f1_score(truth, predicted, average="weighted", zero_division=0)),
        "ari": float(adjusted_rand_score(truth, labels)),
        "nmi": float(normalized_mutual_info_score(truth, labels)),
        "clusters": len(clusters),
        "outliers": int((labels == OUTLIER).sum()),
    }


def evaluate(config: ClusterEvalConfig) -> dict:
    if not config.validation or not config.test:
        raise ValueError("name both runs: validation=<search run> test=<search run>")
    validation = failure_reasons(config.validation)
    truth = families(config.validation, validation)
    variants = []
    for embed in EMBEDDINGS:
        embeddings = embed_failures(config.validation, validation, embed)
        for distance in DISTANCES:
            _, labels = cluster_reasons([r.text for r in validation], embeddings, distance=distance)
            variants.append({"embed": embed, "distance": distance, **scores(truth, labels)})
    best = {e: max((v for v in variants if v["embed"] == e), key=lambda v: v["weighted_f1"]) for e in EMBEDDINGS}
    chosen = max(best.values(), key=lambda v: v["weighted_f1"])
    test = failure_reasons(config.test)
    truth = families(config.test, test)
    methods = {}
    for embed, variant in best.items():
        embeddings = embed_failures(config.test, test, embed)
        _, labels = cluster_reasons([r.text for r in test], embeddings, distance=variant["distance"])
        methods[f"{embed} (distance {variant['distance']})"] = scores(truth, labels)
    k = max(1, methods[f"{chosen['embed']} (distance {chosen['distance']})"]["clusters"])
    methods["random assignment"] = scores(truth, np.random.default_rng(config.seed).integers(0, k, size=len(test)))
    return {
        "command": command_line("experiments.cluster_eval", config),
        "validation": {"run": config.validation, "failures": len(validation), "variants": variants},
        "chosen": {"embed": chosen["embed"], "distance": chosen["distance"]},
        "test": {"run": config.test, "failures": len(test), "families": len(set(truth)), "methods": methods},
    }


def score_cells(s: dict) -> list:
    return [f"{s['weighted_f1']:.3f}", f"{s['ari']:.3f}", f"{s['nmi']:.3f}", s["clusters"], s["outliers"]]


def markdown(result: dict) -> str:
    test, validation = result["test"], result["validation"]
    header = ["method", "weighted F1", "ARI", "NMI", "clusters", "outliers"]
    return (
        "\n".join(
            [
                "# Offline failure clusters against the hidden perturbation family",
                "",
                f"Command: `{result['command']}`.",
                "",
                f"Test: {test['failures']} failed rollouts of `{test['run']}` ({test['families']} families). "
                f"Variant chosen on the validation run's {validation['failures']} failures: embed "
                f"{result['chosen']['embed']}, distance {result['chosen']['distance']} (each kind at its best "
                "validation distance below; random assignment gets as many clusters as the chosen one).",
                "",
                markdown_table(header, [[name, *score_cells(s)] for name, s in test["methods"].items()]),
                "",
                f"## Validation (`{validation['run']}`)",
                "",
                markdown_table(
                    ["embedded", "distance", "weighted F1", "ARI", "NMI", "clusters", "outliers"],
                    [[v["embed"], v["distance"], *score_cells(v)] for v in validation["variants"]],
                ),
            ]
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> None:
    config = parse_config(ClusterEvalConfig, argv)
    try:
        result = evaluate(config)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
