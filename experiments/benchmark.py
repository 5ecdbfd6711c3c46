"""`python -m experiments.benchmark`: the policies every method is judged on, and how graded each one is.

For every shipped checkpoint (policies/checkpoints) and each task's scripted expert, reads the ground truth made by
`python -m experiments.ground_truth task=<task> policy=<name> [kind=pairs|sweeps]` and writes
experiments/results/benchmark.md and benchmark.png:
- nominal success: the model card's measurement over 50 seeds (a scripted expert has no card: the ground truth's
  nominal row);
- how its single-perturbation success rates spread: at 0, graded in [0.15, 0.85] (where a ranking can be right or
  wrong for reasons other than luck), and at ≥ 0.9;
- which pair and sweep ground truths exist, and how many of their cases are graded.
A policy without a singles ground truth is listed with the command that makes it. Nothing here runs a rollout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from diagnosis.evaluation import ground_truth_stem, interacting, load_ground_truth, with_pairs
from envs.cli import parse_config
from envs.json_files import read_json
from envs.markdown import markdown_table
from envs.perturbations import NOMINAL
from policies.registry import shipped_checkpoints
from policies.scripted import PLANS

GRADED = (0.15, 0.85)
"""Success rates where 20 seeds tell a perturbation's failure rate apart from both 0 and 1."""
ROBUST = 0.9


@dataclass
class BenchmarkConfig:
    results: str = "experiments/results"
    """Where the ground-truth files are, and where benchmark.md and benchmark.png go."""


@dataclass(frozen=True)
class PolicyUnderTest:
    name: str
    task: str
    architecture: str
    nominal_success: float | None
    """Over 50 seeds, from the model card's measurement (None for a scripted expert)."""


@dataclass(frozen=True)
class Spread:
    """How a ground truth's success rates (the nominal row left out) are distributed."""

    cases: int
    at_zero: int
    graded: int
    robust: int

    @classmethod
    def of(cls, rates: list[float]) -> Spread:
        return cls(
            cases=len(rates),
            at_zero=sum(r == 0.0 for r in rates),
            graded=sum(GRADED[0] <= r <= GRADED[1] for r in rates),
            robust=sum(r >= ROBUST for r in rates),
        )


def policies_under_test() -> list[PolicyUnderTest]:
    scripted = [PolicyUnderTest("scripted", task, "scripted expert (privileged state)", None) for task in PLANS]
    shipped = []
    for name, folder in shipped_checkpoints().items():
        config = json.loads((folder / "config.json").read_text())
        shipped.append(
            PolicyUnderTest(
                name=name,
                task=config["task"],
                architecture=config["model"]["arch"] + augmentation_note(config),
                nominal_success=config.get("measured", {}).get("nominal_success"),
            )
        )
    return scripted + sorted(shipped, key=lambda p: (p.task, p.name))


def augmentation_note(config: dict) -> str:
    if config["model"]["arch"] == "bc_lowdim":
        return ""
    augment = config["training"]["config"].get("augment", ["crop"])
    return f" ({' + '.join(augment)})"


def success_rates(path: Path) -> dict[str, float]:
    rows = read_json(path, fix="remake it with python -m experiments.ground_truth")["perturbations"]
    return {row["perturbation"]: row["success_rate"] for row in rows}


def describe_kind(path: Path) -> str:
    if not path.is_file():
        return "—"
    rates = success_rates(path)
    rates.pop(NOMINAL, None)
    spread = Spread.of(list(rates.values()))
    return f"{spread.cases} ({spread.graded} graded)"


def describe_pairs(pairs: Path, singles: Path) -> str:
    """Pairs, graded ones and interacting ones (diagnosis.evaluation.interacting)."""
    if not pairs.is_file():
        return "—"
    truth = load_ground_truth(singles)
    count = len(interacting(with_pairs(truth)))
    return describe_kind(pairs).replace(" graded)", f" graded, {count} interacting)")


def benchmark_rows(policies: list[PolicyUnderTest], results: Path) -> tuple[list[list[object]], dict[str, list[float]]]:
    """The table's rows, and each measured policy's single-perturbation success rates (for the plot)."""
    rows, rates_by_policy = [], {}
    for policy in policies:
        stem = results / ground_truth_stem(policy.name, policy.task)
        singles = stem.with_suffix(".json")
        label = f"{policy.task}/{policy.name}"
        if not singles.is_file():
            command = f"`python -m experiments.ground_truth task={policy.task} policy={policy.name}`"
            rows.append(
                [label, policy.architecture, fmt(policy.nominal_success), f"not measured: {command}", *[""] * 6]
            )
            continue
        rates = success_rates(singles)
        nominal = rates.pop(NOMINAL, None)
        spread = Spread.of(list(rates.values()))
        rates_by_policy[label] = list(rates.values())
        rows.append(
            [
                label,
                policy.architecture,
                fmt(policy.nominal_success),
                fmt(nominal),
                spread.cases,
                f"{spread.at_zero} ({spread.at_zero / spread.cases:.0%})",
                spread.graded,
                spread.robust,
                describe_pairs(stem.with_name(f"{stem.name}_pairs.json"), singles),
                describe_kind(stem.with_name(f"{stem.name}_sweeps.json")),
            ]
        )
    return rows, rates_by_policy


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


HEADER = [
    "policy",
    "architecture (augmentation)",
    "nominal (50 seeds)",
    "nominal (ground truth, 20 seeds)",
    "singles",
    "at 0/20",
    f"graded [{GRADED[0]}, {GRADED[1]}]",
    f"≥ {ROBUST}",
    "pairs (graded, interacting)",
    "sweep points (graded)",
]


def plot_spread(rates_by_policy: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(rates_by_policy)
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(labels) + 1.2))
    ax.axvspan(*GRADED, color="tab:green", alpha=0.12, label="graded")
    for row, label in enumerate(labels):
        rates = rates_by_policy[label]
        # A small deterministic vertical spread keeps equal rates from hiding each other.
        offsets = [((i % 5) - 2) * 0.06 for i in range(len(rates))]
        ax.scatter(rates, [row + o for o in offsets], s=14, color="tab:blue", alpha=0.7)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlim(-0.03, 1.03)
    ax.set_xlabel("success rate under a single perturbation (20 seeds)")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    config = parse_config(BenchmarkConfig, argv)
    results = Path(config.results)
    results.mkdir(parents=True, exist_ok=True)
    rows, rates_by_policy = benchmark_rows(policies_under_test(), results)
    lines = [
        "# Benchmark: the policies under test",
        "",
        "Command: `python -m experiments.benchmark` (reads the ground-truth files; each policy's own command is in "
        "its ground_truth_<policy>.md and model card).",
        "",
        "Singles are the task's catalogue perturbations alone; pairs a fixed seeded sample of composed ones; sweep "
        "points seven values along each continuous parameter. A case is graded when its success rate lies in "
        f"[{GRADED[0]}, {GRADED[1]}]: only there can a ranking be judged on more than which perturbations break the "
        "policy outright. A pair is interacting when it fails significantly more often than its parts would acting "
        "independently (its failure interval lies above 1 - (1 - f_a)(1 - f_b) at the parts' upper bounds).",
        "",
        markdown_table(HEADER, rows),
        "",
        "![single-perturbation success rates per policy](benchmark.png)",
        "",
    ]
    (results / "benchmark.md").write_text("\n".join(lines))
    if rates_by_policy:
        plot_spread(rates_by_policy, results / "benchmark.png")
    print("\n".join(lines[6:-2]))
    print(f"wrote {results / 'benchmark.md'}")


if __name__ == "__main__":
    main()
