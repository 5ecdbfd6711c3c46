"""One failure search from start to report: workers, the method, the rollout log, checkpoints and the summary.

Everything a run leaves is in its directory:

    config.yaml        the resolved configuration (a resumed run reads it back)
    state.json         rollouts done, wall time, status; with checkpoint/ the point a resumed run continues from
    failures.hdf5      every finished rollout (diagnosis.dataset), written as it finishes
    summary.json       ranking with probabilities, metrics, per-perturbation counts (the source of truth)
    radar.png, report.html, media/   rendered from summary.json and failures.hdf5 (diagnosis.report)
    tensorboard/       the RL agent's own curves and the search's (failures found, metrics vs rollouts)

Ctrl-C stops the search after the rollouts in flight, keeps every finished one, and still writes the summary and
the report of what was learned so far; `search.resume=<dir>` continues from the last checkpoint.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor
from torch.utils.tensorboard import SummaryWriter

from diagnosis.dataset import FailureDatasetWriter, read_rollouts
from diagnosis.evaluation import GroundTruth, compare
from diagnosis.methods import SearchMethod, build_method
from diagnosis.ranking import Ranking
from diagnosis.search_env import FailureSearchEnv, SearchRewards
from envs.tasks import TaskSpec
from monitor.base import Monitor

RANKING_SEED = 1_000_000  # nominal initial states the RL ranking is read on: apart from every search rollout seed


@dataclass(frozen=True)
class EnvSpec:
    """Everything a worker needs to build its own search env (picklable: workers build policy and monitor)."""

    task: TaskSpec
    policy: str
    candidates: tuple[str, ...]
    monitor: Callable[[], Monitor] | None
    outcome: str
    max_depth: int
    rewards: SearchRewards
    observe_applied: bool


def make_env(spec: EnvSpec, in_worker: bool) -> FailureSearchEnv:
    """Builds a search env; inside a worker process Ctrl-C is left to the parent and torch gets one thread."""
    from policies.registry import load_policy

    if in_worker:
        import torch

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        torch.set_num_threads(1)
    policy, _ = load_policy(spec.policy, spec.task)
    return FailureSearchEnv(
        spec.task, policy, list(spec.candidates), spec.monitor, spec.outcome, spec.max_depth, spec.rewards,
        spec.observe_applied,
    )


def make_vec_env(spec: EnvSpec, n_envs: int) -> VecEnv:
    """`n_envs` workers (1: in this process); VecMonitor adds search-episode returns to the agent's logs."""
    if n_envs == 1:
        return VecMonitor(DummyVecEnv([partial(make_env, spec, False)]))
    # forkserver: workers start from a clean process, never inheriting a GL context or torch threads.
    return VecMonitor(SubprocVecEnv([partial(make_env, spec, True)] * n_envs, start_method="forkserver"))


@dataclass
class PerturbationCounts:
    """How often each perturbation was part of a rollout and how often such rollouts failed."""

    names: Sequence[str]
    tried: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    tried_alone: dict[str, int] = field(default_factory=dict)
    failed_alone: dict[str, int] = field(default_factory=dict)

    def add(self, perturbations: Sequence[str], failed: bool) -> None:
        for name in perturbations:
            self.tried[name] = self.tried.get(name, 0) + 1
            self.failed[name] = self.failed.get(name, 0) + int(failed)
        if len(perturbations) == 1:
            name = perturbations[0]
            self.tried_alone[name] = self.tried_alone.get(name, 0) + 1
            self.failed_alone[name] = self.failed_alone.get(name, 0) + int(failed)

    def row(self, name: str) -> dict[str, int]:
        return {
            "tried": self.tried.get(name, 0), "failed": self.failed.get(name, 0),
            "tried_alone": self.tried_alone.get(name, 0), "failed_alone": self.failed_alone.get(name, 0),
        }


@dataclass
class MonitorAgreement:
    """How the runtime monitor's episode verdicts compare with the simulator's success check over a search."""

    true_positive: int = 0
    false_negative: int = 0
    true_negative: int = 0
    false_positive: int = 0

    def add(self, sim_failure: bool, monitor: dict[str, Any] | None) -> None:
        if monitor is None:
            return
        flagged = bool(monitor["failure"])
        if sim_failure:
            self.true_positive += flagged
            self.false_negative += not flagged
        else:
            self.false_positive += flagged
            self.true_negative += not flagged

    def to_dict(self) -> dict[str, Any] | None:
        """Counts and rates; None when no monitor watched."""
        failures = self.true_positive + self.false_negative
        successes = self.true_negative + self.false_positive
        if failures + successes == 0:
            return None
        return {
            **asdict(self), "sim_failures": failures, "sim_successes": successes,
            "tpr": self.true_positive / failures if failures else float("nan"),
            "tnr": self.true_negative / successes if successes else float("nan"),
        }


