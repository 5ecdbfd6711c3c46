"""Failure clusters the way "From Perception Logs to Failure Modes" finds them: language models behind an
OpenAI-compatible endpoint (monitor.semantic.endpoint; a multimodal one such as Qwen2.5-VL serves every step).

1. **Reasons**: each failed rollout's frames (the first, then the tail of the episode) and, when a monitor watched,
   its heatmap at the first failure verdict go to the model with the task; chain of thought: it describes the scene
   and the robot's behaviour, then infers the cause.
2. **Prompt ensemble**: from the base clustering prompt the model proposes `ensemble` more (good prompting practice,
   other phrasings); each prompt clusters all reasons into mutually exclusive, collectively exhaustive clusters with
   a name, a description and keywords, their number the model's choice.
3. **Aggregation**: the same model merges those clusterings into one.
4. **Assignment**: every rollout, in batches, to one cluster or -1 (an outlier); frequencies are counted from it.

Every answer is JSON. A step whose answer is missing or malformed falls back, with one warning per step and a count
in `fallbacks`, never a crash: a reason to the offline perception reason (diagnosis.reasons), the proposed prompts
to the base prompt alone, a clustering is left out, the aggregation to the first clustering, no clustering at all
to the offline clusters (diagnosis.clusters), an assignment to the nearest cluster by embedding (the paper's EA).
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from diagnosis.clusters import OUTLIER, Cluster, cluster_reasons, unit
from monitor.semantic.endpoint import ChatEndpoint, EndpointConfig, EndpointError, image_part
from monitor.semantic.images import overlay_heatmap

TextEncoder = Callable[[Sequence[str]], np.ndarray]

SYSTEM_PROMPT = "You analyse why robot manipulation attempts failed. You answer with JSON only."
REASON_PROMPT = """The robot's task: "{task}".
The images are frames of one failed attempt, in order: {frames}.{heatmap}
First describe the scene and what the robot does along the frames; then infer the most plausible cause of the \
failure.
Answer with JSON only: {{"description": "<the scene and the robot's behaviour>", "reason": "<the cause, one \
sentence>"}}"""
HEATMAP_NOTE = """ The last image is the frame where a runtime monitor called a failure, overlaid with its anomaly \
heatmap: red where the frame differs most from successful demonstrations."""
BASE_CLUSTER_PROMPT = """Below are the inferred failure reasons of {n} failed attempts of a robot at the task \
"{task}". Group them into distinct, interpretable failure clusters, each a unique failure mode; decide the number \
of clusters from the reasons. The clusters must be mutually exclusive (minimal overlap) and collectively \
exhaustive (every reason fits one)."""
CLUSTER_FORMAT = """

Reasons (a count in brackets: that many attempts gave the same reason):
{reasons}

Answer with JSON only: {{"clusters": [{{"name": "<short name>", "description": "<one sentence>", \
"keywords": ["<a representative situation>", ...]}}, ...]}}"""
PROPOSE_PROMPT = """Here is a prompt that asks a language model to cluster the failure reasons of a robot:
---
{prompt}
---
Write {k} alternative prompts for the same job, each phrased differently, following good prompting practice (a \
clear role, explicit criteria, step-by-step guidance). The list of reasons and the answer format are appended to \
each prompt, so leave them out.
Answer with JSON only: {{"prompts": ["<prompt>", ...]}}"""
AGGREGATE_PROMPT = """Here are {k} clusterings of the same {n} failure reasons of a robot at the task "{task}", \
each found with a different prompt:
{clusterings}

Merge them into one set of failure clusters: consolidate clusters that overlap, unify their names and \
descriptions, and keep a cluster only one clustering found if it is a distinct failure mode. The result must be \
mutually exclusive and collectively exhaustive.
Answer with JSON only: {{"clusters": [{{"name": "<short name>", "description": "<one sentence>", \
"keywords": ["<a representative situation>", ...]}}, ...]}}"""
ASSIGN_PROMPT = """Failure clusters of a robot at the task "{task}":
{clusters}

Assign each failed attempt below to the one cluster that its description and failure reason match, or to -1 if \
it matches none (an outlier).
{attempts}

