"""`python -m monitor.dataset task=lift`: SimFails, a benchmark for runtime failure monitors, from rollouts of the
policy under test with per-frame `anomaly` and `failure` labels taken from simulator truth.

Three splits, from disjoint seed ranges (all derived from `seed`):

- `fit` — successful nominal episodes (seeds seed+100000, +100001, ... until `fit_episodes` succeed; the same seeds
  `monitor.build.build_monitor` uses). Monitors learn and calibrate on these only.
- `filter` — nominal, reset-time perturbation and event episodes (seeds from seed+200000) for training a semantic
  filter.
- `test` — the same kinds (seeds from seed+0) for measuring. Within a split, nominal episodes use seeds base+0..,
  and the k-th perturbation of the task's catalogue base+1000·(k+1)+0.., so every episode has its own scene.

Kinds: `nominal`; `reset` — every reset-time perturbation of the task's catalogue (colours, sizes, lights, camera,
distractor, dynamics, noise); `event` — the mid-episode events (benign: light change, distractor appears;
failure-inducing: object nudged or teleported, gripper forced open), at the catalogue's steps.

Two designs. `design=seeds` (SimFails, the default): filter and test hold the same perturbations on other seeds.
`design=families` (SimFails v2, monitor/variations.py): the test split holds only families nothing else has shown —
SimFails v2's own variations (failures that are not timeouts: the grasp lost, the object pushed away or knocked off;
benign changes of pace and of a moving scene) and a few held-out catalogue families — while the filter split holds
the rest of the catalogue. Its default file is data/simfails2_<task>_<policy>.hdf5.

Label rules (frame t is the camera frame the policy saw before its action t):

1. Visual onset — from when the frame shows something nominal episodes never show:
   - a reset-time perturbation of a visual family (everything but object mass, friction, action noise): frame 0;
     the non-visual ones have no visual onset (a heavy cube looks like a cube);
   - light change, distractor, object teleport events: the event step (they act before that step's frame);
   - object nudge: the first frame, from the event step on, where the object is ≥ 1 cm from where it was at the
     event step (a velocity takes a step to show), else the frame after the event step;
   - gripper forced open: only while it is forced, frames at_step+1 .. at_step+duration (the first overridden
     action shows in the next frame); afterwards the scene looks nominal again unless the task fails. Whether the
     gripper would have been closing then is not checked, so some of these frames look nominal.
   - an event triggered by the scene (grasp lost, object pushed) is labelled as the step event it turned into, at
     the step it fired (from the episode's receipts); one that never fired shows nothing;
   - changes of pace (action scale, pause) have no visual onset: each frame looks like a nominal one;
   - a shaking camera, flickering lights, a passing distractor: frame 0 (or their step) to the end.
   Persistent changes (all but the gripper) stay anomalous to the end of the episode.
2. Failure onset — only in episodes that end in failure (horizon reached, object off the table, simulation error):
   the earliest of (a) the visual onset of a failure-inducing event (nudge, teleport, gripper forced open),
   (b) the step the object left the table or the simulation failed, (c) the *late step*: the `late_quantile`
   quantile (default 0.9) of the `fit` episodes' lengths, i.e. the step by which 90% of nominal successes had lifted
   the object (the slowest nominal success is an outlier: on lift_bc_image lengths run from 26 to 89 steps, median
   32). Every frame from the onset on is a failure frame; episodes that succeed have none.
3. anomaly = visual ∪ failure (a failure is always an anomaly).

File layout (robomimic, as `envs.hdf5.EpisodeWriter` writes it): `data/demo_i/{obs/agentview_image, obs/<low-dim>,
actions, states, rewards, dones, anomaly, failure}`; demo attrs `split`, `kind`, `perturbation`, `family`,
`visual_onset`, `failure_onset`, `failure_step` (-1 = none) beside seed/outcome/perturbations; `data` attrs `late_step`,
`policy`; `mask/{fit,filter,test}` list the demos of each split. Rollouts run on `workers` workers of the backend
(processes, or Ray actors with `backend=ray`; each with its own renderer); an interrupted run resumes: episodes
already in the file are skipped (one a killed run left half-written is rewritten), and Ctrl-C waits for the episode
being written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from envs.backends import Backend, RolloutSettings, UnitFailed, failure_message
from envs.choices import check_choice
from envs.cli import parse_config
from envs.hdf5 import EpisodeWriter, deferred_interrupt, demo_names
from envs.perturbations import Perturbation, task_perturbations
from envs.perturbations.triggered import Triggered
from envs.rollout import Episode
from envs.tasks import TaskSpec, get_task
from monitor.stopping import hopeless
from monitor.variations import held_out, monitor_perturbations

SPLITS = ("fit", "filter", "test")
SPLIT_SEEDS = {"test": 0, "fit": 100_000, "filter": 200_000}
"""Offsets of each split's seeds from the base seed."""
NON_VISUAL_FAMILIES = frozenset({"object_mass", "friction", "action_noise", "action_scale", "pause"})
"""Families that change nothing a single frame shows (the dynamics, the executed actions, their pace)."""
DESIGNS = ("seeds", "families")
FAILURE_EVENTS = frozenset({"object_nudge", "object_teleport", "gripper_open"})
"""Event families meant to undo the task."""
NUDGE_VISIBLE_M = 0.01
"""An object nudge is visible once the object moved this far (metres) from where it was at the event step."""


