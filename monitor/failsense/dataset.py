"""`python -m monitor.failsense.dataset out=data/smf_stack.hdf5`: semantic-misalignment failure data (SMF).

I-FailSense's recipe (../shared/seeds/001, §III) on robosuite: scripted experts do each behaviour of the scene
(monitor.failsense.behaviours) with the cubes painted from a palette; every trajectory (T frames of each view, the
first to the last, tiled into one image) is paired with its own instruction (label 0, success) and with the
instruction of the other behaviour of its type (label 1, failure: semantic misalignment). Control failures are
trajectories that fail their own instruction: the expert let go of the cube after lifting it (`drop`), or did not
manage (`missed`); they are labelled 1 and never go into the training split, so a classifier's detection of them is
zero-shot.

Splits: `test` holds the episodes whose colour pair is in `test_pairs` (never seen in training, in either order),
`valid` every `valid_every`-th remaining episode, `train` the rest; every episode has a seed of its own. The file
grows one episode at a time (Ctrl-C waits for the one being written), so a rerun with the same `out` resumes; the
pairs in `examples/` and the dataset card (`<out>.md`) are written when the last episode is in.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from envs.cli import command_line, parse_config
from envs.hdf5 import deferred_interrupt
from envs.markdown import markdown_table
from monitor.failsense.behaviours import BEHAVIOURS, CUBES, PALETTE, SCENE_TASK, Behaviour, counterpart, paint_cubes

KINDS = ("aligned", "misaligned", "drop", "missed")
SPLITS = ("train", "valid", "test")
BY_NAME = {b.name: b for b in BEHAVIOURS}


@dataclass
class DatasetConfig:
    out: str = "data/smf_stack.hdf5"
    colours: list[str] = field(default_factory=lambda: list(PALETTE))
    """Palette colours the cubes are painted with (PALETTE's names); every ordered pair of two is a scene."""
    test_pairs: list[str] = field(default_factory=lambda: ["blue/yellow", "green/blue"])
    """Colour pairs held out for the test split, either order (`a/b`)."""
    repeats: int = 2
    """Expert episodes per (behaviour, ordered colour pair)."""
    drops: int = 1
    """Control-failure episodes per (behaviour, ordered colour pair): the expert lets go after lifting."""
    frames: int = 4
    """T: frames per view in a trajectory image, evenly spaced from the first to the last."""
    views: list[str] = field(default_factory=lambda: ["agentview"])
    """N: cameras, one row of the trajectory image each."""
    image_size: int = 84
    max_steps: int = 200
    """Steps an episode may take; it ends 10 steps after its behaviour is done (or the cube was dropped)."""
    valid_every: int = 5
    seed: int = 0
    """Seed of the first episode; episode k uses seed + k."""

    def __post_init__(self) -> None:
        unknown = [c for c in self.colours if c not in PALETTE]
        if unknown or len(self.colours) < 2:
            raise ValueError(f"colours must name at least two of {', '.join(PALETTE)}; got {self.colours}")
        for pair in self.test_pairs:
            if len(pair.split("/")) != 2 or not set(pair.split("/")) <= set(self.colours):
                raise ValueError(f"test pair {pair!r} must be two of the colours {self.colours} as 'a/b'")
        for key in ("repeats", "frames", "image_size", "max_steps", "valid_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.drops < 0 or not self.views:
            raise ValueError("need drops >= 0 and at least one view")


@dataclass(frozen=True)
class EpisodePlan:
    index: int
    seed: int
    behaviour: Behaviour
    colours: tuple[str, str]
    """Colours of cubeA and cubeB."""
    drop: bool
    split: str


def episode_plans(config: DatasetConfig) -> list[EpisodePlan]:
    """Every episode of the dataset in a fixed order (the order a resumed run continues in)."""
    held_out = {frozenset(p.split("/")) for p in config.test_pairs}
    plans, kept = [], {False: 0, True: 0}  # counted apart, so expert and drop episodes both reach valid
    runs = [False] * config.repeats + [True] * config.drops
    for colours, behaviour, drop in itertools.product(itertools.permutations(config.colours, 2), BEHAVIOURS, runs):
        index = len(plans)
        if frozenset(colours) in held_out:
            split = "test"
        else:
            split = "valid" if kept[drop] % config.valid_every == config.valid_every - 1 else "train"
            kept[drop] += 1
        plans.append(EpisodePlan(index, config.seed + index, behaviour, colours, drop, split))
    return plans


def tile(frames: np.ndarray, count: int) -> np.ndarray:
    """(N views, S steps, H, W, 3) → one image (N·H, count·W, 3): `count` evenly spaced steps of each view."""
    steps = np.linspace(0, frames.shape[1] - 1, count).round().astype(int)
    chosen = frames[:, steps]  # (N, T, H, W, 3)
    n, t, h, w, c = chosen.shape
    return chosen.transpose(0, 2, 1, 3, 4).reshape(n * h, t * w, c)


class EpisodeRunner:
    """One scene and renderers, reused across episodes."""

    def __init__(self, config: DatasetConfig):
        from envs.render import CameraRenderer
        from envs.scene import Scene

        self.config = config
        self.scene = Scene(SCENE_TASK)
        self.renderers = [CameraRenderer(self.scene.model, v, config.image_size) for v in config.views]

    def render(self) -> np.ndarray:
        return np.stack([r.render(self.scene.data) for r in self.renderers])

    def run(self, plan: EpisodePlan) -> tuple[np.ndarray, bool, int]:
        """(trajectory image, whether the behaviour is done at the end, steps taken)."""
        from policies.scripted import ScriptedExpert

        scene = self.scene
        scene.reset(plan.seed)
        paint_cubes(scene, dict(zip(CUBES, plan.colours)))
        obs = scene.observe()
        expert = ScriptedExpert(SCENE_TASK, plan=plan.behaviour.plan(), seed=plan.seed)
        frames, finished_at, released_at = [self.render()], None, None
        for step in range(self.config.max_steps):
            action = expert.act(obs)
            if plan.drop and released_at is None and expert.phase in ("lift", "carry") and expert.phase_steps > 3:
                released_at = step
            if released_at is not None:
                action[-1] = -1.0  # let go, and keep the hand where it is
                action[:-1] = 0.0
            obs = scene.step(action)
            frames.append(self.render())
            # The episode ends 10 steps after the cube was let go, or after the behaviour was first seen done.
            if released_at is not None:
                finished_at = released_at
            elif plan.behaviour.done(scene) and not plan.drop:
                finished_at = step if finished_at is None else finished_at
            else:
                finished_at = None
            if finished_at is not None and step - finished_at >= 10:
                break
        return tile(np.stack(frames, axis=1), self.config.frames), plan.behaviour.done(scene), step + 1

    def close(self) -> None:
        for r in self.renderers:
            r.close()
        self.scene.close()


def episode_kind(plan: EpisodePlan, done: bool) -> str:
    """aligned when the behaviour ended done (a dropped cube may still land on its support), else the failure."""
    return "aligned" if done else ("drop" if plan.drop else "missed")


def append_episode(file: h5py.File, plan: EpisodePlan, image: np.ndarray, done: bool, steps: int) -> None:
    episodes = file["episodes"]
    n = episodes["image"].shape[0]
    for name in episodes:
        episodes[name].resize(n + 1, axis=0)
    record = {
        "image": image,
        "behaviour": plan.behaviour.name,
        "colours": "/".join(plan.colours),
        "seed": plan.seed,
        "split": plan.split,
        "kind": episode_kind(plan, done),
        "done": done,
        "steps": steps,
    }
    for name, value in record.items():
        episodes[name][n] = value
    file.flush()


def create_file(path: Path, config: DatasetConfig, image_shape: tuple[int, ...]) -> h5py.File:
    file = h5py.File(path, "w")
    file.attrs["config"] = json.dumps(asdict(config))
    text = h5py.string_dtype()
    episodes = file.create_group("episodes")
    episodes.create_dataset(
        "image", (0, *image_shape), np.uint8, maxshape=(None, *image_shape), chunks=(1, *image_shape)
    )
    for name, dtype in (("behaviour", text), ("colours", text), ("split", text), ("kind", text)):
        episodes.create_dataset(name, (0,), dtype, maxshape=(None,))
    for name, dtype in (("seed", np.int64), ("done", bool), ("steps", np.int32)):
        episodes.create_dataset(name, (0,), dtype, maxshape=(None,))
    return file


def open_for_resume(path: Path, config: DatasetConfig) -> h5py.File | None:
    """The existing file to continue, or None if there is none; a file made with other settings is refused."""
    if not path.exists():
        return None
    file = h5py.File(path, "a")
    saved = json.loads(file.attrs["config"])
    if saved != json.loads(json.dumps(asdict(config))):
        changed = sorted(k for k in saved if saved[k] != asdict(config).get(k))
        file.close()
        raise SystemExit(f"error: {path} was made with other settings ({', '.join(changed)}); use another out=")
    return file


def write_examples(file: h5py.File) -> dict[str, int]:
    """The labelled (episode, instruction) pairs; returns how many of each kind and split."""
    episodes = file["episodes"]
    rows = []
    for i in range(episodes["image"].shape[0]):
        behaviour = BY_NAME[episodes["behaviour"][i].decode()]
        colours = dict(zip(CUBES, episodes["colours"][i].decode().split("/")))
        kind, split = episodes["kind"][i].decode(), episodes["split"][i].decode()
        rows.append((i, behaviour.instruction(colours), int(kind != "aligned"), kind, split))
        if kind == "aligned":
            rows.append((i, counterpart(behaviour).instruction(colours), 1, "misaligned", split))
    if "examples" in file:
        del file["examples"]
    group = file.create_group("examples")
    text = h5py.string_dtype()
    group["episode"] = np.array([r[0] for r in rows], dtype=np.int64)
    group.create_dataset("instruction", data=[r[1] for r in rows], dtype=text)
    group["label"] = np.array([r[2] for r in rows], dtype=np.int8)
    group.create_dataset("kind", data=[r[3] for r in rows], dtype=text)
    group.create_dataset("split", data=[r[4] for r in rows], dtype=text)
    counts: dict[str, int] = {}
    for r in rows:
        counts[f"{r[4]}/{r[3]}"] = counts.get(f"{r[4]}/{r[3]}", 0) + 1
    return counts


@dataclass(frozen=True)
class Examples:
    """The labelled pairs of an SMF file, with the trajectory images they point at."""

    images: np.ndarray
    """(episodes, H, W, 3) uint8 trajectory images."""
    episode: np.ndarray
    instruction: list[str]
    label: np.ndarray
    kind: np.ndarray
    split: np.ndarray
    frames: int
    views: int

    def select(self, *, splits: tuple[str, ...], kinds: tuple[str, ...] = KINDS) -> np.ndarray:
        """Indices of the examples in these splits and of these kinds."""
        return np.flatnonzero(np.isin(self.split, splits) & np.isin(self.kind, kinds))


def read_examples(path: str | Path) -> Examples:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no SMF dataset at {path}; make one with python -m monitor.failsense.dataset out={path}")
    with h5py.File(path, "r") as file:
        if "examples" not in file:
            raise ValueError(
                f"{path} is unfinished (no examples/): rerun python -m monitor.failsense.dataset out={path}"
            )
        config = json.loads(file.attrs["config"])
        group = file["examples"]
        return Examples(
            images=file["episodes/image"][:],
            episode=group["episode"][:],
            instruction=[t.decode() for t in group["instruction"][:]],
            label=group["label"][:].astype(np.int64),
            kind=np.array([t.decode() for t in group["kind"][:]]),
            split=np.array([t.decode() for t in group["split"][:]]),
            frames=config["frames"],
            views=len(config["views"]),
        )


def dataset_card(path: Path, config: DatasetConfig, counts: dict[str, int], command: str) -> str:
    rows = [[split, *(counts.get(f"{split}/{kind}", 0) for kind in KINDS)] for split in SPLITS]
    return "\n".join(
        [
            f"# Semantic-misalignment failures: {path.name}",
            "",
            f"Command: `{command}`",
            "",
            f"Scene: robosuite {SCENE_TASK.title()}, cubes painted from {', '.join(config.colours)}; behaviours: "
            + ", ".join(b.name for b in BEHAVIOURS)
            + f". Trajectory images: {config.frames} frames of {', '.join(config.views)} at {config.image_size} px, "
            "tiled left to right. Label 1 = the trajectory fails its instruction.",
            f"Held out for test: colour pairs {', '.join(config.test_pairs)}. Control failures (drop, missed) are "
            "kept out of training by `monitor.failsense.train`.",
            "",
            markdown_table(["split", *KINDS], rows),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    config = parse_config(DatasetConfig, argv)
    path = Path(config.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    plans = episode_plans(config)
    file = open_for_resume(path, config)
    done = 0 if file is None else file["episodes"]["image"].shape[0]
    runner = EpisodeRunner(config)
    try:
        for plan in tqdm(plans, initial=done, total=len(plans), desc="SMF episodes", unit="episode"):
            if plan.index < done:
                continue
            image, finished, steps = runner.run(plan)
            with deferred_interrupt():
                if file is None:
                    file = create_file(path, config, image.shape)
                append_episode(file, plan, image, finished, steps)
        counts = write_examples(file)
    finally:
        runner.close()
        if file is not None:
            file.close()
    card = dataset_card(path, config, counts, command_line("monitor.failsense.dataset", config))
    path.with_suffix(".md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
