"""What a fine-tuning repaired: ground truths of the policy before and after, side by side.

Every figure comes from plain rollouts on the ground-truth seeds (experiments.ground_truth), never from the search
that chose the modes. Modes fall in four groups: the targeted ones, the untargeted modes of the targeted families
(does the repair generalise to a neighbouring colour?), every other mode, and the nominal scene. A group's success
is pooled over its rollouts, with a 95% Wilson interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import wasserstein_distance

from diagnosis.estimation import wilson_interval
from diagnosis.evaluation import GroundTruth
from envs.perturbations import NOMINAL

GROUPS = ("targeted", "same families, not targeted", "other modes", "nominal")


@dataclass(frozen=True)
class Targets:
    """What a repair must achieve to be called one (the fine-tuning issue's targets)."""

    targeted_gain: float = 0.40
    """Mean success over the targeted modes up by at least this much."""
    nominal_drop: float = 0.05
    """Nominal success not lower by more than this."""
    control_margin: float = 0.15
    """Targeted modes at least this much better than after the control's fine-tuning."""


def groups(truth: GroundTruth, targeted: Sequence[str], families: dict[str, str]) -> dict[str, list[str]]:
    """The modes of each group (GROUPS), in the ground truth's order."""
    targeted_families = {families[m] for m in targeted}
    modes = [m for m in truth.entries if m != NOMINAL]
    return {
        "targeted": [m for m in modes if m in targeted],
        "same families, not targeted": [m for m in modes if m not in targeted and families[m] in targeted_families],
        "other modes": [m for m in modes if m not in targeted and families[m] not in targeted_families],
        "nominal": [NOMINAL] if NOMINAL in truth.entries else [],
    }


def pooled(truth: GroundTruth, modes: Sequence[str]) -> dict[str, float | int]:
    """Success over every rollout of `modes`, with its Wilson interval (None for no modes)."""
    n = sum(truth.entries[m].episodes for m in modes)
    k = round(sum(truth.entries[m].success_rate * truth.entries[m].episodes for m in modes))
    low, high = wilson_interval(k, n)
    return {"modes": len(modes), "episodes": n, "success": k / n if n else None, "low": low, "high": high}


def distance_to_ideal(truth: GroundTruth, modes: Sequence[str]) -> float:
    """RoboMD's Wasserstein distance between the policy's failure distribution over `modes` and the ideal one (no
    mode fails): the 1-Wasserstein distance between the per-mode failure rates and a point mass at zero, which is
    their mean (scipy computes it, so the figure is the standard one)."""
    return float(wasserstein_distance([truth.failure_rate(m) for m in modes], [0.0]))


def compare_truths(
    truths: dict[str, GroundTruth], targeted: Sequence[str], families: dict[str, str], targets: Targets = Targets()
) -> dict:
    """Per arm (`before` and each fine-tuning): every group's pooled success, every targeted mode's success and the
    distance to the ideal over all modes; then which targets were met."""
    before = truths["before"]
    membership = groups(before, targeted, families)
    modes = [m for m in before.entries if m != NOMINAL]
    arms = {
        arm: {
            "groups": {name: pooled(truth, members) for name, members in membership.items() if members},
            "modes": {
                m: {
                    "success": truth.entries[m].success_rate,
                    "low": truth.entries[m].low,
                    "high": truth.entries[m].high,
                }
                for m in targeted
            },
            "wasserstein_to_ideal": distance_to_ideal(truth, modes),
            "ground_truth": str(truth.path),
        }
        for arm, truth in truths.items()
    }
    return {"groups": membership, "arms": arms, "verdicts": verdicts(arms, targets)}


def verdicts(arms: dict, targets: Targets) -> list[dict]:
    """Each target as met or missed, with the figures it was judged on."""

    def success(arm: str, group: str) -> float:
        return arms[arm]["groups"][group]["success"]

    found = []
    if "targeted" in arms:
        gain = success("targeted", "targeted") - success("before", "targeted")
        found.append(
            {
                "target": f"targeted modes up by >= {targets.targeted_gain:.2f}",
                "value": gain,
                "met": gain >= targets.targeted_gain,
            }
        )
        if "nominal" in arms["before"]["groups"]:
            change = success("targeted", "nominal") - success("before", "nominal")
            found.append(
                {
                    "target": f"nominal success changes by >= -{targets.nominal_drop:.2f}",
                    "value": change,
                    "met": change >= -targets.nominal_drop,
                }
            )
    if "targeted" in arms and "control" in arms:
        margin = success("targeted", "targeted") - success("control", "targeted")
        found.append(
            {
                "target": f"targeted modes >= {targets.control_margin:.2f} better than the control",
                "value": margin,
                "met": margin >= targets.control_margin,
            }
        )
    return found


def before_after_radar(truths: dict[str, GroundTruth], targeted: Sequence[str], path: Path) -> None:
    """Failure rate per mode on a polar axis for each arm (RoboMD Fig. 8), the ideal (no failure) at the centre;
    targeted modes are named in bold."""
    modes = sorted(m for m in truths["before"].entries if m != NOMINAL)
    angles = np.linspace(0, 2 * np.pi, len(modes), endpoint=False)
    closed = np.append(angles, angles[0])
    fig = plt.figure(figsize=(9, 9))
    ax = fig.add_subplot(projection="polar")
    styles = {"before": ("tab:red", "-"), "targeted": ("tab:green", "-"), "control": ("tab:blue", "--")}
    for arm, truth in truths.items():
        rates = np.array([truth.failure_rate(m) for m in modes])
        colour, line = styles.get(arm, ("0.4", ":"))
        ax.plot(closed, np.append(rates, rates[0]), color=colour, linestyle=line, linewidth=2, label=arm)
        ax.fill(closed, np.append(rates, rates[0]), color=colour, alpha=0.08)
    ax.set_xticks(angles)
    ax.set_xticklabels(modes, fontsize=7)
    for label, mode in zip(ax.get_xticklabels(), modes):
        if mode in targeted:
            label.set_fontweight("bold")
    ax.set_ylim(0, 1)
    ax.set_title("failure rate per mode (ground truth); targeted modes in bold", pad=30)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=len(truths))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