@dataclass
class DatasetConfig(RolloutSettings):
    task: str = "lift"
    policy: str = "lift_bc_image"
    """The policy under test (a shipped checkpoint, `scripted`, or a path)."""
    out: str = ""
    """HDF5 file to write (appended to and resumed if it exists); empty = data/simfails_<task>_<policy>.hdf5
    (design=families: data/simfails2_<task>_<policy>.hdf5)."""
    design: str = "seeds"
    """seeds: filter and test show the same perturbations on other seeds; families: the test split shows only
    held-out families (SimFails v2, monitor/variations.py)."""
    fit_episodes: int = 40
    """Successful nominal episodes the monitors learn and calibrate on."""
    test_nominal: int = 30
    """Nominal test episodes (successful or not)."""
    test_reset: int = 1
    """Test episodes per reset-time perturbation."""
    test_events: int = 8
    """Test episodes per mid-episode event (and per SimFails v2 variation)."""
    filter_nominal: int = 10
    """Nominal episodes of the semantic-filter training split."""
    filter_reset: int = 1
    """Filter-split episodes per reset-time perturbation."""
    filter_events: int = 4
    """Filter-split episodes per mid-episode event."""
    perturbations: str = "all"
    """Reset-time perturbations to use: all, none, or comma-separated names."""
    events: str = "all"
    """Mid-episode events to use: all, none, or comma-separated names."""
    horizon: int = 0
    """Cap on episode length (0 = the task's horizon); for quick tests."""
    seed: int = 0
    """Base seed; every episode's seed derives from it."""
    max_fit_attempts: int = 0
    """Nominal attempts allowed to find the fit episodes (0 = 2 × fit_episodes)."""
    late_quantile: float = 0.9
    """Failure rule (c): a failing episode is failing from this quantile of the fit episodes' lengths on."""


@dataclass(frozen=True)
class Job:
    """One episode to roll out."""

    split: str
    kind: str
    """nominal, reset or event."""
    perturbation: str
    """Its name ('' for nominal)."""
    seed: int


@dataclass(frozen=True)
class Labels:
    anomaly: np.ndarray
    failure: np.ndarray
    visual_onset: int
    """First visually anomalous frame (-1 = none)."""
    failure_onset: int
    """First failure frame (-1 = none)."""


# -- labels --------------------------------------------------------------------------------------------------------


