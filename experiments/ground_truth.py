"""`python -m experiments.ground_truth task=lift policy=lift_bc_image episodes=20`: success rate under every
perturbation.

Plain rollouts, nothing learned: every perturbation of the task (and the nominal scene) is evaluated on the same
seeds 0..episodes-1. Writes experiments/results/ground_truth_<policy>.json and .md. Every ranking FailScope
produces is judged against this file. Work is spread over `workers` processes (each opens its own renderer);
finished perturbations are kept in a partial file, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from diagnosis.estimation import wilson_interval
from envs.cli import parse_config
from envs.markdown import markdown_table
from envs.perturbations import Perturbation, get_perturbations, task_perturbations
from envs.receipts import check_effects
from envs.rollout import rollout
from policies.registry import load_policy

NOMINAL = "nominal"


@dataclass
class GroundTruthConfig:
    task: str = "lift"
    policy: str = "lift_bc_image"
    episodes: int = 20
    workers: int = 2
    """Processes (one per core is best: each renders on the CPU)."""
    out: str = "experiments/results"
    perturbation_file: str = ""
    """User-defined perturbations evaluated after the catalogue (YAML, envs/perturbations/user.py)."""
    perturbations: str = ""
    """Only these (comma-separated names, `nominal` included); empty = nominal and every perturbation."""


def _evaluate(args: tuple[str, str, str, Perturbation | None, int]) -> tuple[str, list[bool], list[int]]:
    policy_name, task, name, perturbation, episodes = args
    policy, spec = load_policy(policy_name, task)
    chosen = [] if perturbation is None else [perturbation]
    results = [rollout(spec, policy, chosen, seed=seed) for seed in range(episodes)]
    return name, [e.success for e in results], [e.length for e in results]


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


def main(argv: list[str] | None = None) -> None:
    config = parse_config(GroundTruthConfig, argv)
    try:
        _, spec = load_policy(config.policy, config.task)
        perturbations = task_perturbations(spec, config.perturbation_file)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    names = [NOMINAL, *perturbations]
    stem = Path(config.out) / f"ground_truth_{Path(config.policy).name}"
    if config.perturbations:
        names = [n.strip() for n in config.perturbations.split(",") if n.strip()]
        try:
            get_perturbations(spec, [n for n in names if n != NOMINAL], config.perturbation_file)
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from None
        # A subset gets its own file: it must never replace the full ground truth the experiments read.
        stem = stem.with_name(f"{stem.name}_subset_{hashlib.sha1(','.join(names).encode()).hexdigest()[:8]}")
    try:
        check_effects(spec, [perturbations[n] for n in names if n != NOMINAL])
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    partial_path = stem.with_suffix(".partial.json")
    done: dict[str, dict] = json.loads(partial_path.read_text()) if partial_path.exists() else {}
    todo = [n for n in names if n not in done]
    started = time.perf_counter()
    context = get_context("spawn")  # renderers must be created inside each worker
    with ProcessPoolExecutor(config.workers, mp_context=context) as pool:
        jobs = pool.map(_evaluate, [(config.policy, spec.name, n, perturbations.get(n), config.episodes) for n in todo])
        for name, successes, _ in tqdm(jobs, total=len(todo), initial=0, desc="ground truth", unit="perturbation"):
            p = perturbations.get(name)
            done[name] = entry(name, p.description if p else "no perturbation", p.family if p else NOMINAL, successes)
            partial_path.parent.mkdir(parents=True, exist_ok=True)
            partial_path.write_text(json.dumps(done))
    rows = [done[n] for n in names]
    result = {
        "task": spec.name,
        "policy": config.policy,
        "episodes": config.episodes,
        "command": (
            f"python -m experiments.ground_truth task={spec.name} policy={config.policy} episodes={config.episodes}"
            + (f" perturbation_file={config.perturbation_file}" if config.perturbation_file else "")
            + (f" perturbations={config.perturbations}" if config.perturbations else "")
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
    below = sum(r["success_rate"] < 0.5 for r in rows)
    print("\n".join(lines[4:]))
    print(f"perturbations_below_50pct: {below}")


if __name__ == "__main__":
    main()