class SearchRun:
    """Runs one configured search in `run_dir`; `run()` returns the summary it wrote."""

    def __init__(
        self,
        run_dir: Path,
        config: dict[str, Any],
        env_spec: EnvSpec,
        method: str,
        hyperparameters: dict[str, Any],
        total_rollouts: int,
        n_envs: int,
        seed: int,
        ranking_states: int,
        checkpoint_every: int,
        ground_truth: GroundTruth | None,
    ):
        self.run_dir, self.config, self.spec = run_dir, config, env_spec
        self.method_name, self.hyperparameters = method, hyperparameters
        self.total, self.n_envs, self.seed = total_rollouts, n_envs, seed
        self.ranking_states, self.checkpoint_every = ranking_states, checkpoint_every
        self.ground_truth = ground_truth
        self.names = list(env_spec.candidates)
        self.console = Console(width=max(Console().width, 120))  # the ranking table needs the room, even in a log
        state_path = run_dir / "state.json"
        self.state = json.loads(state_path.read_text()) if state_path.exists() else {"rollouts": 0, "wall_time_s": 0.0}
        self.done = int(self.state["rollouts"])
        self.wall_before = float(self.state["wall_time_s"])
        """Seconds spent by earlier sessions of this run (resume); checkpoints add this session's (since `run()`)."""
        self.counts = PerturbationCounts(self.names)
        self.curve: list[dict[str, float]] = self.state.get("curve", [])
        """Ranking metrics as the search went on (every few rollouts): how fast it converged."""
        self.failures_found = 0
        self.monitor_agreement = MonitorAgreement()
        if (run_dir / "failures.hdf5").exists():
            # Counts come from the dataset itself, so they always match the rollouts that were kept.
            for row in read_rollouts(run_dir / "failures.hdf5")[: self.done]:
                self.counts.add(row["perturbations"], row["failed"])
                self.failures_found += int(row["failed"])
                self.monitor_agreement.add(row["sim_failure"], row["monitor"])

    # --------------------------------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        self.started = time.perf_counter()
        status = "complete"
        envs = make_vec_env(self.spec, self.n_envs)
        try:
            method = build_method(self.method_name, envs, self.hyperparameters, self.seed, self.run_dir / "tensorboard")
            if self.done:
                method.load(self.run_dir / "checkpoint", envs, self.done)
            envs.seed(self.seed + self.done)
            self.nominal = self._nominal_observations(envs)
            model_xml = envs.env_method("model_xml", indices=[0])[0]
            self.dataset = FailureDatasetWriter(self.run_dir / "failures.hdf5", self.spec.task, model_xml, self.names)
            self.tensorboard = SummaryWriter(str(self.run_dir / "tensorboard" / "search"))
            self.method = method
            try:
                with self._progress() as self.progress:
                    self.bar = self.progress.add_task("search", total=self.total, completed=self.done, info="")
                    if self.done < self.total:
                        method.run(envs, self.total - self.done, self._on_step)
            except KeyboardInterrupt:
                status = "interrupted"
                self.console.print(f"[yellow]interrupted after {self.done} rollouts; writing what was found[/]")
            self._checkpoint(status)
            summary = self._summary(status)
        finally:
            for closable in ("dataset", "tensorboard"):
                if hasattr(self, closable):
                    getattr(self, closable).close()
            envs.close()
        self._print(summary)
        return summary

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("rollouts"),
            TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=self.console,
        )

    def _on_step(self, actions: np.ndarray, infos: list[dict[str, Any]]) -> bool:
        for info in infos:
            self.done += 1
            self.dataset.write(info, self.done)
            self.counts.add(info["perturbations"], info["failed"])
            self.failures_found += int(info["failed"])
            self.monitor_agreement.add(info["sim_failure"], info["monitor"])
        self.tensorboard.add_scalar("search/failures_found", self.failures_found, self.done)
        if self.done % max(self.n_envs, 10) < self.n_envs or self.done >= self.total:
            ranking = self.ranking()
            top = ", ".join(ranking.top(3))
            self.progress.update(self.bar, completed=self.done, info=f"failures {self.failures_found} | top: {top}")
            metrics = self._metrics(ranking)
            self.curve.append({"rollouts": self.done, **metrics})
            for key, value in metrics.items():
                self.tensorboard.add_scalar(f"ranking/{key}", value, self.done)
        else:
            self.progress.update(self.bar, completed=self.done)
        if self.done // self.checkpoint_every > (self.done - len(infos)) // self.checkpoint_every:
            self._checkpoint("running")
        return self.done < self.total

    # ----------------------------------------------------------------------------------------- ranking
    def _nominal_observations(self, envs: VecEnv) -> Any:
        seeds = [RANKING_SEED + i for i in range(self.ranking_states)]
        frames = envs.env_method("nominal_frames", seeds, indices=[0])[0]
        if self.spec.observe_applied:
            return {"image": frames, "applied": np.zeros((len(seeds), len(self.names)), dtype=np.int8)}
        return frames

    def ranking(self) -> Ranking:
        return Ranking(tuple(self.names), np.asarray(self.method.scores(self.nominal), dtype=float))

    def _metrics(self, ranking: Ranking) -> dict[str, float]:
        metrics = ranking.metrics()
        if self.ground_truth is not None:
            metrics.update(compare(ranking, self.ground_truth))
        return metrics

    # ----------------------------------------------------------------------------------------- outputs
    def _checkpoint(self, status: str) -> None:
        directory = self.run_dir / "checkpoint"
        directory.mkdir(exist_ok=True)
        self.method.save(directory)
        wall = self.wall_before + time.perf_counter() - self.started
        self.state.update(rollouts=self.done, status=status, curve=self.curve, wall_time_s=wall)
        (self.run_dir / "state.json").write_text(json.dumps(self.state, indent=1))

    def _summary(self, status: str) -> dict[str, Any]:
        ranking = self.ranking()
        rows = ranking.rows()
        for row in rows:
            row.update(self.counts.row(row["perturbation"]))
            if self.ground_truth is not None and row["perturbation"] in self.ground_truth.entries:
                row["ground_truth_success"] = self.ground_truth.entries[row["perturbation"]].success_rate
        summary = {
            "status": status,
            "task": self.spec.task.name,
            "policy": self.spec.policy,
            "method": self.method_name,
            "budget": {"total_rollouts": self.total, "rollouts_done": self.done, "n_envs": self.n_envs},
            "wall_time_s": round(self.state["wall_time_s"], 1),
            "failures_found": self.failures_found,
            "monitor": self.monitor_agreement.to_dict(),
            "ranking": rows,
            "metrics": ranking.metrics(),
            "ground_truth": None,
            "curve": self.curve,
            "config": self.config,
        }
        if self.ground_truth is not None:
            summary["ground_truth"] = {"path": str(self.ground_truth.path), **compare(ranking, self.ground_truth)}
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary

    def _print(self, summary: dict[str, Any]) -> None:
        print_ranking(summary, self.console)