def object_key(task: TaskSpec, target: int = 0) -> str:
    """robosuite's observation of an object's position: body `cube_main` → `cube_pos`."""
    return f"{task.objects[target].removesuffix('_main')}_pos"


def visual_window(episode: Episode, perturbation: Perturbation | None, task: TaskSpec) -> tuple[int, int]:
    """[start, stop) of the frames a perturbation makes visibly anomalous ((-1, -1) = none); see rule 1."""
    length = episode.length
    if perturbation is None or perturbation.family in NON_VISUAL_FAMILIES:
        return -1, -1
    at = perturbation.at_step
    if at is None:
        return 0, length
    if at >= length:  # the episode ended before the event
        return -1, -1
    if perturbation.family == "object_nudge":
        key = object_key(task, perturbation.target)
        if key not in episode.observations:
            raise ValueError(f"object nudge labels need the {key!r} observation; have {sorted(episode.observations)}")
        position = episode.observations[key]
        moved = np.flatnonzero(np.linalg.norm(position[at:] - position[at], axis=1) >= NUDGE_VISIBLE_M)
        start = at + int(moved[0]) if len(moved) else at + 1
        return (start, length) if start < length else (-1, -1)
    if perturbation.family == "gripper_open":
        start, stop = at + 1, min(at + 1 + perturbation.duration, length)
        return (start, stop) if start < stop else (-1, -1)
    return at, length


def as_acted(perturbation: Perturbation | None, episode: Episode) -> Perturbation | None:
    """The perturbation as it acted in `episode`: a state-triggered event becomes the step event it fired as (None
    when it never fired); anything else is itself."""
    if not isinstance(perturbation, Triggered):
        return perturbation
    fired = [r for r in episode.receipts if r.get("triggered") and r["perturbation"] == perturbation.name]
    return perturbation.fires_as(int(fired[0]["triggered_at"])) if fired else None


def frame_labels(episode: Episode, perturbation: Perturbation | None, late_step: int, task: TaskSpec) -> Labels:
    """Per-frame anomaly and failure labels of one episode under at most one perturbation; see the module docstring."""
    length = episode.length
    perturbation = as_acted(perturbation, episode)
    start, stop = visual_window(episode, perturbation, task)
    anomaly = np.zeros(length, dtype=np.uint8)
    if start >= 0:
        anomaly[start:stop] = 1
    failure = np.zeros(length, dtype=np.uint8)
    failure_onset = -1
    if not episode.success:
        candidates = [late_step]
        if perturbation is not None and perturbation.family in FAILURE_EVENTS and start >= 0:
            candidates.append(start)
        if episode.failure_step is not None:
            candidates.append(episode.failure_step)
        onset = min(candidates)
        if onset < length:
            failure_onset = onset
            failure[onset:] = 1
    anomaly |= failure
    return Labels(anomaly, failure, start, failure_onset)


# -- jobs ----------------------------------------------------------------------------------------------------------


def _names(choice: str, available: Sequence[str], what: str) -> list[str]:
    if choice == "all":
        return list(available)
    if choice in ("", "none"):
        return []
    names = [n.strip() for n in choice.split(",") if n.strip()]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(unknown)}; valid: all, none, {', '.join(available)}")
    return names


def is_event(perturbation: Perturbation) -> bool:
    """Whether it happens during the episode (at a step, or when the scene triggers it) rather than at reset."""
    return perturbation.at_step is not None or isinstance(perturbation, Triggered)


