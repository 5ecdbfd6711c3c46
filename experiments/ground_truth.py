"""`python -m experiments.ground_truth task=lift policy=lift_bc_image episodes=20`: success rate under every
perturbation.

Plain rollouts, nothing learned, every case on the same seeds 0..episodes-1 (searches use other seeds). `kind`:
- `singles` (default): the nominal scene and every perturbation of the task alone →
  experiments/results/ground_truth_<policy>.json and .md, which every ranking FailScope produces is judged against;
- `pairs`: a seeded sample of `pairs` compatible pairs of catalogue perturbations (composed failures) →
  ground_truth_<policy>_pairs.json;
- `sweeps`: seven points along each parameter of envs/perturbations/sweeps.py (failure boundaries) →
  ground_truth_<policy>_sweeps.json.
Each rollout is a unit of work for the backend (`workers` processes, or Ray actors with `backend=ray`; each worker
opens its own renderer and loads the policy once); every finished rollout is kept in a partial file, so an
interrupted or killed run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from diagnosis.estimation import wilson_interval
from diagnosis.evaluation import ground_truth_stem
from envs.backends import RolloutSettings, UnitFailed, failure_message
from envs.choices import check_choice
from envs.cli import parse_config
from envs.markdown import markdown_table
from envs.perturbations import NOMINAL, Perturbation, get_perturbations, task_perturbations
from envs.perturbations.composed import sampled_pairs
from envs.perturbations.sweeps import sweep_points
from envs.receipts import check_effects
from envs.rollout import rollout
from envs.tasks import TaskSpec
from policies.registry import load_policy


@dataclass
class GroundTruthConfig(RolloutSettings):
    task: str = "lift"
    policy: str = "lift_bc_image"
    episodes: int = 20
    out: str = "experiments/results"
    perturbation_file: str = ""
    """User-defined perturbations evaluated after the catalogue (YAML, envs/perturbations/user.py)."""
    perturbations: str = ""
    """kind=singles: only these (comma-separated names, `nominal` included); empty = nominal and every one."""
    kind: str = "singles"
    """singles, pairs or sweeps (see the module docstring)."""
    pairs: int = 100
    """kind=pairs: how many pairs to sample."""
    pair_seed: int = 0
    """kind=pairs: the sample's seed (fixed, so every policy is judged on the same pairs)."""


KINDS = ("singles", "pairs", "sweeps")


@dataclass(frozen=True)
class Case:
    """One row of a ground truth: perturbations applied together (none: the nominal scene)."""

    name: str
    description: str
    family: str
    perturbations: tuple[Perturbation, ...]
    extra: tuple[tuple[str, object], ...] = ()
    """Further columns of the row (a sweep's parameter and value, a pair's parts)."""


def single_cases(catalogue: dict[str, Perturbation], names: list[str]) -> list[Case]:
    return [
        Case(NOMINAL, "no perturbation", NOMINAL, ())
        if n == NOMINAL
        else Case(n, catalogue[n].description, catalogue[n].family, (catalogue[n],))
        for n in names
    ]


def pair_cases(catalogue: dict[str, Perturbation], count: int, seed: int) -> list[Case]:
    """A seeded sample of `count` composable pairs (envs.perturbations.composed.sampled_pairs), each part applied as
    a perturbation of its own."""
    return [
        Case(
            name=pair.name,
            description=pair.description,
            family="+".join(p.family for p in pair.parts),
            perturbations=pair.parts,
            extra=(("parts", [p.name for p in pair.parts]),),
        )
        for pair in sampled_pairs(catalogue, count, seed)
    ]


def sweep_cases(spec: TaskSpec, catalogue: dict[str, Perturbation]) -> list[Case]:
    return [
        Case(p.name, p.description, p.family, (p,), (("parameter", sweep.field), ("value", value)))
        for sweep, value, p in sweep_points(spec, catalogue)
    ]


@dataclass(frozen=True)
class RolloutUnit:
    """One rollout of a ground truth: what a worker needs to run it, whichever worker it is."""

    policy: str
    task: str
    case: Case
    seed: int


_POLICIES: dict[tuple[str, str], tuple] = {}
"""This worker's policies, loaded on first use."""


def run_unit(unit: RolloutUnit) -> bool:
    """Whether the policy succeeds in the unit's rollout."""
    key = (unit.policy, unit.task)
    if key not in _POLICIES:
        _POLICIES[key] = load_policy(unit.policy, unit.task)
    policy, spec = _POLICIES[key]
    return rollout(spec, policy, list(unit.case.perturbations), seed=unit.seed).success


def entry(name: str, description: str, family: str, successes: list[bool]) -> dict:
    n, k = len(successes), int(sum(successes))
    low, high = wilson_interval(k, n)
    return {
        "perturbation": name,
        "family": family,
        "description": description,
        "episodes": n,
        "successes": k,
        "success_rate": k / n,
        "wilson95": [round(low, 4), round(high, 4)],
        "seeds": [0, n - 1],
        "outcomes": [int(s) for s in successes],
    }


