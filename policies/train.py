"""`python -m policies.train task=lift arch=bc_image`: behaviour cloning from a robomimic-layout HDF5 file.

Loads the whole dataset into memory (uint8 frames), trains with random crops, logs TensorBoard scalars, evaluates
by rollouts every `eval_every` epochs on seeds no evaluation command uses (10_000+), and keeps the best checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from envs.choices import check_choice
from envs.cli import parse_config
from envs.hdf5 import demo_names
from envs.perturbations import NOMINAL, Perturbation, get_perturbations
from envs.rollout import get_runner
from envs.tasks import TaskSpec, get_task
from policies.augment import AUGMENTATIONS
from policies.base import image_key
from policies.checkpoint import CONFIG, Checkpoint, Normalization, load_checkpoint, save_checkpoint
from policies.diffusion import noise_prediction_loss, training_schedule
from policies.learned import PROPRIO_KEYS, STATE_KEY, BCPolicy
from policies.models import ARCHS, ModelConfig, build_model

EVAL_SEED = 10_000


@dataclass
class TrainConfig:
    task: str = "lift"
    arch: str = "bc_image"
    """bc_image | bc_rnn | bc_lowdim | diffusion"""
    data: str = ""
    """Demonstrations: one HDF5 file or several, comma-separated (default data/<task>_scripted.hdf5)."""
    init: str = ""
    """Fine-tune this FailScope checkpoint instead of starting from random weights: its model settings and input
    normalisation are kept (`arch` must name its architecture)."""
    out: str = ""
    """Checkpoint directory (default runs/train/<task>_<arch>)."""
    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    eval_every: int = 5
    """Epochs between rollout evaluations (0: never; the last epoch's weights are kept)."""
    eval_episodes: int = 10
    eval_modes: str = ""
    """Perturbed conditions the rollout evaluations also run, on the same seeds (comma-separated; `a+b` composes
    parts). The kept checkpoint then maximises the mean of nominal success and of these modes' mean success, so
    that repairing them counts no more than keeping the nominal scene."""
    perturbation_file: str = ""
    """User-defined perturbations eval_modes may name (YAML, envs/perturbations/user.py)."""
    seed: int = 0
    window: int = 10
    """bc_rnn training sequence length."""
    max_demos: int = 0
    """Use only the first N training demos (0 = all)."""
    channels: tuple[int, ...] = (32, 64, 64)
    """Conv widths of the image encoder (narrower trains faster on a CPU)."""
    keypoints: int = 32
    """Spatial-softmax keypoints of the image encoder."""
    augment: tuple[str, ...] = ("crop",)
    """Training-time image augmentations, in order (policies/augment.py): crop, colour."""


@dataclass
class Arrays:
    images: np.ndarray
    proprio: np.ndarray
    state: np.ndarray
    actions: np.ndarray
    starts: np.ndarray
    """Index of each sample's episode start (for RNN windows)."""
    ends: np.ndarray


def load_many(paths: list[str], split: str, camera: str, with_images: bool, max_demos: int = 0) -> Arrays:
    """The `split` of several files as one set of arrays (`max_demos` applies to the first file only: the others
    are what fine-tuning adds). A file may have none of the split (a few added demos may all be for training), as
    long as one of them has some."""
    parts = []
    for i, path in enumerate(paths):
        with h5py.File(path, "r") as file:
            if not demo_names(file, split):
                continue
        parts.append(load_arrays(path, split, camera, with_images, max_demos if i == 0 else 0))
    if not parts:
        raise ValueError(f"{', '.join(paths)}: no demonstrations in split {split!r}")
    offsets = np.cumsum([0] + [len(part.actions) for part in parts[:-1]])
    return Arrays(
        images=np.concatenate([part.images for part in parts]) if with_images else np.zeros((0,)),
        proprio=np.concatenate([part.proprio for part in parts]),
        state=np.concatenate([part.state for part in parts]),
        actions=np.concatenate([part.actions for part in parts]),
        starts=np.concatenate([part.starts + offset for part, offset in zip(parts, offsets)]),
        ends=np.concatenate([part.ends + offset for part, offset in zip(parts, offsets)]),
    )


def load_arrays(path: str, split: str, camera: str, with_images: bool, max_demos: int = 0) -> Arrays:
    images, proprio, state, actions, starts, ends = [], [], [], [], [], []
    offset = 0
    with h5py.File(path, "r") as file:
        names = demo_names(file, split)
        if max_demos:
            names = names[:max_demos]
        for name in names:
            demo = file["data"][name]
            obs, n = demo["obs"], int(demo.attrs["num_samples"])
            if with_images:
                images.append(obs[image_key(camera)][:])
            proprio.append(np.concatenate([obs[k][:] for k in PROPRIO_KEYS], axis=1))
            state.append(obs[STATE_KEY][:])
            actions.append(demo["actions"][:])
            starts.append(np.full(n, offset))
            ends.append(np.full(n, offset + n))
            offset += n
    if not actions:
        raise ValueError(f"{path} has no demonstrations in split {split!r}")
    return Arrays(
        images=np.concatenate(images) if with_images else np.zeros((0,)),
        proprio=np.concatenate(proprio).astype(np.float32),
        state=np.concatenate(state).astype(np.float32),
        actions=np.concatenate(actions).astype(np.float32),
        starts=np.concatenate(starts),
        ends=np.concatenate(ends),
    )


def check_dataset(path: str) -> None:
    """Fails early, before any training, on files that cannot teach anything."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} does not exist; collect demonstrations with python -m policies.collect")
    with h5py.File(path, "r") as file:
        if "data" not in file or len(file["data"]) == 0:
            raise ValueError(f"{path} holds no demonstrations")
        outcomes = {file["data"][n].attrs.get("outcome", "success") for n in file["data"]}
        if "success" not in outcomes:
            raise ValueError(f"{path} holds only failed episodes; behaviour cloning needs successful ones")
        if "mask" not in file or "train" not in file["mask"]:
            raise ValueError(f"{path} has no mask/train split")


def load_start(path: str, arch: str, task: str) -> Checkpoint:
    """The checkpoint a fine-tuning starts from, checked against what the run was asked to train."""
    start = load_checkpoint(path)
    if start.model_config.arch != arch:
        raise ValueError(
            f"init checkpoint {path} is a {start.model_config.arch} policy; pass arch={start.model_config.arch}"
        )
    if start.task != task:
        raise ValueError(f"init checkpoint {path} was trained for task {start.task!r}, not {task!r}")
    return start


def center(images: np.ndarray, size: int) -> np.ndarray:
    top = (images.shape[-3] - size) // 2
    return images[..., top : top + size, top : top + size, :]


class Trainer:
    def __init__(self, config: TrainConfig):
        check_choice(config.arch, ARCHS, "arch")
        for name in config.augment:
            check_choice(name, AUGMENTATIONS, "augment")
        self.config = config
        self.task = get_task(config.task)
        self.data_paths = [p.strip() for p in config.data.split(",") if p.strip()] or [
            f"data/{self.task.name}_scripted.hdf5"
        ]
        for path in self.data_paths:
            check_dataset(path)
        self.data_path = ",".join(self.data_paths)
        self.out = Path(config.out or f"runs/train/{self.task.name}_{config.arch}")
        self.eval_conditions = evaluation_conditions(self.task, config.eval_modes, config.perturbation_file)
        start = load_start(config.init, config.arch, self.task.name) if config.init else None
        with_images = config.arch != "bc_lowdim"
        self.train = load_many(self.data_paths, "train", self.task.camera, with_images, config.max_demos)
        self.valid = load_many(self.data_paths, "valid", self.task.camera, with_images)
        if start is not None:
            self.norm, self.model_config = start.normalization, start.model_config
        else:
            self.norm = Normalization(
                proprio_mean=self.train.proprio.mean(0).tolist(),
                proprio_std=np.maximum(self.train.proprio.std(0), 1e-3).tolist(),
                state_mean=self.train.state.mean(0).tolist(),
                state_std=np.maximum(self.train.state.std(0), 1e-3).tolist(),
            )
            self.model_config = ModelConfig(
                arch=config.arch,
                image_size=self.task.image_size,
                crop_size=self.task.image_size - 8,
                state_dim=self.train.state.shape[1],
                window=config.window,
                channels=tuple(config.channels),
                keypoints=config.keypoints,
            )
        self.augmentations = [AUGMENTATIONS[name](self.model_config.crop_size) for name in config.augment]
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.model = build_model(self.model_config)
        if start is not None:
            self.model.load_state_dict(start.state_dict)
        self.schedule = training_schedule(self.model_config) if config.arch == "diffusion" else None

    def _batch(self, arrays: Arrays, index: np.ndarray, train: bool) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        arch, size = self.config.arch, self.model_config.crop_size
        if arch == "bc_rnn":
            # Windows that end at the sampled step, clamped to the episode's start (repeat the first frame).
            offsets = np.arange(-self.config.window + 1, 1)
            index = np.maximum(index[:, None] + offsets[None], arrays.starts[index][:, None])
        proprio = torch.from_numpy(self.norm.proprio(arrays.proprio[index]).astype(np.float32))
        if arch == "diffusion":
            # The chunk of actions from the sampled step on; past the episode's end the last action repeats.
            future = index[:, None] + np.arange(self.model_config.chunk)[None]
            actions = torch.from_numpy(arrays.actions[np.minimum(future, arrays.ends[index][:, None] - 1)])
        else:
            actions = torch.from_numpy(arrays.actions[index])
        if arch == "bc_lowdim":
            state = torch.from_numpy(self.norm.state(arrays.state[index]).astype(np.float32))
            return (proprio, state), actions
        images = arrays.images[index.reshape(-1)]
        if train:
            for augmentation in self.augmentations:
                images = augmentation(images, self.rng)
        if images.shape[1] != size:  # evaluation, or training without the random crop
            images = center(images, size)
        images = torch.from_numpy(np.ascontiguousarray(images)).reshape(*index.shape, size, size, 3)
        return (images, proprio), actions

    def _loss(self, inputs: tuple[torch.Tensor, ...], actions: torch.Tensor) -> torch.Tensor:
        if self.config.arch == "diffusion":
            images, proprio = inputs
            return noise_prediction_loss(self.model, self.schedule, images=images, proprio=proprio, actions=actions)
        out = self.model(*inputs)
        pred = out[0] if isinstance(out, tuple) else out
        return F.mse_loss(pred, actions)

    def evaluate(self) -> dict[str, float]:
        """Success rate per evaluation condition (nominal first), on seeds EVAL_SEED on."""
        policy = BCPolicy(self.checkpoint())
        runner = get_runner(self.task.name)
        episodes = self.config.eval_episodes
        return {
            name: sum(runner.run(policy, parts, seed=EVAL_SEED + i).success for i in range(episodes)) / episodes
            for name, parts in self.eval_conditions.items()
        }

    def checkpoint(self, **training) -> Checkpoint:
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return Checkpoint(self.task.name, self.model_config, self.norm, state, training)

    def run(self) -> Path:
        from torch.utils.tensorboard import SummaryWriter

        config = self.config
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        n = len(self.train.actions)
        steps_per_epoch = max(1, n // config.batch_size)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs * steps_per_epoch)
        writer = SummaryWriter(str(self.out / "tensorboard"))
        best: tuple[float, float] | None = None
        history, started = [], time.perf_counter()
        for epoch in (bar := tqdm(range(1, config.epochs + 1), desc=f"train {config.arch}", unit="epoch")):
            self.model.train()
            order = self.rng.permutation(n)
            losses = []
            for i in range(steps_per_epoch):
                inputs, actions = self._batch(
                    self.train, order[i * config.batch_size : (i + 1) * config.batch_size], True
                )
                loss = self._loss(inputs, actions)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
            self.model.eval()
            with torch.no_grad():
                index = np.arange(len(self.valid.actions))
                valid_loss = float(
                    np.mean(
                        [
                            self._loss(*self._batch(self.valid, chunk, False)).item()
                            for chunk in np.array_split(index, max(1, len(index) // 256))
                        ]
                    )
                )
            record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "valid_loss": valid_loss}
            writer.add_scalar("loss/train", record["train_loss"], epoch)
            writer.add_scalar("loss/valid", valid_loss, epoch)
            evaluate_now = config.eval_every and (epoch % config.eval_every == 0 or epoch == config.epochs)
            if evaluate_now:
                rates = self.evaluate()
                record["eval_success"] = selection_score(rates)
                writer.add_scalar("eval/success_rate", record["eval_success"], epoch)
                if len(rates) > 1:
                    record["eval_rates"] = rates
                    for name, rate in rates.items():
                        writer.add_scalar(f"eval/{name}", rate, epoch)
            history.append(record)
            bar.set_postfix({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in record.items() if k != "epoch"})
            score = (record.get("eval_success", -1.0), -valid_loss)
            if evaluate_now or not config.eval_every:
                if best is None or score > best:
                    best = score
                    save_checkpoint(
                        self.out,
                        self.checkpoint(
                            data=self.data_path,
                            epoch=epoch,
                            eval_success=record.get("eval_success"),
                            eval_rates=record.get("eval_rates"),
                            eval_episodes=config.eval_episodes,
                            eval_seeds=f"{EVAL_SEED}..{EVAL_SEED + config.eval_episodes - 1}",
                            train_samples=n,
                            config=config.__dict__,
                        ),
                    )
        writer.close()
        (self.out / "history.json").write_text(json.dumps(history, indent=1))
        wall_seconds = time.perf_counter() - started
        record_wall_time(self.out, wall_seconds)
        print(f"trained in {wall_seconds:.0f} s; best checkpoint (eval success, -valid loss) = {best} in {self.out}")
        return self.out


def evaluation_conditions(task: TaskSpec, modes: str, perturbation_file: str = "") -> dict[str, list[Perturbation]]:
    """The rollout evaluations' conditions: the nominal scene, then each of `modes` (its `+` parts applied together);
    unknown names fail here, before any training."""
    conditions: dict[str, list[Perturbation]] = {NOMINAL: []}
    for mode in (m.strip() for m in modes.split(",") if m.strip()):
        conditions[mode] = get_perturbations(
            task, [part for part in mode.split("+") if part.strip()], perturbation_file
        )
    return conditions


def selection_score(rates: dict[str, float]) -> float:
    """Nominal success alone, or its mean with the perturbed conditions' mean success."""
    perturbed = [rate for name, rate in rates.items() if name != NOMINAL]
    return rates[NOMINAL] if not perturbed else (rates[NOMINAL] + float(np.mean(perturbed))) / 2


def record_wall_time(directory: Path, seconds: float) -> None:
    """Adds the whole run's wall time (training and its rollout evaluations) to the kept checkpoint's config, for
    its model card."""
    path = directory / CONFIG
    config = json.loads(path.read_text())
    config["training"]["wall_seconds"] = round(seconds)
    config["training"]["threads"] = torch.get_num_threads()
    path.write_text(json.dumps(config, indent=2))


def main(argv: list[str] | None = None) -> None:
    config = parse_config(TrainConfig, argv)
    try:
        out = Trainer(config).run()
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"checkpoint: {out}")


if __name__ == "__main__":
    main()