def plan(config: DatasetConfig, spec: TaskSpec) -> list[Job]:
    """The filter and test episodes, in writing order (the fit split is found by attempts, see `fit_jobs`)."""
    check_choice(config.design, DESIGNS, "design")
    available = dataset_perturbations(spec, config.design)
    order = {name: k for k, name in enumerate(available)}
    reset = _names(config.perturbations, [n for n, p in available.items() if not is_event(p)], "perturbation(s)")
    events = _names(config.events, [n for n, p in available.items() if is_event(p)], "event(s)")

    def shown(split: str, name: str) -> bool:
        return config.design == "seeds" or held_out(available[name]) == (split == "test")

    jobs = []
    for split, nominal, per_reset, per_event in (
        ("filter", config.filter_nominal, config.filter_reset, config.filter_events),
        ("test", config.test_nominal, config.test_reset, config.test_events),
    ):
        base = config.seed + SPLIT_SEEDS[split]
        jobs += [Job(split, "nominal", "", base + i) for i in range(nominal)]
        for kind, names, count in (("reset", reset, per_reset), ("event", events, per_event)):
            for name in (n for n in names if shown(split, n)):
                jobs += [Job(split, kind, name, base + 1000 * (order[name] + 1) + i) for i in range(count)]
    return jobs


def dataset_perturbations(task: str | TaskSpec, design: str) -> dict[str, Perturbation]:
    """The perturbations a SimFails file of this design draws from, by name (v2 adds its own variations)."""
    return monitor_perturbations(task) if design == "families" else task_perturbations(task)


def fit_jobs(config: DatasetConfig, start: int, count: int) -> list[Job]:
    base = config.seed + SPLIT_SEEDS["fit"]
    return [Job("fit", "nominal", "", base + start + i) for i in range(count)]


_WORKER: dict = {}


def run_job(args: tuple[str, str, int, Job]) -> tuple[Job, Episode]:
    """Rolls out one job with this process's policy and runner (built on first use, renderer included)."""
    from envs.rollout import Runner
    from policies.registry import load_policy

    task, policy_name, horizon, job = args
    key = (task, policy_name, horizon)
    if _WORKER.get("key") != key:
        if "runner" in _WORKER:
            _WORKER["runner"].close()
        policy, spec = load_policy(policy_name, task)
        spec = replace(spec, horizon=horizon) if horizon else spec
        _WORKER.update(key=key, policy=policy, spec=spec, runner=Runner(spec))
    spec, runner = _WORKER["spec"], _WORKER["runner"]
    perturbations = [monitor_perturbations(spec.name)[job.perturbation]] if job.perturbation else []
    return job, runner.run(_WORKER["policy"], perturbations, seed=job.seed, record=True)


def _map(jobs: list[Job], config: DatasetConfig, spec_name: str, backend: Backend) -> Iterator[tuple[Job, Episode]]:
    """The jobs' episodes in order; a job that gives none ends the run (what is written stays, a rerun resumes)."""
    args = [(spec_name, config.policy, config.horizon, job) for job in jobs]
    for _, result in backend.map(run_job, args):
        if isinstance(result, UnitFailed):
            raise SystemExit(
                f"error: {failure_message([result])}; the episodes written so far are kept, rerun to resume"
            )
        yield result


# -- the file ------------------------------------------------------------------------------------------------------


def default_path(config: DatasetConfig) -> Path:
    stem = "simfails2" if config.design == "families" else "simfails"
    return Path(config.out or f"data/{stem}_{config.task}_{Path(config.policy).name}.hdf5")


def simfails_path(data: str, task: str, policy: str, design: str = "seeds") -> Path:
    """The SimFails file a reader means: `data` when given, else where `monitor.dataset` writes for task, policy and
    design; FileNotFoundError, saying how to make it, when it does not exist."""
    check_choice(design, DESIGNS, "design")
    path = Path(data) if data else default_path(DatasetConfig(task=task, policy=policy, design=design))
    if not path.is_file():
        extra = "" if design == "seeds" else f" design={design}"
        raise FileNotFoundError(
            f"no SimFails file {str(path)!r}; make it with python -m monitor.dataset task={task} policy={policy}{extra}"
        )
    return path


def dataset_design(path: str | Path) -> str:
    """A SimFails file's design (files written before designs existed are `seeds`)."""
    with h5py.File(path, "r") as file:
        return str(file["data"].attrs.get("design", "seeds"))


