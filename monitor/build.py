"""A FIDeL monitor for a policy under test, fitted once on its own nominal rollouts and cached on disk.

The failure search calls `build_monitor` in every worker process: the first call collects nominal episodes of the
policy (successful ones only: FIDeL learns what success looks like), fits the monitor and saves it; later calls,
in any process, load it in about a second. The cache key covers the task, the policy (its checkpoint files' content,
so a retrained checkpoint gets a new monitor), the collection settings and the whole monitor config.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from envs.choices import check_choice
from monitor.config_dicts import config_from_dict
from monitor.fidel import FORMAT_VERSION, FidelConfig, FidelMonitor
from monitor.stopping import hopeless

NOMINAL_EPISODES = 40
"""Successful nominal rollouts a policy's monitor is fitted on."""
NOMINAL_SEED = 100_000
"""Their first seed: far from the 0, 1, 2, ... that evaluations and the search use."""

CACHE_ROOT = Path(os.environ.get("FAILSCOPE_CACHE", Path.home() / ".cache" / "failscope")) / "monitors"
"""Default cache folder; the FAILSCOPE_CACHE environment variable moves the root, as for envs.meshes."""


def policy_fingerprint(policy: str) -> str:
    """What identifies a policy's behaviour: its checkpoint files' content, or its name (scripted, module:callable)."""
    from policies.registry import shipped_checkpoints

    path = shipped_checkpoints().get(policy, Path(policy))
    if not path.exists():
        return policy
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + file.read_bytes())
    return digest.hexdigest()


def cache_path(task: str, policy: str, episodes: int, seed: int, config: FidelConfig, cache_dir: Path | None) -> Path:
    """Where the monitor for these settings lives."""
    key = {
        "format": FORMAT_VERSION,
        "task": task,
        "policy": policy_fingerprint(policy),
        "episodes": episodes,
        "seed": seed,
        "config": config.to_dict(),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(policy).name)
    return Path(cache_dir or CACHE_ROOT) / f"{task}-{slug}-{digest}"


def collect_successes(
    rollout: Callable[[int], np.ndarray | None], episodes: int, seed: int, max_attempts: int, policy: str = "policy"
) -> list[np.ndarray]:
    """Frames of `episodes` successful nominal rollouts of `policy` (its name in messages), `rollout(seed)`
    returning an episode's frames or None when it failed, over seeds seed, seed+1, ...; a ValueError as soon as
    the success rate makes that `hopeless`, saying what was observed and what to do."""
    if episodes < 1 or max_attempts < episodes:
        raise ValueError(f"need 1 <= episodes <= max_attempts, got episodes={episodes}, max_attempts={max_attempts}")
    frames: list[np.ndarray] = []
    with tqdm(total=episodes, desc=f"nominal {policy}", unit="ep") as bar:
        for attempt in range(max_attempts):
            result = rollout(seed + attempt)
            # One redraw per kept episode: a redraw per attempt doubles the lines a log gets.
            bar.set_postfix(attempts=attempt + 1, refresh=False)
            if result is not None:
                frames.append(result)
                bar.update()
            if len(frames) == episodes:
                return frames
            if hopeless(len(frames), attempt + 1, episodes, max_attempts):
                break
    n = attempt + 1
    raise ValueError(
        f"policy {policy} succeeded in {len(frames)} of {n} nominal attempts ({len(frames) / n:.0%}); the monitor "
        f"needs {episodes} successful nominal rollouts, which at that rate it will not get within {max_attempts} "
        "attempts: run without a monitor (monitor=none), use a better policy, or lower monitor.episodes"
    )


def collect_nominal(
    task: str, policy: str, episodes: int, seed: int, max_attempts: int | None = None
) -> list[np.ndarray]:
    """Camera frames of `episodes` successful nominal rollouts (seeds seed, seed+1, ...), with a progress bar;
    stops early with a ValueError when the policy fails too often to get there (`hopeless`).

    Uses its own Runner and closes it, so no GL context outlives the collection (safe before forking workers).
    """
    from envs.rollout import Runner
    from policies.registry import load_policy

    agent, spec = load_policy(policy, task)
    runner = Runner(spec)

    def successful_frames(episode_seed: int) -> np.ndarray | None:
        episode = runner.run(agent, seed=episode_seed, record=True)
        return episode.frames if episode.success else None

    try:
        return collect_successes(
            successful_frames, episodes, seed, max_attempts or 2 * episodes, f"{policy!r} on {spec.name}"
        )
    finally:
        runner.close()


def build_monitor(
    task: str,
    policy: str,
    episodes: int = NOMINAL_EPISODES,
    seed: int = NOMINAL_SEED,
    cache_dir: Path | None = None,
    config: FidelConfig = FidelConfig(),
) -> FidelMonitor:
    """The FIDeL monitor of `policy` on `task`: loaded from the cache, or fitted on `episodes` successful nominal
    rollouts (seeds from `seed`, far from the 0, 1, 2, ... that evaluations use) and cached."""
    path = cache_path(task, policy, episodes, seed, config, cache_dir)
    if (path / "monitor.json").is_file():
        return FidelMonitor.load(path, task=task, encoder=config.encoder)
    monitor = FidelMonitor.fit(task, collect_nominal(task, policy, episodes, seed), config)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    monitor.save(staging)
    try:
        staging.rename(path)  # atomic: a worker never sees a half-written monitor
    except OSError:  # another process finished first; keep its copy
        shutil.rmtree(staging, ignore_errors=True)
    return monitor


