"""`python -m diagnosis.improve run=<search run> top_k=5 demos=20`: fine-tune the policy under test on the failure
modes a search found, and measure what that repaired.

1. **Modes**: the run's first top_k single modes by estimated failure rate (summary.json's ranking; composed
   candidates are not repaired here).
2. **Targeted demonstrations**: `demos` scripted-expert demonstrations under each mode (policies.collect; seeds
   from DEMO_SEED on, which no evaluation uses). The expert acts on simulator state, so what only changes the
   picture does not defeat it; a mode where it succeeds in fewer than half of its attempts is skipped and reported.
3. **Control at equal data**: as many demonstrations under catalogue perturbations drawn uniformly at random.
4. **Fine-tuning**: the policy's checkpoint trained further on its own demonstrations plus each set
   (policies.train init=...), with the same recipe and seed: `<out>/<policy>_targeted`, `<out>/<policy>_control`,
   each a checkpoint any CLI takes as `policy=`, with a model card.
5. **Evaluation** on the ground-truth protocol (experiments.ground_truth, seeds 0..episodes-1) for both, against
   the policy's own ground truth: diagnosis.improvement's groups, targets and radar.
6. **Iterate**: the run's search again on the fine-tuned policy; its new top modes.
Writes improve.json, improve.md and radar_before_after.png in `out`. Every step is kept as it finishes, so the same
command resumes a stopped run.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from diagnosis.cluster_export import chosen_clusters, cluster_modes, read_clusters
from diagnosis.evaluation import GroundTruth, default_ground_truth_path, load_ground_truth
from diagnosis.improvement import GROUPS, Targets, before_after_radar, compare_truths
from envs.backends import Backend, RolloutSettings
from envs.cli import command_line, parse_config
from envs.markdown import markdown_table
from envs.perturbations import NOMINAL, task_perturbations
from envs.tasks import TaskSpec, get_task
from policies.checkpoint import CONFIG, load_checkpoint
from policies.collect import CollectConfig, collect, collected, mode_parts
from policies.registry import shipped_checkpoints

DEMO_SEED = 500_000
"""First seed of the targeted demonstrations (the control's start at CONTROL_SEED): far from the ground truth's
0..episodes-1, the training evaluations' 10_000+ and the original demonstrations' seeds."""
CONTROL_SEED = 700_000
MODE_SEEDS = 1_000
"""Seeds reserved per mode."""
ARMS = ("targeted", "control")
RADAR = "radar_before_after.png"


@dataclass
class ImproveConfig(RolloutSettings):
    run: str = ""
    """A finished search run directory (python -m diagnosis.search ...)."""
    top_k: int = 5
    """Failure modes to repair: the run's first top_k by estimated failure rate."""
    clusters: str = ""
    """Repair the modes behind these failure clusters of the run instead (ids or names separated by `;`, ids also by
    commas, from its clusters.json: python -m diagnosis.cluster): their rollouts' single modes in ranking order, at
    most top_k."""
    demos: int = 20
    """Scripted demonstrations collected under each mode."""
    data: str = ""
    """The policy's own demonstrations (default: the file its checkpoint was trained on)."""
    epochs: int = 10
    lr: float = 3e-4
    batch_size: int = 64
    select_every: int = 3
    """Epochs between the fine-tuning's rollout evaluations, which choose the checkpoint kept: the nominal scene and
    every targeted mode, select_episodes seeds each from 10_000 on (the evaluation's are 0..episodes-1), scored half
    nominal success, half the modes' mean, for both arms alike. 0: keep the lowest validation loss."""
    select_episodes: int = 10
    seed: int = 0
    episodes: int = 20
    """Evaluation rollouts per mode (seeds 0..episodes-1, as the policy's ground truth)."""
    control: bool = True
    """Also fine-tune on as many demonstrations under random perturbations (the control at equal data)."""
    iterate: bool = True
    """Search the fine-tuned policy again with the run's settings."""
    search_rollouts: int = 0
    """Budget of that search (0: the run's own)."""
    out: str = ""
    """Output directory (default runs/improve/<run name>)."""
    results: str = ""
    """Also write improve.md and .json under this stem (e.g. experiments/results/improve_lift)."""


def read_summary(run: str) -> dict:
    path = Path(run) / "summary.json"
    if not run or not path.is_file():
        raise ValueError(f"run={run!r} is not a search run (no summary.json); run python -m diagnosis.search first")
    summary = json.loads(path.read_text())
    if summary.get("method") == "continuous":
        raise ValueError(f"{run} is a continuous search, whose modes are points of an embedding; use a discrete run")
    if summary.get("status") != "complete":
        raise ValueError(f"{run} has status {summary.get('status')!r}; resume it to completion first")
    return summary


def checkpoint_dir(policy: str) -> Path:
    """The FailScope checkpoint folder of the policy under test; anything else cannot be fine-tuned here."""
    path = shipped_checkpoints().get(policy, Path(policy))
    if not (path / CONFIG).is_file():
        raise ValueError(
            f"policy {policy!r} cannot be fine-tuned: diagnosis.improve trains FailScope checkpoints "
            "(policies.train folders); TorchScript, robomimic and Python-callable policies are evaluated, not trained"
        )
    return path


def chosen_modes(ranked: list[str], top_k: int) -> list[str]:
    """The first `top_k` of the modes in ranking order."""
    if not 1 <= top_k <= len(ranked):
        raise ValueError(f"top_k must be in [1, {len(ranked)}] (the run's single modes), got {top_k}")
    return ranked[:top_k]


def cluster_chosen_modes(run: str, clusters: str, ranked: list[str], top_k: int) -> list[str]:
    """The single modes behind the chosen clusters' rollouts, in ranking order, at most `top_k`."""
    document = read_clusters(run)
    behind = set(cluster_modes(run, chosen_clusters(document, clusters), document))
    modes = [m for m in ranked if m in behind]
    if not modes:
        raise ValueError(f"clusters {clusters!r} hold no rollout of a single mode of the run (only composed ones)")
    return modes[:top_k]


class Improvement:
    """One improvement run: its steps in order, each resumable from what `out` holds."""

    def __init__(self, config: ImproveConfig):
        config.check()
        for key in ("top_k", "demos", "epochs", "episodes", "select_episodes"):
            if getattr(config, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(config, key)}")
        if config.select_every < 0:
            raise ValueError(
                f"select_every must be >= 0 (0: keep the lowest validation loss), got {config.select_every}"
            )
        self.config = config
        self.summary = read_summary(config.run)
        self.policy = self.summary["policy"]
        self.checkpoint = checkpoint_dir(self.policy)
        self.start = load_checkpoint(self.checkpoint)
        self.spec: TaskSpec = get_task(self.summary["task"])
        self.perturbation_file = self.summary["config"]["task"].get("perturbation_file") or ""
        self.catalogue = task_perturbations(self.spec, self.perturbation_file)
        self.evaluated = [r["perturbation"] for r in self.summary["ranking"] if r["perturbation"] in self.catalogue]
        """The run's single modes: what the ground truths cover (composed candidates are left out of the repair)."""
        self.modes = (
            cluster_chosen_modes(config.run, config.clusters, self.evaluated, config.top_k)
            if config.clusters
            else chosen_modes(self.evaluated, config.top_k)
        )
        self.families = {
            **{name: p.family for name, p in self.catalogue.items()},
            **{row["perturbation"]: row["family"] for row in self.summary["ranking"]},
        }
        self.own_data = config.data or self.start.training.get("data", "")
        for path in self.own_data.split(","):
            if not Path(path).is_file():
                raise ValueError(
                    f"the policy's own demonstrations {path!r} are missing; collect them "
                    f"(python -m policies.collect task={self.spec.name} episodes=200) or name them with data="
                )
        self.out = Path(config.out or Path("runs/improve") / Path(config.run).name)
        self.out.mkdir(parents=True, exist_ok=True)
        self.name = Path(self.policy).name
        self.backend: Backend | None = None
        """The workers demonstrations are collected on, while the collection steps run."""

    def settings(self) -> dict:
        """The rollout settings every step passes on."""
        c = self.config
        return {"workers": c.workers, "backend": c.backend, "ray": c.ray}

    def collect_mode(self, mode: str, episodes: int, out: Path, seed: int) -> tuple[int, int]:
        """`episodes` expert demonstrations under `mode` in `out`, from at most twice as many attempts; (kept,
        tried)."""
        kept, tried = collected(out)
        if kept >= episodes or tried >= 2 * episodes:
            return kept, tried
        collect(
            CollectConfig(
                task=self.spec.name,
                episodes=episodes,
                out=str(out),
                perturbations=",".join(mode_parts(mode)),
                perturbation_file=self.perturbation_file,
                seed=seed,
                max_attempts=2 * episodes,
                **self.settings(),
            ),
            backend=self.backend,
        )
        return collected(out)

    def targeted_demos(self) -> dict:
        """Step 2: per mode, its file and how the expert did; modes it fails are skipped."""
        collected = {}
        for i, mode in enumerate(self.modes):
            path = self.out / "demos" / "targeted" / f"{mode}.hdf5"
            kept, tried = self.collect_mode(mode, self.config.demos, path, DEMO_SEED + i * MODE_SEEDS)
            collected[mode] = {"file": str(path), "demos": kept, "tried": tried, "used": kept >= self.config.demos}
        return collected

    def control_demos(self, total: int) -> dict:
        """Step 3: `total` demonstrations under uniformly drawn catalogue singles; a draw the expert cannot serve
        is drawn again among the perturbations it can."""
        rng = np.random.default_rng([self.config.seed, 7])
        names = [n for n, p in self.catalogue.items() if p.family != "composed"]
        wanted: Counter[str] = Counter()
        refused: set[str] = set()
        collected: dict[str, dict] = {}
        while True:
            kept = {m: v["demos"] for m, v in collected.items()}
            short = total - sum(min(kept.get(m, 0), wanted[m]) for m in wanted)
            if short <= 0:
                break
            allowed = [n for n in names if n not in refused]
            if not allowed:
                raise ValueError("the scripted expert fails under every catalogue perturbation; no control data")
            wanted.update(rng.choice(allowed, size=short).tolist())
            for mode in sorted(wanted, key=names.index):
                path = self.out / "demos" / "control" / f"{mode}.hdf5"
                got, tried = self.collect_mode(mode, wanted[mode], path, CONTROL_SEED + names.index(mode) * MODE_SEEDS)
                collected[mode] = {"file": str(path), "demos": got, "tried": tried, "used": True}
                if got < wanted[mode]:
                    refused.add(mode)
                    wanted[mode] = got
        return {m: v for m, v in collected.items() if v["demos"]}

    def fine_tune(self, arm: str, files: list[str], modes: list[str]) -> Path:
        """Step 4: the policy's checkpoint trained on its own demonstrations plus `files` (kept once done), the
        checkpoint kept chosen by rollouts on the nominal scene and the targeted `modes`."""
        from policies.train import TrainConfig, Trainer

        out = self.out / f"{self.name}_{arm}"
        done = out / CONFIG
        if done.is_file() and json.loads(done.read_text())["training"].get("wall_seconds") is not None:
            return out
        original = self.start.training.get("config", {})
        Trainer(
            TrainConfig(
                task=self.spec.name,
                arch=self.start.model_config.arch,
                data=",".join([self.own_data, *files]),
                init=str(self.checkpoint),
                out=str(out),
                epochs=self.config.epochs,
                lr=self.config.lr,
                batch_size=self.config.batch_size,
                eval_every=self.config.select_every,
                eval_episodes=self.config.select_episodes,
                eval_modes=",".join(modes),
                perturbation_file=self.perturbation_file,
                seed=self.config.seed,
                window=self.start.model_config.window,
                augment=tuple(original.get("augment", ("crop",))),
            )
        ).run()
        self.write_card(out, arm, files)
        return out

    def write_card(self, out: Path, arm: str, files: list[str]) -> None:
        how = (
            "the top failure modes the search ranked" if arm == "targeted" else "randomly drawn catalogue perturbations"
        )
        (out / "MODEL_CARD.md").write_text(
            f"""# {out.name}

- **Fine-tuned from**: `{self.policy}` ({self.start.model_config.arch}), on its own demonstrations
  (`{self.own_data}`) plus {sum(collected(Path(f))[0] for f in files)} scripted demonstrations under {how}
  ({len(files)} perturbations: {", ".join(Path(f).stem for f in files)}).
- **Search run**: `{self.config.run}` ({self.summary["method"]}, {self.summary["budget"]["rollouts_done"]} rollouts).
- **Recipe**: {self.config.epochs} epochs, lr {self.config.lr}, batch {self.config.batch_size}, seed
  {self.config.seed}; {self.selection()}.
- **Command**: `{self.command()}`
- **Measured**: improve.md beside this folder (the ground-truth protocol, seeds 0..{self.config.episodes - 1}).
- **Format**: `model.safetensors` (safetensors) + `config.json`; loading executes no code.
"""
        )

    def selection(self) -> str:
        """How the kept checkpoint was chosen, in words."""
        c = self.config
        if not c.select_every:
            return "the checkpoint of the lowest validation loss is kept"
        return (
            f"the checkpoint kept is the best of rollout evaluations every {c.select_every} epochs "
            f"({c.select_episodes} seeds from 10000 on per condition; half nominal success, half the targeted modes' "
            "mean)"
        )

    def ground_truth(self, policy: str, out: Path) -> GroundTruth:
        """Step 5: the policy's ground truth over the nominal scene and the run's single modes, in `out` (resumes
        from its partial file)."""
        from experiments.ground_truth import GroundTruthConfig, evaluate, plan

        c = self.config
        config = GroundTruthConfig(
            task=self.spec.name,
            policy=policy,
            episodes=c.episodes,
            out=str(out),
            perturbation_file=self.perturbation_file,
            perturbations=",".join([NOMINAL, *self.evaluated]),
            **self.settings(),
        )
        path = plan(config, self.spec, self.catalogue)[1].with_suffix(".json")
        if not path.is_file():
            evaluate(config)
        return load_ground_truth(path, self.spec.name)

    def before(self) -> GroundTruth:
        """The policy's committed ground truth when it holds every evaluated mode on the same seeds, else one
        measured now."""
        committed = default_ground_truth_path(self.policy, self.spec.name)
        if committed.is_file():
            truth = load_ground_truth(committed, self.spec.name, self.policy)
            names = [NOMINAL, *self.evaluated]
            if all(n in truth.entries and truth.entries[n].episodes == self.config.episodes for n in names):
                return GroundTruth(truth.task, truth.policy, {n: truth.entries[n] for n in names}, truth.path)
        return self.ground_truth(str(self.checkpoint), self.out / "before")

    def search_again(self, policy: Path, truth: GroundTruth) -> dict:
        """Step 6: the run's search on the fine-tuned policy; its summary."""
        from diagnosis.search import run_search

        run_dir = self.out / "search_after"
        summary_path = run_dir / "summary.json"
        if summary_path.is_file() and json.loads(summary_path.read_text()).get("status") == "complete":
            return json.loads(summary_path.read_text())
        cfg = OmegaConf.load(Path(self.config.run) / "config.yaml")
        cfg.policy.name = str(policy)
        cfg.ground_truth = str(truth.path)
        cfg.backend, cfg.ray = self.config.backend, asdict(self.config.ray)
        if self.config.search_rollouts:
            cfg.search.total_rollouts = self.config.search_rollouts
        cfg.search.resume = str(run_dir) if (run_dir / "state.json").is_file() else None
        return run_search(cfg, run_dir)

    def command(self) -> str:
        return command_line("diagnosis.improve", self.config)

    def run(self) -> dict:
        started = time.perf_counter()
        with self.config.open_backend() as self.backend:  # one set of workers for every file of demonstrations
            targeted = self.targeted_demos()
            used = [m for m, v in targeted.items() if v["used"]]
            if not used:
                raise ValueError(f"the scripted expert fails under every chosen mode ({', '.join(self.modes)})")
            files = {"targeted": [targeted[m]["file"] for m in used]}
            control = {}
            if self.config.control:
                control = self.control_demos(sum(targeted[m]["demos"] for m in used))
                files["control"] = [v["file"] for v in control.values()]
        checkpoints = {arm: self.fine_tune(arm, files[arm], used) for arm in ARMS if arm in files}
        result = {
            "command": self.command(),
            "search_command": search_command(self.config.run),
            "selection": self.selection(),
            "task": self.spec.name,
            "policy": self.policy,
            "run": self.config.run,
            "config": {k: v for k, v in asdict(self.config).items() if k != "ray"},
            "modes": self.modes,
            "targeted": used,
            "families": {m: self.families[m] for m in self.modes},
            "skipped": {m: v for m, v in targeted.items() if not v["used"]},
            "demos": {"targeted": targeted, "control": control},
            "checkpoints": {arm: str(path) for arm, path in checkpoints.items()},
        }
        truths = {"before": self.before()}
        for arm, path in checkpoints.items():
            truths[arm] = self.ground_truth(str(path), self.out)
        result["comparison"] = compare_truths(truths, used, self.families, Targets())
        before_after_radar(truths, used, self.out / RADAR)
        if self.config.iterate:
            after = self.search_again(checkpoints["targeted"], truths["targeted"])
            result["search_after"] = {
                "run": str(self.out / "search_after"),
                "top": [
                    {k: row.get(k) for k in ("perturbation", "estimated_failure_rate", "ground_truth_success")}
                    for row in after["ranking"][: self.config.top_k]
                ],
            }
        result["wall_time_s"] = round(time.perf_counter() - started, 1)
        self.write(result)
        return result

    def write(self, result: dict) -> None:
        """improve.md/.json and the radar in `out`, and under the `results` stem when one is given."""
        radar = self.out / RADAR
        stems = [self.out / "improve"] + ([Path(self.config.results)] if self.config.results else [])
        for stem in stems:
            stem.parent.mkdir(parents=True, exist_ok=True)
            shown = radar if stem.parent == self.out else stem.with_name(f"{stem.name}_{RADAR}")
            if shown != radar:
                shutil.copyfile(radar, shown)
            stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
            stem.with_suffix(".md").write_text(improvement_markdown(result, shown.name))


def search_command(run: str) -> str:
    """The command line that made a search run, from Hydra's record of its overrides."""
    overrides = Path(run) / ".hydra" / "overrides.yaml"
    if not overrides.is_file():
        return f"(unknown: {overrides} is missing)"
    return " ".join(["python -m diagnosis.search", *OmegaConf.load(overrides)])


def cell(group: dict | None) -> str:
    if not group:
        return "-"
    return f"{group['success']:.2f} [{group['low']:.2f}, {group['high']:.2f}] (n={group['episodes']})"


def improvement_markdown(result: dict, radar: str) -> str:
    comparison = result["comparison"]
    arms = comparison["arms"]
    names = list(arms)
    lines = [
        f"# Failure-guided fine-tuning: {result['policy']} on {result['task']}",
        "",
        f"Command: `{result['command']}`; the search run `{result['run']}` came from "
        f"`{result['search_command']}`. Fine-tuning: {result['selection']}.",
        "",
        "Success on the ground-truth protocol (plain rollouts, the same seeds for every row and arm; 95% Wilson "
        "intervals). `targeted`: fine-tuned on the policy's demonstrations plus scripted ones under the modes below; "
        "`control`: the same recipe with as many demonstrations under randomly drawn perturbations.",
        "",
        markdown_table(
            ["group", "modes", *names],
            [
                [g, len(comparison["groups"][g]), *(cell(arms[a]["groups"].get(g)) for a in names)]
                for g in GROUPS
                if comparison["groups"].get(g)
            ],
        ),
        "",
        "## Targeted modes",
        "",
        markdown_table(
            ["mode", "family", *names],
            [
                [m, result["families"][m], *(f"{arms[a]['modes'][m]['success']:.2f}" for a in names)]
                for m in result["targeted"]
            ],
        ),
        "",
        "Wasserstein distance to the ideal (no mode fails; RoboMD Fig. 8): "
        + ", ".join(f"{a} {arms[a]['wasserstein_to_ideal']:.3f}" for a in names)
        + ".",
        "",
        "## Targets",
        "",
        *(f"- {v['target']}: {v['value']:+.2f} ({'met' if v['met'] else 'missed'})" for v in comparison["verdicts"]),
    ]
    if result["skipped"]:
        lines += [
            "",
            "Skipped (the scripted expert fails there): "
            + ", ".join(f"{m} ({v['demos']} of {v['tried']} episodes)" for m, v in result["skipped"].items()),
        ]
    if "search_after" in result:
        lines += [
            "",
            "## The fine-tuned policy searched again",
            "",
            markdown_table(
                ["rank", "mode", "estimated failure rate", "ground-truth success"],
                [
                    [
                        i,
                        r["perturbation"],
                        f"{r['estimated_failure_rate']:.2f}",
                        "-" if r["ground_truth_success"] is None else f"{r['ground_truth_success']:.2f}",
                    ]
                    for i, r in enumerate(result["search_after"]["top"], start=1)
                ],
            ),
        ]
    lines += ["", f"![failure rate per mode before and after]({radar})"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    config = parse_config(ImproveConfig, argv)
    try:
        improvement = Improvement(config)
        result = improvement.run()
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    for verdict in result["comparison"]["verdicts"]:
        print(f"{verdict['target']}: {verdict['value']:+.2f} ({'met' if verdict['met'] else 'missed'})")
    print(f"improve: {improvement.out / 'improve.md'}")


if __name__ == "__main__":
    main()