def written_jobs(path: Path) -> set[Job]:
    """Jobs already complete in the file (for resuming; a half-written one is to be done again)."""
    if not path.exists():
        return set()
    with h5py.File(path, "r") as file:
        if "data" not in file:
            return set()
        groups = [file["data"][name] for name in demo_names(file)]
        return {
            Job(str(g.attrs["split"]), str(g.attrs["kind"]), str(g.attrs["perturbation"]), int(g.attrs["seed"]))
            for g in groups
        }


def write_masks(file: h5py.File) -> dict[str, int]:
    """mask/<split> = the split's demos, in numeric order; returns the count per split."""
    names = demo_names(file)
    mask = file.require_group("mask")
    counts = {}
    for split in SPLITS:
        members = [n for n in names if file["data"][n].attrs["split"] == split]
        if split in mask:
            del mask[split]
        mask.create_dataset(split, data=np.array(members, dtype="S"))
        counts[split] = len(members)
    return counts


def read_split(path: str | Path, split: str, frames: bool = True) -> list[dict]:
    """The episodes of one split: frames (T, H, W, 3) uint8 when asked, labels and attributes."""
    check_choice(split, SPLITS, "split")
    out = []
    with h5py.File(path, "r") as file:
        key = f"{get_task(str(file['data'].attrs['task'])).camera}_image"
        for name in (n.decode() for n in file["mask"][split][:]):
            group = file["data"][name]
            item = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in group.attrs.items()}
            item.update(demo=name, anomaly=group["anomaly"][:].astype(bool), failure=group["failure"][:].astype(bool))
            if frames:
                item["frames"] = group["obs"][key][:]
            out.append(item)
    return out


