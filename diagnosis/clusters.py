"""Named failure clusters from failure reasons, offline: the second and third steps of failure clustering
("From Perception Logs to Failure Modes") without a language model.

1. **Embed** each reason with a sentence encoder (the shipped MiniLM by default; any texts -> unit vectors).
2. **Cluster** with scikit-learn's agglomerative clustering on cosine distance (average linkage, cut at
   `distance`), so the number of clusters follows the data, as the paper's LLM decides it; clusters smaller than
   `min_size` are outliers.
3. **Name** each cluster by its c-TF-IDF keywords (BERTopic's class-based TF-IDF: a word's frequency in the
   cluster, weighted by how rare it is across clusters); its description is the member reason nearest its centre;
   its frequency the share of failures in it.
4. **Assign** any reason, new ones included, to the nearest cluster centre, or flag it an outlier when no centre
   lies within `max_distance`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import AgglomerativeClustering
from sklearn.feature_extraction.text import CountVectorizer

OUTLIER = -1
WORDS = r"(?u)\b[a-zA-Z][a-zA-Z]+\b"
"""Tokens the keywords are made of: words, never the step numbers a reason quotes."""


@dataclass(frozen=True)
class Cluster:
    id: int
    name: str
    keywords: tuple[str, ...]
    description: str
    """The member reason nearest the cluster's centre."""
    size: int
    frequency: float
    """Share of all clustered failures (outliers included) in this cluster."""
    centre: np.ndarray
    """Unit-norm mean of the members' embeddings."""

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "keywords": list(self.keywords),
            "description": self.description,
            "size": self.size,
            "frequency": round(self.frequency, 4),
        }


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def clause_terms(document: str) -> list[str]:
    """Words and word pairs of each clause (a reason's clauses are `;`-separated; no pair spans two)."""
    analyse = CountVectorizer(stop_words="english", ngram_range=(1, 2), token_pattern=WORDS).build_analyzer()
    return [term for clause in document.split(";") for term in analyse(clause)]


def class_tfidf_keywords(texts: Sequence[str], labels: np.ndarray, top: int = 5) -> dict[int, list[str]]:
    """The `top` c-TF-IDF terms (words and word pairs) of each label but OUTLIER."""
    classes = sorted(int(c) for c in set(labels.tolist()) if c != OUTLIER)
    documents = [";".join(t for t, label in zip(texts, labels) if label == c) for c in classes]
    vectorizer = CountVectorizer(analyzer=clause_terms)
    counts = vectorizer.fit_transform(documents).toarray().astype(float)
    terms = vectorizer.get_feature_names_out()
    frequency = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    average_words = counts.sum() / len(classes)
    weight = frequency * np.log(1.0 + average_words / np.maximum(counts.sum(axis=0), 1.0))
    return {c: [str(terms[i]) for i in np.argsort(-weight[k])[:top]] for k, c in enumerate(classes)}


def cluster_name(keywords: Sequence[str], words: int = 3) -> str:
    """The first keywords that each add a word the earlier ones lack ('turned red', not 'turned red, red')."""
    chosen: list[str] = []
    for keyword in keywords:
        if not set(keyword.split()) <= {w for c in chosen for w in c.split()}:
            chosen.append(keyword)
        if len(chosen) == words:
            break
    return ", ".join(chosen)


def cluster_reasons(
    texts: Sequence[str], embeddings: np.ndarray, *, distance: float = 0.15, min_size: int = 2
) -> tuple[list[Cluster], np.ndarray]:
    """Clusters (largest first, ids 0..) and each reason's cluster id (OUTLIER for members of clusters smaller
    than `min_size`)."""
    if len(texts) != len(embeddings):
        raise ValueError(f"{len(texts)} reasons but {len(embeddings)} embeddings")
    if not 0.0 < distance < 2.0:
        raise ValueError(f"distance must be a cosine distance in (0, 2), got {distance}")
    if len(texts) < 2:
        raise ValueError(f"clustering needs at least 2 failed rollouts, got {len(texts)}")
    embeddings = unit(np.asarray(embeddings, dtype=float))
    found = AgglomerativeClustering(
        n_clusters=None, distance_threshold=distance, metric="cosine", linkage="average"
    ).fit_predict(embeddings)
    sizes = np.bincount(found)
    kept = [c for c in np.argsort(-sizes, kind="stable") if sizes[c] >= min_size]
    labels = np.full(len(texts), OUTLIER)
    for new, old in enumerate(kept):
        labels[found == old] = new
    if not kept:
        return [], labels
    keywords = class_tfidf_keywords(texts, labels, top=8)
    clusters = []
    for c in range(len(kept)):
        members = np.nonzero(labels == c)[0]
        centre = unit(embeddings[members].mean(axis=0))
        nearest = members[int(np.argmax(embeddings[members] @ centre))]
        clusters.append(
            Cluster(
                id=c,
                name=cluster_name(keywords[c]),
                keywords=tuple(keywords[c]),
                description=texts[nearest],
                size=len(members),
                frequency=len(members) / len(texts),
                centre=centre,
            )
        )
    return clusters, labels


def assign(embeddings: np.ndarray, clusters: Sequence[Cluster], *, max_distance: float) -> np.ndarray:
    """Each embedding's nearest cluster id by cosine distance, OUTLIER beyond `max_distance` (or without
    clusters)."""
    embeddings = unit(np.atleast_2d(np.asarray(embeddings, dtype=float)))
    if not clusters:
        return np.full(len(embeddings), OUTLIER)
    distances = 1.0 - embeddings @ np.stack([c.centre for c in clusters]).T
    nearest = distances.argmin(axis=1)
    ids = np.array([clusters[i].id for i in nearest])
    return np.where(distances[np.arange(len(ids)), nearest] <= max_distance, ids, OUTLIER)