def print_ranking(summary: dict[str, Any], console: Console, limit: int = 15) -> None:
    """The ranking table a user reads first, then the metrics, one per line."""
    rollouts = summary["budget"]["rollouts_done"]
    title = f"failure modes of {summary['policy']} on {summary['task']} ({summary['method']}, {rollouts} rollouts)"
    table = Table(title=title)
    for column in ("rank", "perturbation", "P(fail)", "failed/tried alone", "ground truth success"):
        table.add_column(column, justify="left" if column == "perturbation" else "right")
    for row in summary["ranking"][:limit]:
        truth = row.get("ground_truth_success")
        table.add_row(
            str(row["rank"]), row["perturbation"], f"{row['probability']:.3f}",
            f"{row['failed_alone']}/{row['tried_alone']}", "" if truth is None else f"{truth:.2f}",
        )
    console.print(table)
    if len(summary["ranking"]) > limit:
        console.print(f"... {len(summary['ranking']) - limit} more in summary.json")
    metrics = summary["metrics"]
    console.print(f"entropy: {metrics['entropy']:.3f}  nfm: {metrics['nfm']}  fsi: {metrics['fsi']:.3f}")
    if summary.get("monitor"):
        agreement = summary["monitor"]
        console.print(
            f"monitor vs simulator: caught {agreement['true_positive']}/{agreement['sim_failures']} failed rollouts "
            f"(TPR {agreement['tpr']:.2f}), quiet on {agreement['true_negative']}/{agreement['sim_successes']} "
            f"successful ones (TNR {agreement['tnr']:.2f})"
        )
    if summary["ground_truth"]:
        truth = summary["ground_truth"]
        console.print(
            f"vs ground truth: pairwise accuracy {truth['pairwise_accuracy']:.3f} over {truth['significant_pairs']} "
            f"significant pairs, kendall tau {truth['kendall_tau']:.3f}"
        )