def main(argv: list[str] | None = None) -> None:
    from envs.rollout import Runner
    from policies.registry import load_policy

    config = parse_config(DatasetConfig, argv)
    try:
        _, spec = load_policy(config.policy, config.task)
        jobs = plan(config, spec)
        config.check()
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    spec = replace(spec, horizon=config.horizon) if config.horizon else spec
    path = default_path(config)
    started = time.perf_counter()
    done = written_jobs(path)
    catalogue = monitor_perturbations(spec.name)  # catalogue and v2 variations, whatever the horizon cap
    probe = Runner(spec)  # the model XML robomimic files carry; no renderer is opened
    model_xml = probe.scene.env.sim.model.get_xml()
    probe.close()
    with config.open_backend() as backend, EpisodeWriter(path, spec, model_xml) as writer:
        data = writer.data
        data.attrs["policy"] = config.policy
        if data.attrs.setdefault("design", config.design) != config.design:
            raise SystemExit(
                f"error: {path} is a design={data.attrs['design']} file; write design={config.design} to a new file"
            )

        # fit: successful nominal episodes, attempts in seed order until enough succeed
        fit_done = sum(1 for j in done if j.split == "fit")
        rejected = json.loads(data.attrs.get("fit_rejected_seeds", "[]"))
        attempted = fit_done + len(rejected)
        max_attempts = config.max_fit_attempts or 2 * config.fit_episodes
        lengths = [int(g.attrs["num_samples"]) for g in data.values() if g.attrs["split"] == "fit"]
        with tqdm(total=config.fit_episodes, initial=fit_done, desc="fit (nominal successes)", unit="ep") as bar:
            while len(lengths) < config.fit_episodes and attempted < max_attempts:
                if hopeless(len(lengths), attempted, config.fit_episodes, max_attempts):
                    break  # a policy that fails this often will not get there: say so now, not after every try
                batch = min(max(2, config.workers), max_attempts - attempted)
                for job, episode in _map(fit_jobs(config, attempted, batch), config, spec.name, backend):
                    attempted += 1
                    with deferred_interrupt():  # the attempt count (demos + rejected seeds) stays consistent
                        if episode.success and len(lengths) < config.fit_episodes:
                            empty = np.zeros(episode.length, dtype=np.uint8)
                            attrs = {**_attrs(job, None), **_episode_attrs(episode)}
                            writer.write(episode, extras={"anomaly": empty, "failure": empty}, attrs=attrs)
                            lengths.append(episode.length)
                            bar.update()
                        else:
                            rejected.append(job.seed)
                        data.attrs["fit_rejected_seeds"] = json.dumps(rejected)
                        writer.file.flush()
        if len(lengths) < config.fit_episodes:
            raise SystemExit(
                f"error: {config.policy} succeeded in only {len(lengths)} of {attempted} nominal episodes; "
                f"need fit_episodes={config.fit_episodes} within max_fit_attempts={max_attempts}, which at that "
                "rate it will not reach (use a better policy, lower fit_episodes or raise max_fit_attempts)"
            )
        late_step = int(np.ceil(np.quantile(lengths, config.late_quantile))) if lengths else spec.horizon
        labelled = any(j.split != "fit" for j in done)
        if labelled and int(data.attrs.get("late_step", -1)) != late_step:
            raise SystemExit(
                f"error: {path} was labelled with late_step {data.attrs.get('late_step')}, these settings give "
                f"{late_step}; write to a new file (out=...)"
            )
        data.attrs["late_step"] = late_step

        todo = [j for j in jobs if j not in done]
        rollouts = _map(todo, config, spec.name, backend)
        for job, episode in tqdm(rollouts, total=len(todo), desc="filter+test", unit="ep"):
            perturbation = catalogue[job.perturbation] if job.perturbation else None
            labels = frame_labels(episode, perturbation, late_step, spec)
            writer.write(  # flushed, Ctrl-C held meanwhile
                episode,
                extras={"anomaly": labels.anomaly, "failure": labels.failure},
                attrs={**_attrs(job, perturbation, labels), **_episode_attrs(episode)},
            )
        counts = write_masks(writer.file)
        summary = _summary(writer.file)
    wall = time.perf_counter() - started
    print(f"SimFails {spec.name} / {config.policy} → {path}  (late_step {late_step}, {wall:.0f} s)")
    print(f"{'split':<8}{'kind':<9}{'episodes':>9}{'failed':>8}{'frames':>8}{'anomaly':>9}{'failure':>9}")
    for (split, kind), row in sorted(summary.items()):
        print(f"{split:<8}{kind:<9}{row[0]:>9}{row[1]:>8}{row[2]:>8}{row[3]:>9}{row[4]:>9}")
    total = sum(r[2] for r in summary.values())
    anomalous = sum(r[3] for r in summary.values())
    print(f"episodes: {sum(counts.values())}  frames: {total}  anomaly_frames: {anomalous}  wall_s: {wall:.0f}")


def _attrs(job: Job, perturbation: Perturbation | None, labels: Labels | None = None) -> dict:
    return {
        "split": job.split,
        "kind": job.kind,
        "perturbation": job.perturbation,
        "family": perturbation.family if perturbation else "nominal",
        "visual_onset": labels.visual_onset if labels else -1,
        "failure_onset": labels.failure_onset if labels else -1,
    }


def _episode_attrs(episode: Episode) -> dict:
    return {"failure_step": -1 if episode.failure_step is None else episode.failure_step}


def _summary(file: h5py.File) -> dict[tuple[str, str], list[int]]:
    rows: dict[tuple[str, str], list[int]] = {}
    for group in (file["data"][name] for name in demo_names(file)):
        row = rows.setdefault((str(group.attrs["split"]), str(group.attrs["kind"])), [0, 0, 0, 0, 0])
        row[0] += 1
        row[1] += group.attrs["outcome"] != "success"
        row[2] += int(group.attrs["num_samples"])
        row[3] += int(group["anomaly"][:].sum())
        row[4] += int(group["failure"][:].sum())
    return rows


if __name__ == "__main__":
    main()