Answer with JSON only: {{"assignments": {{"<attempt number>": <cluster number or -1>, ...}}}}"""


@dataclass
class LLMSettings(EndpointConfig):
    """The endpoint (EndpointConfig's fields) and how much each request carries."""

    frames: int = 4
    """Frames per failed rollout: its first, then the rest spread over the episode's second half, ending at its
    last."""
    upscale: int = 3
    """Frames are enlarged by this factor (nearest neighbour) before they are sent."""
    ensemble: int = 3
    """Clustering prompts the model proposes beside the base one."""
    batch: int = 20
    """Rollouts per assignment request."""
    timeout_s: float = 120.0
    """Per-request timeout (a clustering of hundreds of reasons takes a while to write)."""
    max_tokens: int = 2048

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("frames", "upscale", "batch"):
            if getattr(self, key) < 1:
                raise ValueError(f"llm.{key} must be >= 1, got {getattr(self, key)}")
        if self.ensemble < 0:
            raise ValueError(f"llm.ensemble must be >= 0, got {self.ensemble}")


@dataclass(frozen=True)
class Proposal:
    """A cluster as the model describes it, before any rollout is assigned to it."""

    name: str
    description: str
    keywords: tuple[str, ...]

    def text(self) -> str:
        return f"{self.name}: {self.description} ({', '.join(self.keywords)})"


def json_in(text: str) -> Any:
    """The JSON object in a reply (also inside code fences or after some prose), or None."""
    text = re.sub(r"```(?:json)?", "", text or "")
    start, end = text.find("{"), text.rfind("}")
    if not 0 <= start < end:
        return None
    try:
        return json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return None


def parse_reason(text: str) -> tuple[str, str] | None:
    """(description, reason) from a reason reply; None without a non-empty reason."""
    data = json_in(text)
    if not isinstance(data, dict) or not str(data.get("reason") or "").strip():
        return None
    return str(data.get("description") or "").strip(), str(data["reason"]).strip()


def parse_prompts(text: str) -> list[str] | None:
    """The proposed prompts (non-empty strings), or None."""
    data = json_in(text)
    prompts = data.get("prompts") if isinstance(data, dict) else None
    if not isinstance(prompts, list):
        return None
    kept = [p.strip() for p in prompts if isinstance(p, str) and p.strip()]
    return kept or None


def parse_clusters(text: str) -> list[Proposal] | None:
    """The clusters of a clustering or aggregation reply (each needs a name; names unique), or None."""
    data = json_in(text)
    found = data.get("clusters") if isinstance(data, dict) else None
    if not isinstance(found, list):
        return None
    proposals, names = [], set()
    for entry in found:
        if not isinstance(entry, dict) or not str(entry.get("name") or "").strip():
            continue
        name = str(entry["name"]).strip()
        if name.lower() in names:
            continue
        names.add(name.lower())
        keywords = entry.get("keywords") if isinstance(entry.get("keywords"), list) else []
        proposals.append(
            Proposal(
                name=name,
                description=str(entry.get("description") or "").strip(),
                keywords=tuple(str(k).strip() for k in keywords if str(k).strip()),
            )
        )
    return proposals or None


def parse_assignments(text: str, attempts: Sequence[int], clusters: int) -> dict[int, int]:
    """{attempt: cluster index or OUTLIER} for the attempts the reply assigns validly (others are left out)."""
    data = json_in(text)
    found = data.get("assignments") if isinstance(data, dict) else None
    if isinstance(found, list):  # [{"attempt": 3, "cluster": 1}, ...] is also read
        found = {str(e.get("attempt")): e.get("cluster") for e in found if isinstance(e, dict)}
    if not isinstance(found, dict):
        return {}
    valid = {}
    for attempt in attempts:
        value = found.get(str(attempt))
        if isinstance(value, bool) or not isinstance(value, int | str):
            continue
        try:
            cluster = int(value)
        except ValueError:
            continue
        if cluster == OUTLIER or 0 <= cluster < clusters:
            valid[attempt] = cluster
    return valid


def reason_images(frames: np.ndarray, count: int) -> list[np.ndarray]:
    """The first frame (what the scene looked like), then `count` - 1 spread over the second half, the last one
    included: the paper's downsampled tail, with the start that tells what was perturbed."""
    if count == 1 or len(frames) == 1:
        return [frames[0]]
    tail = np.linspace(len(frames) // 2, len(frames) - 1, count - 1).round().astype(int)
    return [frames[0], *(frames[i] for i in tail)]


class LanguageModelClustering:
    """The four steps of the module docstring against one endpoint; `fallbacks` counts each step's fallbacks."""

    def __init__(self, settings: LLMSettings, *, task: str, encode: TextEncoder):
        self.settings = settings
        self.task = task
        self.encode = encode
        self.endpoint = ChatEndpoint(settings)
        self.fallbacks: Counter[str] = Counter()
        self.prompts_used: list[str] = []

    def ask(self, step: str, content: str | list[dict[str, Any]], parse: Callable[[str], Any]) -> Any:
        """The parsed answer, or None (counted and warned once per step) when there is none."""
        try:
            reply = self.endpoint.complete(self.endpoint.request_body(SYSTEM_PROMPT, content))
            parsed = parse(reply)
            problem = f"no usable answer in {reply[:160]!r}"
        except EndpointError as error:
            parsed, problem = None, f"endpoint {self.endpoint.url} failed: {error}"
        if parsed is None or parsed == {}:
            if not self.fallbacks[step]:
                warnings.warn(f"{step}: {problem}; falling back (said once per step)", RuntimeWarning, stacklevel=2)
            self.fallbacks[step] += 1
        return parsed

    def reason(
        self, frames: np.ndarray, *, offline: str, heatmap: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[str, str]:
        """(description, reason) of one failed rollout from its frames (T, H, W, 3) and, if any, (the frame of the
        monitor's failure verdict, its heatmap); `offline` (the perception reason) when the model gives none."""
        images = reason_images(frames, self.settings.frames)
        words = ["the first frame"] + [f"a later frame {i}" for i in range(2, len(images))]
        words = [*words, "the last frame"] if len(images) > 1 else words
        if heatmap is not None:
            images.append(overlay_heatmap(*heatmap))
        content: list[dict[str, Any]] = [
            {
                "type": "text",
                "text": REASON_PROMPT.format(
                    task=self.task, frames=", ".join(words), heatmap=HEATMAP_NOTE if heatmap is not None else ""
                ),
            },
            *(image_part(image, self.settings.upscale) for image in images),
        ]
        answer = self.ask("reason", content, parse_reason)
        return answer if answer is not None else ("", offline)

    def prompts(self, n: int) -> list[str]:
        """The base clustering prompt for `n` reasons and the ones the model proposes (the prompt ensemble)."""
        base = BASE_CLUSTER_PROMPT.format(n=n, task=self.task)
        if not self.settings.ensemble:
            return [base]
        proposed = self.ask(
            "prompt ensemble", PROPOSE_PROMPT.format(prompt=base, k=self.settings.ensemble), parse_prompts
        )
        return [base, *(proposed or [])[: self.settings.ensemble]]

    def clusterings(self, reasons: Sequence[str]) -> list[list[Proposal]]:
        """One clustering of all reasons per prompt of the ensemble (the ones without a usable answer left out)."""
        counts = Counter(reasons)
        listed = "\n".join(f"- {r}" + (f" [{n}]" if n > 1 else "") for r, n in counts.most_common())
        self.prompts_used = self.prompts(len(reasons))
        found = []
        for prompt in self.prompts_used:
            clustering = self.ask("clustering", prompt + CLUSTER_FORMAT.format(reasons=listed), parse_clusters)
            if clustering:
                found.append(clustering)
        return found

    def aggregate(self, clusterings: list[list[Proposal]], n: int) -> list[Proposal]:
        """One set of clusters from several (the first clustering when the merge gives none)."""
        if len(clusterings) == 1:
            return clusterings[0]
        listed = "\n".join(
            f"Clustering {k + 1}:\n" + "\n".join(f"- {p.text()}" for p in clustering)
            for k, clustering in enumerate(clusterings)
        )
        merged = self.ask(
            "aggregation",
            AGGREGATE_PROMPT.format(k=len(clusterings), n=n, task=self.task, clusterings=listed),
            parse_clusters,
        )
        return merged or clusterings[0]

    def assignments(
        self, descriptions: Sequence[str], reasons: Sequence[str], proposals: Sequence[Proposal]
    ) -> np.ndarray:
        """Each rollout's cluster index or OUTLIER: the model's, in batches, else the nearest cluster by
        embedding."""
        listed = "\n".join(f"{k}. {p.text()}" for k, p in enumerate(proposals))
        labels = np.full(len(reasons), OUTLIER - 1)  # OUTLIER - 1: not assigned yet
        for start in range(0, len(reasons), self.settings.batch):
            batch = range(start, min(start + self.settings.batch, len(reasons)))
            attempts = "\n".join(
                f"Attempt {i}: " + (f"{descriptions[i]} " if descriptions[i] else "") + f"Failure reason: {reasons[i]}"
                for i in batch
            )
            answer = self.ask(
                "assignment",
                ASSIGN_PROMPT.format(task=self.task, clusters=listed, attempts=attempts),
                lambda reply, batch=batch: parse_assignments(reply, list(batch), len(proposals)),
            )
            for attempt, cluster in (answer or {}).items():
                labels[attempt] = cluster
        missing = np.flatnonzero(labels == OUTLIER - 1)
        if len(missing):
            self.fallbacks["assignment by embedding"] += len(missing)
            nearest = embedding_assignment(
                self.encode([reasons[i] for i in missing]), self.encode([p.text() for p in proposals])
            )
            labels[missing] = nearest
        return labels

    def run(
        self, descriptions: Sequence[str], reasons: Sequence[str], *, distance: float, min_size: int
    ) -> tuple[list[Cluster], np.ndarray, np.ndarray]:
        """(clusters largest first, each reason's cluster id or OUTLIER, the reasons' embeddings); the offline
        clusters (`distance`, `min_size`) when no prompt gave a clustering."""
        embeddings = self.encode(list(reasons))
        clusterings = self.clusterings(reasons)
        if not clusterings:
            warnings.warn("no clustering came back from the model; using the offline clusters", RuntimeWarning, 2)
            self.fallbacks["offline clusters"] += 1
            clusters, labels = cluster_reasons(reasons, embeddings, distance=distance, min_size=min_size)
            return clusters, labels, embeddings
        proposals = self.aggregate(clusterings, len(reasons))
        labels = self.assignments(descriptions, reasons, proposals)
        return named_clusters(proposals, labels, embeddings), relabel_by_size(labels), embeddings


def embedding_assignment(reasons: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Each reason's nearest cluster (by cosine similarity of their texts' embeddings): the paper's EA."""
    return np.argmax(unit(reasons) @ unit(clusters).T, axis=1)


def size_order(labels: np.ndarray) -> list[int]:
    """The clusters that got members, largest first (ties: in the model's order)."""
    used = [int(c) for c in np.unique(labels) if c != OUTLIER]
    return sorted(used, key=lambda c: (-int((labels == c).sum()), c))


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Cluster indices renumbered 0.. by size; OUTLIER kept."""
    new = np.full(len(labels), OUTLIER)
    for rank, c in enumerate(size_order(labels)):
        new[labels == c] = rank
    return new


def named_clusters(proposals: Sequence[Proposal], labels: np.ndarray, embeddings: np.ndarray) -> list[Cluster]:
    """The proposals that got members as Clusters (ids by size, frequencies counted from the assignment, centres
    the members' mean embedding); a proposal nobody was assigned to is dropped."""
    clusters = []
    for rank, c in enumerate(size_order(labels)):
        members = labels == c
        proposal = proposals[c]
        clusters.append(
            Cluster(
                id=rank,
                name=proposal.name,
                keywords=proposal.keywords,
                description=proposal.description,
                size=int(members.sum()),
                frequency=float(members.mean()),
                centre=unit(np.asarray(embeddings, dtype=float)[members].mean(axis=0)),
            )
        )
    return clusters