SEMANTIC_CHOICES = ("auto", "none", "vlm", "trained", "failsense")
"""Semantic filter settings of a monitor recipe: monitor.semantic's backends plus auto (the policy's shipped
trained filter where one ships, else none)."""


def resolve_semantic(name: str, options: dict[str, Any], policy: str) -> tuple[str, dict[str, Any]]:
    """The backend and options a semantic setting means for `policy`: `auto` → `trained` with the policy's shipped
    filter (monitor/filters/<policy>, written by `python -m monitor.train_filter`) or `none` where none ships;
    `trained` without a path → the shipped filter, or an error saying how to get one."""
    from monitor.train_filter import shipped_filter, shipped_filter_names

    check_choice(name, SEMANTIC_CHOICES, "semantic filter")
    shipped = shipped_filter(policy)
    if name == "auto":
        return ("none", {}) if shipped is None else ("trained", {**options, "path": str(shipped)})
    if name == "trained" and "path" not in options:
        if shipped is None:
            raise ValueError(
                f"no trained semantic filter ships for policy {policy!r} (shipped for: "
                f"{', '.join(shipped_filter_names()) or 'none'}); pass semantic_options.path=<folder> or train one "
                f"with python -m monitor.train_filter policy={policy}"
            )
        return name, {**options, "path": str(shipped)}
    return name, options


@dataclass(frozen=True)
class MonitorRecipe:
    """A runtime monitor as settings: calling it builds the monitor (from the cache after the first time) with its
    semantic filter. Picklable, so each search worker builds its own from the same recipe."""

    task: str
    policy: str
    episodes: int = NOMINAL_EPISODES
    """Successful nominal rollouts the monitor is fitted on (collected once, then cached)."""
    nominal_seed: int = NOMINAL_SEED
    """Their first seed."""
    config: FidelConfig = FidelConfig()
    semantic: str = "auto"
    """Semantic filter (SEMANTIC_CHOICES): auto (trained where the policy ships a filter, else none), none (every
    anomaly is a failure), vlm (an OpenAI-compatible endpoint) or trained (a fitted classifier)."""
    semantic_options: dict[str, Any] = field(default_factory=dict)
    """The backend's options, e.g. {"path": ...} for trained, {"base_url": ..., "model": ...} for vlm."""

    @classmethod
    def from_settings(cls, task: str, policy: str, settings: Mapping[str, Any]) -> MonitorRecipe:
        """The recipe a `monitor=fidel` config node describes (`settings_node` keys; a missing key keeps its
        default, so runs saved with fewer keys still resume); an unknown key is a ValueError naming the valid ones."""
        settings = dict(settings)
        method = settings.pop("method", "fidel")
        if method != "fidel":
            raise ValueError(f"unknown monitor {method!r}; valid: fidel")
        recipe_keys = {f.name for f in fields(cls)} - {"task", "policy", "config"}
        fidel_keys = {f.name for f in fields(FidelConfig)}
        unknown = sorted(set(settings) - recipe_keys - fidel_keys)
        if unknown:
            raise ValueError(
                f"unknown monitor setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(recipe_keys | fidel_keys))}"
            )
        config = config_from_dict(FidelConfig, {k: v for k, v in settings.items() if k in fidel_keys})
        return cls(task, policy, config=config, **{k: v for k, v in settings.items() if k in recipe_keys})

    def semantic_filter(self) -> tuple[str, dict[str, Any]]:
        """(backend, options) the semantic setting resolves to for this policy (see `resolve_semantic`)."""
        return resolve_semantic(self.semantic, self.semantic_options, self.policy)

    def __call__(self) -> FidelMonitor:
        from monitor.semantic import build_semantic_filter

        # The filter first: a bad backend name or option fails before minutes of fitting.
        name, options = self.semantic_filter()
        semantic_filter = build_semantic_filter(name, **options)
        monitor = build_monitor(self.task, self.policy, self.episodes, self.nominal_seed, config=self.config)
        monitor.semantic_filter = None if name == "none" else semantic_filter
        return monitor


def settings_node() -> dict[str, Any]:
    """The `monitor=fidel` Hydra config node, from the dataclasses' own defaults (the one source of them): the
    recipe's keys and every FidelConfig field, nested configs as nested keys (`monitor.ot.epsilon=...`)."""
    recipe = MonitorRecipe("", "")
    node: dict[str, Any] = {"method": "fidel"}
    node.update(
        {f.name: getattr(recipe, f.name) for f in fields(MonitorRecipe) if f.name not in ("task", "policy", "config")}
    )
    node.update(_plain(asdict(FidelConfig())))
    return node


def _plain(value: Any) -> Any:
    """Tuples as lists, for OmegaConf."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
