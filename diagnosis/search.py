"""`python -m diagnosis.search task=lift`: rank the perturbations that make a policy fail.

Hydra composes `diagnosis/conf/config.yaml` with one choice per group — task, policy, search (uniform | ppo | a2c |
random | thompson | lucb | boundary, or continuous: diagnosis.continuous_search), monitor — and `key=value` overrides
(`search.total_rollouts=200`). Everything is checked before the first rollout: names against their registries, the
ground-truth file against the task and policy, the output directory for writing. Then the runtime monitor is fitted
(or loaded from its cache), the search runs, and the run directory gets summary.json, the ranking table, radar.png,
report.html and failures.hdf5 (see diagnosis.search_run).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import diagnosis.conf  # noqa: F401  (registers the monitor=fidel config node before Hydra composes)
from diagnosis.allocations import BANDITS
from diagnosis.checkpoint import check_resumable
from diagnosis.evaluation import GroundTruth, default_ground_truth_path, load_ground_truth, with_pairs
from diagnosis.methods import METHODS, BanditSearch, checkpoint_files
from diagnosis.search_env import OUTCOME_SOURCES, SearchRewards
from diagnosis.search_run import SearchRun
from diagnosis.workers import EnvSpec
from envs.backends import RayOptions, RolloutSettings
from envs.choices import check_choice, unknown_choice
from envs.cli import shown_path
from envs.perturbations import Perturbation, get_perturbations, task_perturbations
from envs.perturbations.composed import sampled_pairs
from envs.perturbations.sweeps import boundary_grid
from envs.receipts import check_effects
from envs.tasks import TaskSpec, get_task
from monitor.base import Monitor

CONFIG_FILE = "config.yaml"
MONITORS = ("fidel",)
CONTINUOUS = "continuous"
"""RoboMD's continuous search (diagnosis.continuous_search), dispatched before the discrete checks."""
BOUNDARY = "boundary"
"""The failure-boundary search (diagnosis.boundary): its candidates are a grid along one parameter."""
RESUME_OVERRIDES = ("search.resume", "search.total_rollouts", "backend", "ray.address", "ray.num_cpus")
"""What a resumed run may be given (a larger budget, another place to run): anything else would silently not apply
to a run already under way."""

# A resumed run writes into the directory it continues, not into a new one.
OmegaConf.register_new_resolver("run_dir", lambda resume, fresh: resume or fresh, replace=True)


def resolve_task(task: DictConfig) -> TaskSpec:
    spec = get_task(task.name)
    return dataclasses.replace(spec, horizon=int(task.horizon)) if task.horizon else spec


def resolve_policy(cfg: DictConfig, task: TaskSpec) -> str:
    """The policy under test: the chosen one or the task's shipped default; loading it checks it fits the task."""
    from policies.registry import default_policy, load_policy

    name = cfg.policy.name or default_policy(task)
    load_policy(name, task)
    return str(name)


def resolve_candidates(cfg: DictConfig, task: TaskSpec) -> tuple[Perturbation, ...]:
    """The search's perturbations: `task.perturbations` (default: the task's catalogue and every perturbation of
    `task.perturbation_file`) minus `task.exclude`, then `task.pairs` composed pairs; an unknown name is an error
    listing the valid ones."""
    files = cfg.task.get("perturbation_file") or ()
    available = task_perturbations(task, files)
    names = list(cfg.task.perturbations) if cfg.task.perturbations else list(available)
    get_perturbations(task, names + list(cfg.task.exclude), files)
    singles = tuple(available[n] for n in names if n not in set(cfg.task.exclude))
    pairs = int(cfg.task.get("pairs") or 0)
    if pairs < 0:
        raise ValueError(f"task.pairs must be >= 0, got {pairs}")
    if pairs == 0:
        return singles
    # Pairs are drawn from the task's catalogue (and files), so the same seed gives the ground truth's pairs.
    return singles + tuple(sampled_pairs(available, pairs, int(cfg.task.get("pair_seed") or 0)))


def boundary_candidates(
    cfg: DictConfig, task: TaskSpec, hyperparameters: dict
) -> tuple[tuple[Perturbation, ...], dict]:
    """search=boundary: the grid along `search.family` (one `search.side` of its nominal value, `search.points`
    values) as candidates, and the grid's positions and values handed to the allocation."""
    search = cfg.search
    derived = ("positions", "values", "log")
    given = [key for key in derived if key in hyperparameters]
    if given:
        raise ValueError(f"search.hyperparameters.{given[0]} comes from search.family; remove it")
    files = cfg.task.get("perturbation_file") or ()
    grid = boundary_grid(
        task,
        task_perturbations(task, files),
        family=str(search.family),
        side=None if search.side is None else str(search.side),
        points=int(search.points),
    )
    return grid.perturbations, {
        **hyperparameters,
        "positions": list(grid.positions),
        "values": list(grid.scalars),
        "log": grid.sweep.log,
    }


