"""The ranking as a person reads it first: the table, RoboMD's metrics of the ranking, the monitor's agreement with
the simulator (with and without the overrun rule, prediction apart from detection) and the ground-truth comparison.
Shared by the search's printout and its report."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

TOP_K = 5
"""How many of the truly worst modes the budget-share figure counts."""


def interval(row: dict[str, Any]) -> str:
    """`0.95 [0.75, 0.99]`: a row's observed failure rate alone with its 95% Wilson interval ('' if never alone)."""
    if row.get("failure_rate") is None:
        return ""
    return f"{row['failure_rate']:.2f} [{row['failure_rate_low']:.2f}, {row['failure_rate_high']:.2f}]"


def print_ranking(summary: dict[str, Any], console: Console, limit: int = 15) -> None:
    """The ranking table a user reads first, then the metrics, one per line."""
    rollouts = summary["budget"]["rollouts_done"]
    title = f"failure modes of {summary['policy']} on {summary['task']} ({summary['method']}, {rollouts} rollouts)"
    table = Table(
        title=title,
        caption="ranked by the estimated failure rate under the perturbation alone, (failed + 1) / (tried + 2); "
        "failure rate: observed, 95% Wilson interval; search score: the method's own ranking score, normalised "
        "over the modes (its rank in brackets)",
    )
    columns = (
        "rank",
        "perturbation",
        "failure rate [95% CI]",
        "failed/tried alone",
        "search score",
        "ground truth success",
    )
    for column in columns:
        wide = column == "perturbation"  # composed names (a+b) are long: folded, not cut
        table.add_column(column, justify="left" if wide else "right", overflow="fold" if wide else "ellipsis")
    for row in summary["ranking"][:limit]:
        truth = row.get("ground_truth_success")
        table.add_row(
            str(row["rank"]),
            row["perturbation"],
            interval(row),
            f"{row['failed_alone']}/{row['tried_alone']}",
            f"{row['search_score']:.3f}" + (f" ({row['search_rank']})" if "search_rank" in row else ""),
            "" if truth is None else f"{truth:.2f}",
        )
    console.print(table)
    console.print(plain_summary(summary))
    if len(summary["ranking"]) > limit:
        console.print(f"... {len(summary['ranking']) - limit} more in summary.json")
    budget = summary["budget"]
    if budget.get("settled_at") is not None:
        console.print(
            f"{budget['settled']} after {budget['settled_at']} rollouts: "
            f"{budget['total_rollouts'] - budget['settled_at']} of the {budget['total_rollouts']}-rollout budget saved"
        )
    for line in boundary_lines(summary):
        console.print(line)
    metrics = summary["metrics"]
    console.print(
        f"RoboMD's metrics of the ranking (on the search scores): entropy {metrics['entropy']:.3f}  "
        f"NFM {metrics['nfm']}  FSI {metrics['fsi']:.3f}"
    )
    for line in monitor_lines(summary.get("monitor")):
        console.print(line)
    if summary["ground_truth"]:
        truth = summary["ground_truth"]
        spent = truth.get(f"budget_on_true_top{TOP_K}")  # a continuous search spends no rollouts of its own
        console.print(
            f"vs ground truth: significant-pair accuracy {truth['pairwise_accuracy']:.3f} over "
            f"{truth['significant_pairs']} of {truth['all_pairs']} pairs; all pairs: Kendall tau-b "
            f"{truth['kendall_tau']:.3f}, Spearman rho {truth['spearman_rho']:.3f}"
            + ("" if spent is None else f"; {spent:.0%} of rollouts on the true top {TOP_K}")
            + (
                f"; observed failure rates off by {truth['rate_mae']:.3f} on average, true rate inside the 95% "
                f"interval for {truth['interval_coverage']:.0%} of {truth['rated']} modes"
                if truth.get("rated")
                else ""
            )
        )


def monitor_lines(agreement: dict[str, Any] | None) -> list[str]:
    """The monitor's agreement with the simulator, with and without the overrun rule, and prediction apart from
    detection (shared by the printout and the report)."""
    if not agreement:
        return []
    without = agreement["without_overrun"]
    caught = agreement["true_positive"]
    lines = [
        f"monitor vs simulator: caught {caught}/{agreement['sim_failures']} failed rollouts (TPR "
        f"{agreement['tpr']:.2f}; without the overrun rule {without['true_positive']}, TPR {without['tpr']:.2f}), "
        f"quiet on {agreement['true_negative']}/{agreement['sim_successes']} successful ones (TNR "
        f"{agreement['tnr']:.2f}; without the rule {without['tnr']:.2f})"
    ]
    if caught:

        def frame(key: str) -> str:
            return "-" if agreement.get(key) is None else f"{agreement[key]:.0f}"

        lines.append(
            f"failure prediction vs detection: {agreement['predicted']} of the {caught} caught failures were flagged "
            f"before the robot moved (from the scene alone); median first anomaly at frame "
            f"{frame('median_first_anomaly')}, median first failure verdict once the robot moved at frame "
            f"{frame('median_first_failure_acting')}"
        )
    return lines


def boundary_lines(summary: dict[str, Any]) -> list[str]:
    """A boundary search's verdict: where success crosses one half, with its interval, and the curve's error."""
    boundary = summary.get("boundary")
    if not boundary:
        return []
    search = summary["config"]["search"]
    lines = [
        f"boundary of {search['family']}: {boundary['verdict']}; success crosses 1/2 at {boundary['crossing']:.3g} "
        f"(95% interval {boundary['crossing_low']:.3g} to {boundary['crossing_high']:.3g}; P(beyond the grid) "
        f"{boundary['p_beyond']:.2f}, P(before it) {boundary['p_before']:.2f})"
    ]
    if boundary.get("curve_error") is not None:
        lines.append(
            f"fitted success curve vs ground truth: mean absolute error {boundary['curve_error']:.3f} over "
            f"{boundary['curve_error_points']} sweep points"
        )
    return lines


def plain_summary(summary: dict[str, Any]) -> str:
    """What the search found, in one paragraph: how many modes fail more often than not, by family, how many are
    robust and how many are still uncertain, each at 95% confidence (the failure rates' Wilson intervals)."""
    rows = summary["ranking"]
    tried = [r for r in rows if r["tried_alone"]]
    failing = [r for r in tried if r["failure_rate_low"] > 0.5]
    robust = [r for r in tried if r["failure_rate_high"] < 0.2]
    by_family: dict[str, int] = {}
    for r in failing:
        family = r.get("family") or "other"
        by_family[family] = by_family.get(family, 0) + 1
    families = ", ".join(f"{family} ({count})" for family, count in sorted(by_family.items(), key=lambda x: -x[1]))
    text = (
        f"Of {len(rows)} perturbations, {len(failing)} make {summary['policy']} fail more often than not "
        f"(95% interval of the failure rate above 0.5)" + (f": {families}" if failing else "") + f"; {len(robust)} "
        f"leave it failing less than 20% of the time (interval below 0.2); {len(tried) - len(failing) - len(robust)} "
        f"are not yet settled either way at {summary['budget']['rollouts_done']} rollouts"
    )
    never = len(rows) - len(tried)
    return text + (f", and {never} were never tried alone." if never else ".")
