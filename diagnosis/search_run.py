"""One failure search from start to report: workers, the method, the rollout log, checkpoints and the summary.

Everything a run leaves is in its directory:

    config.yaml        the resolved configuration (a resumed run reads it back)
    state.json         rollouts recorded, wall time, status; with checkpoint/ the point a resumed run continues from
    failures.hdf5      every finished rollout (diagnosis.dataset), written as it finishes
    summary.json       ranking with scores and observed failure rates, metrics, counts (the source of truth)
    radar.png, report.html, media/   rendered from summary.json and failures.hdf5 (diagnosis.report)
    tensorboard/       the RL agent's own curves and the search's (failures found, metrics vs rollouts)

Ctrl-C finishes the rollouts in flight and stops (a second Ctrl-C stops at once); every finished rollout is kept
and the summary and report of what was found so far are still written. A worker that dies stops the run the same
way. `search.resume=<dir>` continues from the last checkpoint (diagnosis.checkpoint) and ends as an uninterrupted
run with the same seed would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from stable_baselines3.common.vec_env import VecEnv
from torch.utils.tensorboard import SummaryWriter

from diagnosis.checkpoint import STATE, checkpoint_rollouts, save_checkpoint, write_json_atomic
from diagnosis.dataset import FailureDatasetWriter, read_rollouts
from diagnosis.estimation import failure_rate
from diagnosis.evaluation import GroundTruth, budget_on_worst, compare, rate_error
from diagnosis.interrupts import GracefulStop
from diagnosis.methods import build_method
from diagnosis.printout import TOP_K, print_ranking
from diagnosis.progress import SearchProgress
from diagnosis.ranking import Ranking
from diagnosis.workers import WORKER_LOST, EnvSpec, close_workers, make_vec_env, restore_worker_states, worker_states
from envs.backends import RayOptions

RANKING_SEED = 1_000_000  # nominal initial states the RL ranking is read on: apart from every search rollout seed


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

    def ranking(self) -> Ranking:
        """The ranking a user reads: by the estimated failure rate under each perturbation alone, the posterior
        mean (failed + 1) / (tried + 2), whatever chose the rollouts (a mode never tried alone sits at the prior's
        0.5: unknown, not harmless)."""
        rates = [(1 + self.failed_alone.get(n, 0)) / (2 + self.tried_alone.get(n, 0)) for n in self.names]
        return Ranking(tuple(self.names), np.array(rates))

    def row(self, name: str) -> dict[str, Any]:
        """Counts, and the observed failure rate with its 95% Wilson interval from the rollouts under this
        perturbation alone: stacked rollouts fail for more than one reason, so they are counted but not pooled."""
        alone_tried, alone_failed = self.tried_alone.get(name, 0), self.failed_alone.get(name, 0)
        return {
            "tried": self.tried.get(name, 0),
            "failed": self.failed.get(name, 0),
            "tried_alone": alone_tried,
            "failed_alone": alone_failed,
            **failure_rate(alone_failed, alone_tried),
        }


@dataclass
class MonitorAgreement:
    """How the runtime monitor's episode verdicts compare with the simulator's success check over a search, with
    and without the overrun rule, and how many failures it predicted (flagged before the robot moved)."""

    true_positive: int = 0
    false_negative: int = 0
    true_negative: int = 0
    false_positive: int = 0
    visual_true_positive: int = 0
    """Failed rollouts the monitor flagged without the overrun rule."""
    visual_false_positive: int = 0
    predicted: int = 0
    """Caught failures whose first failure verdict came before the robot had moved."""
    first_anomaly: list[int] = field(default_factory=list)
    """First anomalous frame of each caught failure."""
    first_failure_acting: list[int] = field(default_factory=list)
    """First failure verdict once the robot had moved, for each caught failure that has one."""

    def add(self, sim_failure: bool, monitor: dict[str, Any] | None) -> None:
        if monitor is None:
            return
        flagged = bool(monitor["failure"])
        by_look = bool(monitor.get("visual_failure", flagged))  # files written before the rule was reported apart
        if sim_failure:
            self.true_positive += flagged
            self.false_negative += not flagged
            self.visual_true_positive += by_look
            if flagged:
                self.predicted += bool(monitor.get("predicted", False))
                if monitor["first_anomaly"] is not None:
                    self.first_anomaly.append(int(monitor["first_anomaly"]))
                if monitor.get("first_failure_acting") is not None:
                    self.first_failure_acting.append(int(monitor["first_failure_acting"]))
        else:
            self.false_positive += flagged
            self.true_negative += not flagged
            self.visual_false_positive += by_look

    def brief(self) -> dict[str, Any] | None:
        """One mode's share of it: failures caught, false alarms, and the median first failure verdict once the
        robot moved; None when no monitor watched."""
        failures = self.true_positive + self.false_negative
        successes = self.true_negative + self.false_positive
        if failures + successes == 0:
            return None
        return {
            "caught": self.true_positive,
            "failures": failures,
            "false_alarms": self.false_positive,
            "successes": successes,
            "median_first_failure_acting": float(np.median(self.first_failure_acting))
            if self.first_failure_acting
            else None,
        }

    def to_dict(self) -> dict[str, Any] | None:
        """Counts and rates; None when no monitor watched."""
        failures = self.true_positive + self.false_negative
        successes = self.true_negative + self.false_positive

        def share(count: int, total: int) -> float:
            return count / total if total else float("nan")

        def median(values: list[int]) -> float | None:
            return float(np.median(values)) if values else None

        if failures + successes == 0:
            return None
        return {
            "true_positive": self.true_positive,
            "false_negative": self.false_negative,
            "true_negative": self.true_negative,
            "false_positive": self.false_positive,
            "sim_failures": failures,
            "sim_successes": successes,
            "tpr": share(self.true_positive, failures),
            "tnr": share(self.true_negative, successes),
            "without_overrun": {
                "true_positive": self.visual_true_positive,
                "false_positive": self.visual_false_positive,
                "tpr": share(self.visual_true_positive, failures),
                "tnr": share(successes - self.visual_false_positive, successes),
            },
            "predicted": self.predicted,
            "median_first_anomaly": median(self.first_anomaly),
            "median_first_failure_acting": median(self.first_failure_acting),
        }


class SearchRun:
    """Runs one configured search in `run_dir`; `run()` returns the summary it wrote."""

    def __init__(
        self,
        *,
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
        stop: str = "budget",
        backend: str = "processes",
        ray: RayOptions | None = None,
    ):
        self.run_dir, self.config, self.spec = run_dir, config, env_spec
        self.method_name, self.hyperparameters = method, hyperparameters
        self.total, self.n_envs, self.seed = total_rollouts, n_envs, seed
        self.backend, self.ray = backend, ray
        self.ranking_states, self.checkpoint_every = ranking_states, checkpoint_every
        self.ground_truth = ground_truth
        self.stop_rule = stop
        self.settled_at: int | None = None
        """Rollouts done when the method said its answer was settled (search.stop=auto), else None."""
        self.names = [p if isinstance(p, str) else p.name for p in env_spec.candidates]
        self.families = {p.name: p.family for p in env_spec.candidates if not isinstance(p, str)}
        self.console = Console(width=max(Console().width, 120))  # the ranking table needs the room, even in a log
        state_path = run_dir / STATE
        self.state = json.loads(state_path.read_text()) if state_path.exists() else {"rollouts": 0, "wall_time_s": 0.0}
        self.done = checkpoint_rollouts(run_dir)
        """Rollouts kept: a resumed run starts at its checkpoint and reruns what was recorded after it."""
        self.wall_before = float(self.state["wall_time_s"])
        """Seconds spent by earlier sessions of this run (resume); checkpoints add this session's (since `run()`)."""
        self.counts = PerturbationCounts(self.names)
        self.spent: list[list[str]] = []
        """The perturbations of every rollout, in order: where the budget went."""
        self.curve: list[dict[str, float]] = [c for c in self.state.get("curve", []) if c["rollouts"] <= self.done]
        """Ranking metrics as the search went on (every few rollouts): how fast it converged."""
        self.failures_found = 0
        self.monitor_agreement = MonitorAgreement()
        self.monitor_alone: dict[str, MonitorAgreement] = {}
        """The monitor's verdicts on each mode's rollouts under it alone (the ranking's rows)."""
        if self.done:
            for row in self._recorded_rollouts():
                self._tally(row)

    def _recorded_rollouts(self) -> list[dict[str, Any]]:
        """The first `done` rollouts of failures.hdf5 (counts come from the dataset, so they match what was kept)."""
        path = self.run_dir / "failures.hdf5"
        try:
            rows = read_rollouts(path)
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(
                f"search.resume={self.run_dir}: {path.name} cannot be read ({exc}); start a new run"
            ) from None
        if len(rows) < self.done:
            raise ValueError(
                f"search.resume={self.run_dir}: {path.name} holds {len(rows)} rollouts but the checkpoint stands "
                f"after {self.done}; start a new run"
            )
        return rows[: self.done]

    def _tally(self, info: dict[str, Any]) -> None:
        self.counts.add(info["perturbations"], info["failed"])
        self.spent.append(list(info["perturbations"]))
        self.failures_found += int(info["failed"])
        self.monitor_agreement.add(info["sim_failure"], info["monitor"])
        if len(info["perturbations"]) == 1:
            alone = self.monitor_alone.setdefault(info["perturbations"][0], MonitorAgreement())
            alone.add(info["sim_failure"], info["monitor"])

    # --------------------------------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        self.started = time.perf_counter()
        status = "complete"
        self.envs = make_vec_env(self.spec, self.n_envs, self.backend, self.ray)
        try:
            self.method = build_method(
                self.method_name, self.envs, self.hyperparameters, self.seed, self.run_dir / "tensorboard"
            )
            if self.done:
                self.method.load(self.run_dir / "checkpoint", self.envs)
                restore_worker_states(self.envs, json.loads((self.run_dir / "checkpoint" / "workers.json").read_text()))
            else:
                self.envs.seed(self.seed)
            self.nominal = self._nominal_observations(self.envs)
            model_xml = self.envs.env_method("model_xml", indices=[0])[0]
            self.dataset = FailureDatasetWriter(
                self.run_dir / "failures.hdf5", self.spec.task, model_xml, self.spec.candidates
            )
            dropped = self.dataset.truncate(self.done)
            if dropped:
                self.console.print(
                    f"resuming after rollout {self.done} (the last checkpoint): the {dropped} rollouts recorded after "
                    "it run again, with the same seeds"
                )
            self.tensorboard = SummaryWriter(str(self.run_dir / "tensorboard" / "search"))
            self.at_safe_point, self.last_checkpoint = True, self.done
            try:
                with (
                    GracefulStop(self.console) as self.stop,
                    SearchProgress(self.console, self.total, self.done) as self.progress,
                ):
                    if self.done < self.total:
                        self.method.run(self.envs, self.total - self.done, self._on_step, self._on_safe_point)
                if self.stop.requested:
                    status = "interrupted"
            except KeyboardInterrupt:
                status = "interrupted"
            except WORKER_LOST as exc:
                status = "worker_lost"
                self.console.print(
                    f"[red]a rollout worker died ({type(exc).__name__}: killed, out of memory or crashed; its "
                    "traceback, if any, is above)[/]"
                )
            if status != "complete":
                self.console.print(
                    f"[yellow]stopped after {self.done} rollouts, all of them in failures.hdf5; writing what was "
                    f"found. Continue with: python -m diagnosis.search search.resume={self.run_dir}[/]"
                )
            self._finish(status)
            summary = self._summary(status)
        finally:
            for closable in ("dataset", "tensorboard"):
                if hasattr(self, closable):
                    getattr(self, closable).close()
            close_workers(self.envs)
        self._print(summary)
        return summary

    def _on_step(self, actions: np.ndarray, infos: list[dict[str, Any]]) -> bool:
        self.at_safe_point = False
        for info in infos:
            self.done += 1
            self.dataset.write(info, self.done)
            self._tally(info)
        self.tensorboard.add_scalar("search/failures_found", self.failures_found, self.done)
        top = ""
        settled = self.stop_rule == "auto" and self.done < self.total and self.method.settled()
        # The curve gets a point every 10 rollouts and where the search ends, early or not.
        if settled or self.done % max(self.n_envs, 10) < self.n_envs or self.done >= self.total:
            estimated = self.counts.ranking()
            top = "top: " + ", ".join(estimated.top(3))
            metrics = self._metrics(self.ranking(), estimated)
            self.curve.append({"rollouts": self.done, **metrics})
            for key, value in metrics.items():
                self.tensorboard.add_scalar(f"ranking/{key}", value, self.done)
        self.progress.update(self.done, self.failures_found, top)
        if settled:
            self.settled_at = self.done
            return False
        return self.done < self.total and not self.stop.requested

    def _on_safe_point(self) -> None:
        self.at_safe_point = True
        if self.done - self.last_checkpoint >= self.checkpoint_every:
            self._checkpoint()

    # ----------------------------------------------------------------------------------------- ranking
    def _nominal_observations(self, envs: VecEnv) -> Any:
        seeds = [RANKING_SEED + i for i in range(self.ranking_states)]
        frames = envs.env_method("nominal_frames", seeds, indices=[0])[0]
        if self.spec.observe_applied:
            return {"image": frames, "applied": np.zeros((len(seeds), len(self.names)), dtype=np.int8)}
        return frames

    def ranking(self) -> Ranking:
        """The method's own ranking (its search scores)."""
        return Ranking(tuple(self.names), np.asarray(self.method.scores(self.nominal), dtype=float))

    def _metrics(self, searched: Ranking, estimated: Ranking) -> dict[str, float]:
        """RoboMD's metrics of the search scores; the ground-truth comparison of the ranking a user reads."""
        metrics = searched.metrics()
        if self.ground_truth is not None:
            metrics.update(compare(estimated, self.ground_truth))
        return metrics

    # ----------------------------------------------------------------------------------------- outputs
    def _checkpoint(self) -> None:
        """A resume point after `done` rollouts (only at a safe point: the method's whole state can be saved)."""
        save_checkpoint(self.run_dir, self.done, self.method_name, self.method.save, worker_states(self.envs))
        self.last_checkpoint = self.done
        self._write_state("running")

    def _finish(self, status: str) -> None:
        if self.at_safe_point and self.done > self.last_checkpoint:
            try:
                self._checkpoint()
            except WORKER_LOST:  # a dead worker's state is gone: resume from the previous checkpoint
                pass
        self._write_state(status)

    def _write_state(self, status: str) -> None:
        wall = self.wall_before + time.perf_counter() - self.started
        self.state.update(
            rollouts=self.done,
            checkpoint_rollouts=self.last_checkpoint,
            status=status,
            curve=self.curve,
            wall_time_s=wall,
        )
        write_json_atomic(self.run_dir / STATE, self.state)

    def _summary(self, status: str) -> dict[str, Any]:
        ranking, estimated = self.ranking(), self.counts.ranking()
        searched = {row["perturbation"]: row for row in ranking.rows()}
        rows = []
        for rank, row in enumerate(estimated.rows(), start=1):
            name = row["perturbation"]
            row = {
                "rank": rank,
                "perturbation": name,
                "estimated_failure_rate": row["score"],
                "score": searched[name]["score"],
                "search_score": searched[name]["search_score"],
                "search_rank": searched[name]["rank"],
                "family": self.families.get(name),
                **self.counts.row(name),
                "monitor": self.monitor_alone[name].brief() if name in self.monitor_alone else None,
            }
            if self.ground_truth is not None and name in self.ground_truth.entries:
                row["ground_truth_success"] = self.ground_truth.entries[name].success_rate
            rows.append(row)
        summary = {
            "status": status,
            "task": self.spec.task.name,
            "policy": self.spec.policy,
            "method": self.method_name,
            "budget": {
                "total_rollouts": self.total,
                "rollouts_done": self.done,
                "n_envs": self.n_envs,
                "backend": self.backend,
                "stop": self.stop_rule,
                "settled_at": self.settled_at,
                "settled": self.method.answer() if self.settled_at is not None else None,
            },
            "wall_time_s": round(self.state["wall_time_s"], 1),
            "failures_found": self.failures_found,
            "monitor": self.monitor_agreement.to_dict(),
            "ranking": rows,
            "metrics": ranking.metrics(),
            "ground_truth": None,
            "curve": self.curve,
            "config": self.config,
            **self.method.report(),
        }
        if "boundary" in summary:
            self._name_curve(summary["boundary"])
        if self.ground_truth is not None:
            summary["ground_truth"] = {
                "path": str(self.ground_truth.path),
                **compare(estimated, self.ground_truth),
                "search_scores": compare(ranking, self.ground_truth),
                f"budget_on_true_top{TOP_K}": budget_on_worst(self.spent, self.ground_truth, self.names, TOP_K),
                **rate_error(rows, self.ground_truth),
            }
        write_json_atomic(self.run_dir / "summary.json", summary)
        return summary

    def _name_curve(self, boundary: dict[str, Any]) -> None:
        """Names each point of a boundary search's curve and, with ground truth, sets the curve's error: the mean
        absolute difference between the fitted success and the ground truth's at the points it measured."""
        errors = []
        for name, point in zip(self.names, boundary["curve"]):
            point["perturbation"] = name
            if self.ground_truth is not None and name in self.ground_truth.entries:
                point["ground_truth_success"] = self.ground_truth.entries[name].success_rate
                errors.append(abs(point["success"] - point["ground_truth_success"]))
        boundary["curve_error"] = float(np.mean(errors)) if errors else None
        boundary["curve_error_points"] = len(errors)

    def _print(self, summary: dict[str, Any]) -> None:
        print_ranking(summary, self.console)