def resolve_ground_truth(cfg: DictConfig, task: TaskSpec, policy: str, kind: str = "singles") -> GroundTruth | None:
    """`ground_truth`: none, a path, or auto: the policy's file of this kind (singles; sweeps for a boundary
    search) if it exists."""
    choice = str(cfg.ground_truth)
    if choice == "none":
        return None
    if choice == "auto":
        path = default_ground_truth_path(policy, task.name, kind)
        return load_ground_truth(path, task.name, policy) if path.is_file() else None
    return load_ground_truth(choice, task.name, policy)


def check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"cannot write to the output directory {directory}: {exc.strerror}") from None


def build_monitor_factory(cfg: DictConfig, task: TaskSpec, policy: str) -> Callable[[], Monitor] | None:
    """The monitor as a factory that workers call, or None for monitor=none.

    The monitor is fitted (or loaded from its cache) here, once, with a progress bar; workers then load the cached
    copy in about a second instead of each fitting their own.
    """
    if cfg.monitor.method == "none":
        return None
    if cfg.monitor.method not in MONITORS:
        raise ValueError(f"unknown monitor {cfg.monitor.method!r}; valid: none, {', '.join(MONITORS)}")
    from monitor.build import MonitorRecipe

    settings = OmegaConf.to_container(cfg.monitor, resolve=True)
    recipe = MonitorRecipe.from_settings(task.name, policy, settings)
    semantic, options = recipe.semantic_filter()
    where = f" ({shown_path(options['path'])})" if "path" in options else ""
    print(f"monitor: FIDeL, semantic filter {semantic}{where}")
    recipe()
    return recipe


def resolve_backend(cfg: DictConfig) -> tuple[str, RayOptions]:
    """Where the rollouts run (`backend`, `ray.*`), checked now rather than after the monitor is fitted."""
    settings = cfg.get("ray") or {}
    ray = RayOptions(address=str(settings.get("address") or ""), num_cpus=float(settings.get("num_cpus", 1)))
    rollouts = RolloutSettings(workers=int(cfg.search.n_envs), backend=str(cfg.get("backend", "processes")), ray=ray)
    rollouts.check()
    return rollouts.backend, ray


def prepare(cfg: DictConfig, run_dir: Path) -> SearchRun:
    """Checks the whole configuration, then fits the monitor; raises ValueError/FileNotFoundError on bad input."""
    search = cfg.search
    if search.method not in METHODS:
        raise unknown_choice("search method", search.method, [*METHODS, CONTINUOUS])
    if search.resume:  # before the monitor is fitted: a run that cannot continue should say so at once
        check_resumable(run_dir, str(search.method), checkpoint_files(str(search.method)))
    check_choice(search.outcome, OUTCOME_SOURCES, "search.outcome")
    backend, ray = resolve_backend(cfg)
    if search.outcome != "sim" and cfg.monitor.method == "none":
        raise ValueError(f"search.outcome={search.outcome} needs a monitor; monitor=none gives none")
    for key in ("total_rollouts", "n_envs", "max_depth", "checkpoint_every", "ranking_states"):
        if int(search[key]) < 1:
            raise ValueError(f"search.{key} must be >= 1, got {search[key]}")
    task = resolve_task(cfg.task)
    policy = resolve_policy(cfg, task)
    hyperparameters = OmegaConf.to_container(search.hyperparameters, resolve=True)
    if search.method == BOUNDARY:
        candidates, hyperparameters = boundary_candidates(cfg, task, hyperparameters)
    else:
        candidates = resolve_candidates(cfg, task)
    check_effects(task, list(candidates))  # a candidate that changes nothing would be ranked as harmless
    if search.method == "uniform" and search.total_rollouts < len(candidates):
        raise ValueError(
            f"search=uniform needs at least one rollout per perturbation: total_rollouts={search.total_rollouts} < "
            f"{len(candidates)} perturbations"
        )
    ground_truth = resolve_ground_truth(cfg, task, policy, kind="sweeps" if search.method == BOUNDARY else "singles")
    if ground_truth is not None and str(cfg.ground_truth) == "auto" and int(cfg.task.get("pairs") or 0):
        ground_truth = with_pairs(ground_truth)
    check_writable(run_dir)
    stop = check_stop_rule(search, hyperparameters, len(candidates))
    max_depth = 1 if search.method in BANDITS else int(search.max_depth)
    spec = EnvSpec(
        task=task,
        policy=policy,
        candidates=candidates,
        monitor=build_monitor_factory(cfg, task, policy),
        outcome=str(search.outcome),
        max_depth=max_depth,
        rewards=SearchRewards(float(search.c_fail), float(search.c_success), float(search.repeat_penalty)),
        observe_applied=bool(search.observe_applied),
    )
    return SearchRun(
        run_dir=run_dir,
        config=OmegaConf.to_container(cfg, resolve=True),
        env_spec=spec,
        method=str(search.method),
        hyperparameters=hyperparameters,
        total_rollouts=int(search.total_rollouts),
        n_envs=int(search.n_envs),
        backend=backend,
        ray=ray,
        seed=int(cfg.seed),
        ranking_states=int(search.ranking_states),
        checkpoint_every=int(search.checkpoint_every),
        ground_truth=ground_truth,
        stop=stop,
    )


