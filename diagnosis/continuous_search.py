"""RoboMD's continuous failure search: `python -m diagnosis.search task=lift search=continuous`.

Gets a failure embedding (loads `search.embedding` when it names one written by `python -m diagnosis.embed`, else
trains one on the failure data it names, into <run>/embedding), trains a stable-baselines3 agent — PPO, or SAC as
RoboMD's baseline — in `ContinuousSearchEnv` over its known embeddings, and ranks the known perturbations by the
agent's Gaussian density at their embeddings. The run directory gets

    config.yaml            the resolved configuration
    summary.json           the ranking with probabilities, metrics and the ground-truth comparison, in the shape
                           of the discrete search's (diagnosis.search_run), plus the embedding and algorithm used
    search.safetensors     the agent's policy weights, the known rows it searched and its action coordinates
                           (PolicySpace), reloaded by diagnosis.rank_unseen
    tensorboard/           the agent's curves

The agent acts in the known embeddings' top `search.components` principal directions, each in units of its spread
(PolicySpace says why); a point is mapped back into the embedding before it is matched (Algorithm 2).

Scores. The policy's log-density at a perturbation's embeddings (mean over the rollouts that tried it alone) ranks
it; RoboMD compares perturbations by the ratio of these densities. In many dimensions a ratio of densities under-
or overflows, so the score is its k-th root relative to the top perturbation (k = the action dimension),
exp((log p − max log p) / k) ∈ (0, 1]: the same order, finite, with no ties from underflow. Densities are read in
the agent's action coordinates (SAC: of its Gaussian before the tanh squashing, whose Jacobian would favour the
faces of the box). Where failures dominate the known set, its centroid — where the agent's Gaussian starts — already
lies among failures, and training changes the order little (experiments/results/continuous_lift.md measures it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from safetensors.torch import load_file, save_file
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from diagnosis.continuous_env import ContinuousRewards, ContinuousSearchEnv, KnownEmbeddings
from diagnosis.embed import META, EmbedConfig, TrainedEmbedding, train_embedding
from diagnosis.evaluation import GroundTruth, compare
from diagnosis.ranking import Ranking
from diagnosis.report import radar_plot
from envs.choices import check_choice

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC}
SEARCH_FILE = "search.safetensors"


# ---------------------------------------------------------------------------------------------------- the agent
@dataclass(frozen=True)
class PolicySpace:
    """Embedding ↔ agent action coordinates: the known embeddings' top principal directions through their centroid,
    in units of the spread along the first.

    Why not the raw 512 coordinates: a contrastively trained embedding is nearly one-dimensional (on Lift the first
    component holds ~90% of the known set's variance: the outcome axis), so a diagonal Gaussian over 512 raw axes
    explores empty space — a sample lands √512·σ away from every known point and its nearest neighbour is noise —
    and its per-axis widths cannot line up with the axis that matters. In principal coordinates the agent's diagonal
    Gaussian is aligned with that axis, starts at the centroid, and `components` dimensions are what it searches;
    rewards are still measured in the full embedding (a point is mapped back before the nearest-neighbour lookup).
    One scale for every direction keeps the embedding's geometry, so the density that ranks perturbations weighs a
    deviation along a minor direction as little as the embedding does; `whiten` scales each direction to unit
    spread instead, which inflates those minor directions. experiments/continuous_eval.py measures both and the
    raw space."""

    center: np.ndarray
    """(dim,) the known embeddings' centroid."""
    basis: np.ndarray
    """(k, dim) orthonormal principal directions."""
    scale: np.ndarray
    """(k,) embedding units per agent unit along each direction."""

    @classmethod
    def of(cls, known: KnownEmbeddings, components: int = 16, whiten: bool = False) -> PolicySpace:
        """`components` principal directions (0: every direction the known set spans)."""
        if components < 0:
            raise ValueError(f"search.components must be >= 0 (0 = all), got {components}")
        embeddings = known.embeddings.astype(np.float64)
        center = embeddings.mean(axis=0)
        _, singular, vt = np.linalg.svd(embeddings - center, full_matrices=False)
        rank = max(1, int((singular > 1e-6 * max(singular[0], 1e-12)).sum()))
        k = rank if components == 0 else min(components, rank)
        spread = singular[:k] / np.sqrt(max(len(embeddings) - 1, 1))
        scale = spread if whiten else np.full(k, spread[0])
        return cls(center.astype(np.float32), vt[:k].astype(np.float32), np.maximum(scale, 1e-6).astype(np.float32))

    @property
    def dim(self) -> int:
        return len(self.scale)

    def to_policy(self, points: np.ndarray) -> np.ndarray:
        """(N, dim) embedding points → (N, k) agent coordinates (the part off the subspace is dropped)."""
        return ((np.asarray(points, dtype=np.float64) - self.center) @ self.basis.T.astype(np.float64)) / self.scale

    def to_embedding(self, actions: np.ndarray) -> np.ndarray:
        return (self.center + (np.asarray(actions, dtype=np.float64) * self.scale) @ self.basis).astype(np.float32)

    def wrap(self, env: ContinuousSearchEnv, widen: float = 0.05) -> gym.Env:
        """`env` as the agent sees it: a Box over the known embeddings' range in agent coordinates, widened by
        `widen` of it so the extremes lie inside."""
        points = self.to_policy(env.known.embeddings)
        low, high = points.min(axis=0), points.max(axis=0)
        pad = widen * (high - low) + 1e-3
        space = gym.spaces.Box((low - pad).astype(np.float32), (high + pad).astype(np.float32), dtype=np.float32)
        return gym.wrappers.TransformAction(env, self.to_embedding, space)


def policy_env(known: KnownEmbeddings, rewards: ContinuousRewards, space: PolicySpace) -> gym.Env:
    return space.wrap(ContinuousSearchEnv(known.task, known, rewards=rewards))


def build_agent(
    algorithm: str, env: gym.Env, hyperparameters: dict[str, Any], seed: int, tensorboard: Path | None = None
) -> BaseAlgorithm:
    """An SB3 agent with an MLP policy; `net_arch` and `log_std_init` go to the policy, the rest to the algorithm."""
    check_choice(algorithm, ALGORITHMS, "search.algorithm")
    params = dict(hyperparameters)
    policy_kwargs = {"net_arch": list(params.pop("net_arch", [64, 64]))}
    if "log_std_init" in params:
        policy_kwargs["log_std_init"] = float(params.pop("log_std_init"))
    return ALGORITHMS[algorithm](
        "MlpPolicy",
        env,
        seed=seed,
        verbose=0,
        device="cpu",
        policy_kwargs=policy_kwargs,
        tensorboard_log=str(tensorboard) if tensorboard else None,
        **params,
    )


@torch.no_grad()
def log_density(agent: BaseAlgorithm, points: np.ndarray, space: PolicySpace) -> np.ndarray:
    """The agent's Gaussian log-density at embedding points (SAC: of its Gaussian before the tanh squashing)."""
    actions = space.to_policy(np.atleast_2d(points))
    obs = torch.zeros((len(actions), 1), dtype=torch.float32)
    if isinstance(agent, SAC):
        squashed = torch.as_tensor(agent.policy.scale_action(actions), dtype=torch.float32)
        mean, log_std, _ = agent.actor.get_action_dist_params(obs)
        gaussian = torch.distributions.Normal(mean, log_std.exp())
        return gaussian.log_prob(torch.atanh(squashed.clamp(-1 + 1e-6, 1 - 1e-6))).sum(dim=-1).double().numpy()
    gaussian = agent.policy.get_distribution(obs).distribution
    return gaussian.log_prob(torch.as_tensor(actions, dtype=torch.float32)).sum(dim=-1).double().numpy()


def density_scores(log_densities: np.ndarray, dim: int) -> np.ndarray:
    """exp((log p − max log p) / dim): densities relative to the top one, per dimension (module docstring)."""
    log_densities = np.asarray(log_densities, dtype=float)
    return np.exp((log_densities - log_densities.max()) / dim)


def rank_known(
    agent: BaseAlgorithm, known: KnownEmbeddings, names: Sequence[str], space: PolicySpace
) -> tuple[Ranking, np.ndarray]:
    """Ranking of the known perturbations, and their mean log-densities."""
    per_row = log_density(agent, known.embeddings, space)
    per_name = np.array([per_row[known.rows_of(n)].mean() for n in names])
    return Ranking(tuple(names), density_scores(per_name, space.dim)), per_name


# ---------------------------------------------------------------------------------------------------- a run
@dataclass
class ContinuousSearch:
    """A finished continuous search, loaded back: the embedding, its known set and the trained agent."""

    run_dir: Path
    summary: dict[str, Any]
    trained: TrainedEmbedding
    known: KnownEmbeddings
    agent: BaseAlgorithm
    space: PolicySpace

    def log_density(self, embeddings: np.ndarray) -> np.ndarray:
        return log_density(self.agent, embeddings, self.space)

    @classmethod
    def load(cls, run_dir: str | Path) -> ContinuousSearch:
        run_dir = Path(run_dir)
        summary_path, weights_path = run_dir / "summary.json", run_dir / SEARCH_FILE
        if not summary_path.is_file() or not weights_path.is_file():
            raise FileNotFoundError(
                f"{run_dir} is not a continuous search run (needs summary.json and {SEARCH_FILE}); make one with "
                "python -m diagnosis.search search=continuous"
            )
        summary = json.loads(summary_path.read_text())
        if summary.get("method") != "continuous":
            raise ValueError(f"{run_dir} holds a {summary.get('method')!r} search, not a continuous one")
        trained = TrainedEmbedding.load(summary["embedding"], summary["task"], summary["policy"])
        stored = load_file(str(weights_path))
        known = known_subset(trained, stored["known_rows"].numpy())
        search = summary["config"]["search"]
        space = PolicySpace(*(stored[f"space.{k}"].numpy() for k in ("center", "basis", "scale")))
        env = policy_env(known, ContinuousRewards(), space)
        agent = build_agent(search["algorithm"], env, algorithm_params(search), 0)
        policy = {k.removeprefix("policy."): v for k, v in stored.items() if k.startswith("policy.")}
        agent.policy.load_state_dict(policy)
        return cls(run_dir, summary, trained, known, agent, space)


def known_subset(trained: TrainedEmbedding, rows: np.ndarray) -> KnownEmbeddings:
    return KnownEmbeddings(
        trained.task, trained.known[rows], trained.failed[rows], tuple(trained.perturbations[i] for i in rows)
    )


def algorithm_params(search: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The chosen algorithm's hyperparameters from `search.hyperparameters.<algorithm>`."""
    chosen = search["hyperparameters"][search["algorithm"]]
    return OmegaConf.to_container(chosen, resolve=True) if isinstance(chosen, DictConfig) else dict(chosen)


def obtain_embedding(
    search: DictConfig, task: str, policy: str, exclude: Sequence[str], seed: int, run_dir: Path
) -> tuple[TrainedEmbedding, Path]:
    """`search.embedding`: a trained embedding (checked against task, policy and held-out perturbations), or
    failure data to train one on, into <run_dir>/embedding."""
    source = search.embedding
    if not source:
        raise ValueError(
            "search.embedding is required: an embedding directory (python -m diagnosis.embed) or failure data "
            "(failures.hdf5 files or search run directories, comma-separated) to train one on"
        )
    if (Path(str(source)) / META).is_file():
        trained = TrainedEmbedding.load(source, task, policy)
        leaked = sorted(set(exclude) & set(trained.seen))
        if leaked:
            raise ValueError(
                f"task.exclude holds out {', '.join(leaked)}, but the embedding {source} was trained on rollouts of "
                f"them; train one with exclude={','.join(exclude)}"
            )
        return trained, Path(str(source))
    overrides = OmegaConf.to_container(search.embed, resolve=True) if search.get("embed") else {}
    config = EmbedConfig(task=task, data=str(source), policy=policy, exclude=",".join(exclude), seed=seed, **overrides)
    trained = train_embedding(config)
    return trained, trained.save(run_dir / "embedding")


class _Progress(BaseCallback):
    """Counts failures found and records the ranking metrics every `every` steps (the search's curve)."""

    def __init__(self, every: int, evaluate):
        super().__init__()
        self.every, self.evaluate = every, evaluate
        self.failures_found = 0
        self.curve: list[dict[str, float]] = []

    def _on_training_start(self) -> None:
        if not self.curve:
            self.curve.append({"steps": 0, **self.evaluate()})

    def _on_step(self) -> bool:
        self.failures_found += sum(int(info["failed"]) for info in self.locals["infos"])
        if self.num_timesteps % self.every == 0:
            self.curve.append({"steps": self.num_timesteps, **self.evaluate()})
        return True


def run_continuous_search(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """The whole continuous search for a composed configuration; returns the summary (also in summary.json)."""
    from diagnosis.printout import print_ranking
    from diagnosis.search import check_writable, resolve_candidates, resolve_ground_truth, resolve_task
    from diagnosis.search_run import PerturbationCounts
    from policies.registry import default_policy

    started = time.perf_counter()
    search = cfg.search
    check_choice(search.algorithm, ALGORITHMS, "search.algorithm")
    for key in ("total_steps", "curve_every"):
        if int(search[key]) < 1:
            raise ValueError(f"search.{key} must be >= 1, got {search[key]}")
    task = resolve_task(cfg.task)
    policy = str(cfg.policy.name or default_policy(task))
    candidates = [p.name for p in resolve_candidates(cfg, task)]
    ground_truth = resolve_ground_truth(cfg, task, policy)
    check_writable(run_dir)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)

    trained, embedding_dir = obtain_embedding(search, task.name, policy, list(cfg.task.exclude), int(cfg.seed), run_dir)
    allowed = set(candidates)
    rows = np.flatnonzero([set(ps) <= allowed for ps in trained.perturbations])
    known = known_subset(trained, rows)
    if not known.failed.any() or known.failed.all():
        raise ValueError("the known rollouts among the candidates all have one outcome: nothing to search for")
    names = [n for n in candidates if n in set(known.names())]
    rewards = ContinuousRewards(
        float(search.c_fail),
        float(search.c_success),
        float(search.distance_weight),
        float(search.repeat_cost),
        int(search.horizon),
    )
    space = PolicySpace.of(known, int(search.components), bool(search.whiten))
    agent = build_agent(
        str(search.algorithm),
        policy_env(known, rewards, space),
        algorithm_params(search),
        int(cfg.seed),
        run_dir / "tensorboard",
    )

    def metrics() -> dict[str, float]:
        ranking, _ = rank_known(agent, known, names, space)
        return {**ranking.metrics(), **(compare(ranking, ground_truth) if ground_truth else {})}

    progress = _Progress(int(search.curve_every), metrics)
    interrupted = False
    try:
        agent.learn(
            total_timesteps=int(search.total_steps), callback=progress, progress_bar=True, tb_log_name=search.algorithm
        )
    except KeyboardInterrupt:
        interrupted = True
    weights = {f"policy.{k}": v.detach().contiguous() for k, v in agent.policy.state_dict().items()}
    weights["known_rows"] = torch.as_tensor(rows)
    weights.update({f"space.{k}": torch.as_tensor(getattr(space, k)) for k in ("center", "basis", "scale")})
    save_file(weights, str(run_dir / SEARCH_FILE))

    ranking, per_name = rank_known(agent, known, names, space)
    counts = PerturbationCounts(names)
    for ps, failed in zip(known.perturbations, known.failed):
        counts.add([n for n in ps if n in allowed], bool(failed))
    summary = build_summary(
        ranking,
        per_name,
        counts,
        ground_truth,
        status="interrupted" if interrupted else "complete",
        task=task.name,
        policy=policy,
        algorithm=str(search.algorithm),
        embedding=embedding_dir,
        data_rollouts=len(known),
        steps=int(agent.num_timesteps),
        failures_found=progress.failures_found,
        curve=progress.curve,
        unseen=[n for n in candidates if n not in set(names)],
        held_out=list(cfg.task.exclude),
        wall_time_s=time.perf_counter() - started,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    radar_plot(summary, run_dir / "radar.png")
    print_ranking(summary, Console(width=max(Console().width, 120)))
    return summary


def build_summary(
    ranking: Ranking,
    log_densities: np.ndarray,
    counts,
    ground_truth: GroundTruth | None,
    *,
    status: str,
    task: str,
    policy: str,
    algorithm: str,
    embedding: Path,
    data_rollouts: int,
    steps: int,
    failures_found: int,
    curve: list[dict[str, float]],
    unseen: list[str],
    held_out: list[str],
    wall_time_s: float,
    config: dict[str, Any],
) -> dict[str, Any]:
    """summary.json in the discrete search's shape. `budget.rollouts_done` is the rollouts the embedding's known
    set holds — the continuous search runs none itself; its own budget is `budget.search_steps`. `unseen`: candidates
    no known rollout tried; `held_out`: perturbations kept out of the search and the embedding (task.exclude) —
    both are what diagnosis.rank_unseen is for."""
    density = dict(zip(ranking.names, log_densities))
    rows = ranking.rows()
    for row in rows:
        name = row["perturbation"]
        row.update(counts.row(name), log_density=float(density[name]))
        if ground_truth is not None and name in ground_truth.entries:
            row["ground_truth_success"] = ground_truth.entries[name].success_rate
    return {
        "status": status,
        "task": task,
        "policy": policy,
        "method": "continuous",
        "algorithm": algorithm,
        "embedding": str(embedding),
        "budget": {"total_rollouts": data_rollouts, "rollouts_done": data_rollouts, "n_envs": 1, "search_steps": steps},
        "wall_time_s": round(wall_time_s, 1),
        "failures_found": failures_found,
        "ranking": rows,
        "metrics": ranking.metrics(),
        "ground_truth": {"path": str(ground_truth.path), **compare(ranking, ground_truth)} if ground_truth else None,
        "curve": curve,
        "unseen": unseen,
        "held_out": held_out,
        "config": config,
    }