def plan(config: GroundTruthConfig, spec: TaskSpec, catalogue: dict[str, Perturbation]) -> tuple[list[Case], Path]:
    """The cases to evaluate and the file stem they go to."""
    stem = Path(config.out) / ground_truth_stem(config.policy, spec.name)
    if config.kind == "pairs":
        return pair_cases(catalogue, config.pairs, config.pair_seed), stem.with_name(f"{stem.name}_pairs")
    if config.kind == "sweeps":
        return sweep_cases(spec, catalogue), stem.with_name(f"{stem.name}_sweeps")
    if not config.perturbations:
        return single_cases(catalogue, [NOMINAL, *catalogue]), stem
    names = [n.strip() for n in config.perturbations.split(",") if n.strip()]
    get_perturbations(spec, [n for n in names if n != NOMINAL], config.perturbation_file)
    # A subset gets its own file: it must never replace the full ground truth the experiments read.
    digest = hashlib.sha1(",".join(names).encode()).hexdigest()[:8]
    return single_cases(catalogue, names), stem.with_name(f"{stem.name}_subset_{digest}")


def load_partial(path: Path) -> dict[str, dict[str, bool]]:
    """The rollouts a stopped run finished: case name → seed (as text) → success."""
    if not path.exists():
        return {}
    kept = json.loads(path.read_text())
    # A file of whole cases (rows with `outcomes`) is read as the rollouts they hold.
    return {
        name: {str(seed): bool(s) for seed, s in enumerate(value["outcomes"])} if "outcomes" in value else value
        for name, value in kept.items()
    }


def main(argv: list[str] | None = None) -> None:
    lines, rows = evaluate(parse_config(GroundTruthConfig, argv))
    print("\n".join(lines[4:]))
    print(f"perturbations_below_50pct: {sum(r['success_rate'] < 0.5 for r in rows)}")


def evaluate(config: GroundTruthConfig) -> tuple[list[str], list[dict]]:
    """Runs (or resumes) the ground truth `config` asks for and writes its .json and .md; returns the .md's lines
    and the rows. A bad configuration or failed rollouts exit with a one-line error."""
    try:
        check_choice(config.kind, KINDS, "kind")
        config.check()
        _, spec = load_policy(config.policy, config.task)
        catalogue = task_perturbations(spec, config.perturbation_file)
        cases, stem = plan(config, spec, catalogue)
        check_effects(spec, list(dict.fromkeys(p for case in cases for p in case.perturbations)))
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    names = [case.name for case in cases]
    partial_path = stem.with_suffix(".partial.json")
    outcomes = load_partial(partial_path)
    units = [
        RolloutUnit(config.policy, spec.name, case, seed)
        for case in cases
        for seed in range(config.episodes)
        if str(seed) not in outcomes.get(case.name, {})
    ]
    started = time.perf_counter()
    failed: list[UnitFailed] = []
    partial_path.parent.mkdir(parents=True, exist_ok=True)
    with config.open_backend() as backend:
        bar = tqdm(total=len(cases) * config.episodes, initial=len(cases) * config.episodes - len(units))
        bar.set_description("ground truth (rollouts)")
        for unit, result in backend.map(run_unit, units):
            if isinstance(result, UnitFailed):
                failed.append(result)
                continue
            outcomes.setdefault(unit.case.name, {})[str(unit.seed)] = bool(result)
            partial_path.write_text(json.dumps(outcomes))
            bar.update()
        bar.close()
    if failed:
        raise SystemExit(
            f"error: {failure_message(failed)}; the other rollouts are kept in {partial_path}: rerun the same command "
            "to retry these"
        )
    by_name = {case.name: case for case in cases}
    done = {
        n: {
            **entry(
                n, by_name[n].description, by_name[n].family, [outcomes[n][str(s)] for s in range(config.episodes)]
            ),
            **dict(by_name[n].extra),
        }
        for n in names
    }
    rows = [done[n] for n in names]
    result = {
        "task": spec.name,
        "policy": config.policy,
        "episodes": config.episodes,
        "command": (
            f"python -m experiments.ground_truth task={spec.name} policy={config.policy} episodes={config.episodes}"
            + (f" perturbation_file={config.perturbation_file}" if config.perturbation_file else "")
            + (f" perturbations={config.perturbations}" if config.perturbations else "")
            + (f" kind={config.kind}" if config.kind != "singles" else "")
            + (f" pairs={config.pairs} pair_seed={config.pair_seed}" if config.kind == "pairs" else "")
        ),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "perturbations": rows,
    }
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    partial_path.unlink(missing_ok=True)
    lines = [
        f"# Ground truth: {config.policy} on {spec.name}",
        "",
        f"Command: `{result['command']}` (seeds 0..{config.episodes - 1} for every row)",
        "",
        markdown_table(
            ["perturbation", "family", "success", "95% Wilson", "description"],
            [
                [
                    r["perturbation"],
                    r["family"],
                    f"{r['successes']}/{r['episodes']}",
                    f"[{r['wilson95'][0]:.2f}, {r['wilson95'][1]:.2f}]",
                    r["description"],
                ]
                for r in sorted(rows, key=lambda r: r["success_rate"])
            ],
        ),
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return lines, rows


if __name__ == "__main__":
    main()