STOP_RULES = ("budget", "auto")


def check_stop_rule(search: DictConfig, hyperparameters: dict, candidates: int) -> str:
    """`search.stop`: `budget` spends search.total_rollouts; `auto` ends the search as soon as the method says its
    answer is settled, which only a method with a stopping rule can. A bandit's settings are checked here too, by
    building it, so that a wrong one is reported before the monitor is fitted."""
    stop = check_choice(str(search.get("stop", "budget")), STOP_RULES, "search.stop")
    stops_itself = (
        search.method in BANDITS and BanditSearch(str(search.method), candidates, 0, hyperparameters).stops_itself
    )
    if stop == "auto" and not stops_itself:
        raise ValueError(
            f"search.stop=auto needs a method with a stopping rule (search=lucb); search={search.method} has none"
        )
    return stop


def load_resumed(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """A resumed run continues with the configuration it was started with (a larger budget may be given);
    `overrides`: the command line's `key=value` arguments, of which only RESUME_OVERRIDES are accepted."""
    run_dir = Path(cfg.search.resume)
    stored = run_dir / CONFIG_FILE
    if not stored.is_file():
        raise ValueError(f"search.resume={run_dir}: no {CONFIG_FILE} there; is it a FailScope run directory?")
    try:
        resumed = OmegaConf.load(stored)
    except Exception as exc:  # omegaconf/yaml raise several kinds for a damaged file
        raise ValueError(f"search.resume={run_dir}: {CONFIG_FILE} cannot be read ({exc}); start a new run") from None
    if resumed.search.method == CONTINUOUS:
        raise ValueError(f"search.resume={run_dir} is a continuous search; those are not resumable, rerun it instead")
    refused = [o for o in overrides if o.split("=")[0].lstrip("+~") not in RESUME_OVERRIDES]
    if refused:
        raise ValueError(
            f"search.resume continues a run with the configuration it started with; only search.total_rollouts, "
            f"backend and ray.* may change, got {', '.join(refused)} (start a new run to change them)"
        )
    if any(o.startswith("search.total_rollouts=") for o in overrides):
        resumed.search.total_rollouts = cfg.search.total_rollouts
    resumed.backend, resumed.ray = cfg.backend, cfg.ray  # where it runs never changes what it finds
    resumed.search.resume = str(run_dir)
    return resumed


def execute(cfg: DictConfig, run_dir: Path, run: SearchRun) -> dict:
    """Searches and reports; returns the summary (also in run_dir/summary.json)."""
    from diagnosis.report import write_report

    if not (run_dir / CONFIG_FILE).exists():
        OmegaConf.save(cfg, run_dir / CONFIG_FILE, resolve=True)
    summary = run.run()
    write_report(run_dir, summary, top_k=int(cfg.report.top_k), videos=bool(cfg.report.videos))
    return summary


def run_search(cfg: DictConfig, run_dir: Path) -> dict:
    """The whole job for a composed configuration (what the CLI runs, callable from Python)."""
    if cfg.search.method == CONTINUOUS:
        from diagnosis.continuous_search import run_continuous_search

        return run_continuous_search(cfg, run_dir)
    return execute(cfg, run_dir, prepare(cfg, run_dir))


def main_continuous(cfg: DictConfig) -> None:
    """search=continuous: no rollouts per step, so a run is minutes and is not resumed, only rerun."""
    if cfg.search.resume:
        raise ValueError("search=continuous runs are not resumable; start a new run")
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    run_search(cfg, run_dir)
    print(f"summary: {run_dir / 'summary.json'}")


@hydra.main(config_path="conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    try:
        if cfg.search.method == CONTINUOUS:
            main_continuous(cfg)
            return
        if cfg.search.resume:
            cfg = load_resumed(cfg, HydraConfig.get().overrides.task)
            run_dir = Path(cfg.search.resume)
        else:
            run_dir = Path(HydraConfig.get().runtime.output_dir)
        run = prepare(cfg, run_dir)
    except (ValueError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
    summary = execute(cfg, run_dir, run)
    print(f"report: {run_dir / 'report.html'}")
    print(f"summary: {run_dir / 'summary.json'}")
    if summary["status"] == "worker_lost":
        sys.exit(1)  # the run did not finish for a reason other than the user's: scripts must notice


if __name__ == "__main__":
    main()
