"""What a person reads after a search: radar.png and report.html, rendered from summary.json and failures.hdf5.

For each of the top failure modes the report shows a rollout under it — alone if the search ever tried it alone,
failed if any did: the first frame, the frame where things went wrong with the monitor's heatmap over it (its first
failure verdict once the robot moved, else its first anomaly, else the last frame), and a short video.
"""

from __future__ import annotations

import contextlib
import html
import json
from pathlib import Path
from typing import Any

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from diagnosis.dataset import read_rollouts  # noqa: E402
from diagnosis.pair_matrix import pair_matrix, pair_matrix_plot  # noqa: E402
from diagnosis.printout import boundary_lines, interval, monitor_lines, plain_summary  # noqa: E402
from envs.perturbations.sweeps import get_sweep  # noqa: E402
from envs.receipts import describe  # noqa: E402

VIDEO_SCALE = 4  # 84 px frames → 336 px videos (a multiple of 16, as H.264 encoders want)


PAIRS = "pairs.png"
PAIRS_SECTION = f"""<h2>Pairs</h2>
<p class="note">Composed candidates: the observed failure rate of each pair tried (off the diagonal) beside each
part's alone (on the diagonal). A dark cell in a pale row and column is an interaction, a failure neither part
causes alone.</p>
<img src="{PAIRS}">"""

RADAR_LABELS = 8
"""Spokes labelled by name on the radar (the most failure-prone by search score): at 36 or 100 spokes, labels on
every spoke overlap; the bars beside it name the top modes instead."""
BARS = 25
"""Modes listed in the bar chart beside the radar."""


def radar_plot(summary: dict[str, Any], path: Path) -> None:
    """Left: the search score per perturbation on a polar axis (RoboMD Fig. 7), with the ground truth's failure
    rate scaled onto it when known, only the top modes labelled. Right: the top modes as sorted bars of their
    observed failure rate alone with its 95% interval, ground truth beside it."""
    rows = sorted(summary["ranking"], key=lambda r: r["perturbation"])
    names = [r["perturbation"] for r in rows]
    scores = np.array([r["search_score"] for r in rows])
    angles = np.linspace(0, 2 * np.pi, len(rows), endpoint=False)
    closed = np.append(angles, angles[0])
    fig = plt.figure(figsize=(15, 7.5))
    ax = fig.add_subplot(1, 2, 1, projection="polar")
    ax.plot(
        closed, np.append(scores, scores[0]), color="tab:red", linewidth=2, label=f"search score ({summary['method']})"
    )
    ax.fill(closed, np.append(scores, scores[0]), color="tab:red", alpha=0.2)
    truth = [r.get("ground_truth_success") for r in rows]
    if all(t is not None for t in truth):
        failure = 1.0 - np.array(truth, dtype=float)
        if failure.max() > 0:
            scaled = failure * scores.max() / failure.max()
            ax.plot(
                closed, np.append(scaled, scaled[0]), "k--", linewidth=1, label="ground-truth failure rate (scaled)"
            )
    top = set(np.argsort(-scores, kind="stable")[:RADAR_LABELS])
    ax.set_xticks(angles)
    ax.set_xticklabels([names[i] if i in top else "" for i in range(len(names))], fontsize=8)
    ax.set_rlabel_position(0)
    ax.tick_params(axis="y", labelsize=6, colors="0.4")
    ax.set_title(f"search score per perturbation ({len(rows)}; top {min(RADAR_LABELS, len(rows))} named)", pad=28)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=2, fontsize=8)
    _bars(fig.add_subplot(1, 2, 2), summary["ranking"])
    fig.suptitle(
        f"{summary['policy']} on {summary['task']}: {summary['method']}, {summary['budget']['rollouts_done']} rollouts"
    )
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))  # room for the suptitle above and the legend below the radar
    fig.savefig(path, dpi=100)
    plt.close(fig)


def boundary_plot(summary: dict[str, Any], path: Path) -> None:
    """A boundary search's success curve along its parameter: the fitted curve with its 95% band, each grid point's
    observed success with its Wilson interval (dot size: rollouts there), the ground-truth sweep where known, and
    the crossing of one half with its interval."""
    boundary = summary["boundary"]
    observed = {r["perturbation"]: r for r in summary["ranking"]}
    curve = boundary["curve"]
    values = np.array([p["value"] for p in curve])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.fill_between(
        values,
        [p["success_low"] for p in curve],
        [p["success_high"] for p in curve],
        color="tab:blue",
        alpha=0.15,
        label="fitted success (95% band)",
    )
    ax.plot(values, [p["success"] for p in curve], color="tab:blue")
    tried = [(p["value"], observed[p["perturbation"]]) for p in curve if observed[p["perturbation"]]["tried_alone"]]
    if tried:
        x = np.array([v for v, _ in tried])
        rate = np.array([1.0 - r["failure_rate"] for _, r in tried])
        low = np.array([1.0 - r["failure_rate_high"] for _, r in tried])
        high = np.array([1.0 - r["failure_rate_low"] for _, r in tried])
        ax.errorbar(x, rate, yerr=[rate - low, high - rate], fmt="none", ecolor="0.5", linewidth=1, capsize=2)
        ax.scatter(
            x,
            rate,
            s=[8 + 4 * r["tried_alone"] for _, r in tried],
            color="tab:blue",
            zorder=3,
            label="observed success (size: rollouts)",
        )
    truth = [(p["value"], p["ground_truth_success"]) for p in curve if p.get("ground_truth_success") is not None]
    if truth:
        ax.plot(*zip(*truth), "kD", markersize=5, label="ground-truth sweep")
    ax.axhline(0.5, color="0.6", linestyle=":", linewidth=1)
    if boundary["verdict"].startswith("success falls"):
        ax.axvspan(boundary["crossing_low"], boundary["crossing_high"], color="tab:red", alpha=0.12)
        ax.axvline(boundary["crossing"], color="tab:red", linewidth=1.5, label="crossing of 1/2 (95% interval)")
    if all(v > 0 for v in values) and values.max() / values.min() > 10:
        ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(get_sweep(summary["config"]["search"]["family"]).label)
    ax.set_ylabel("success rate")
    ax.set_title(f"{summary['policy']} on {summary['task']}: {boundary['verdict']}", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _bars(ax: plt.Axes, ranking: list[dict[str, Any]]) -> None:
    """The top modes by estimated failure rate, top first: observed failure rate alone (95% interval), coloured by
    family, and ground truth."""
    shown = ranking[:BARS]
    y = np.arange(len(shown))[::-1]
    rates = np.array([np.nan if r.get("failure_rate") is None else r["failure_rate"] for r in shown])
    low = np.array([r.get("failure_rate_low", np.nan) for r in shown])
    high = np.array([r.get("failure_rate_high", np.nan) for r in shown])
    known = ~np.isnan(rates)
    families = [r.get("family") or "other" for r in shown]
    palette = {f: plt.get_cmap("tab20")(i % 20) for i, f in enumerate(sorted(set(families)))}
    for family, colour in palette.items():
        mine = known & np.array([f == family for f in families])
        ax.barh(y[mine], rates[mine], color=colour, alpha=0.75, label=family)
    ax.errorbar(
        rates[known],
        y[known],
        xerr=[rates[known] - low[known], high[known] - rates[known]],
        fmt="none",
        ecolor="0.2",
        capsize=2,
        linewidth=1,
    )
    truth = [r.get("ground_truth_success") for r in shown]
    if any(t is not None for t in truth):
        values = np.array([np.nan if t is None else 1.0 - t for t in truth])
        ax.plot(values, y, "kD", markersize=4, label="ground-truth failure rate")
    ax.set_yticks(y)
    ax.set_yticklabels(
        [
            f"{r['rank']}. {r['perturbation']}" + ("" if r.get("failure_rate") is not None else " (never alone)")
            for r in shown
        ],
        fontsize=8,
    )
    ax.set_xlim(0, 1)
    ax.set_xlabel("observed failure rate alone (95% interval)")
    more = len(ranking) - len(shown)
    ax.set_title(
        f"top {len(shown)} modes by estimated failure rate" + (f" ({more} more in summary.json)" if more else "")
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)


def pick_rollout(rollouts: list[dict[str, Any]], mode: str) -> dict[str, Any] | None:
    """The most telling rollout of a failure mode: alone and failed, else failed, else any that tried it."""
    preferences = (
        lambda r: r["perturbations"] == [mode] and r["failed"],
        lambda r: mode in r["perturbations"] and r["failed"],
        lambda r: mode in r["perturbations"],
    )
    for wanted in preferences:
        found = [r for r in rollouts if wanted(r)]
        if found:
            return found[0]
    return None


def heatmap_overlay(ax: plt.Axes, frame: np.ndarray, heatmap: np.ndarray | None) -> None:
    ax.imshow(frame)
    if heatmap is not None:
        h, w = frame.shape[:2]
        ax.imshow(heatmap.astype(float), cmap="jet", alpha=0.45, extent=(0, w, h, 0), interpolation="bilinear")


def shown_frame(demo: h5py.Group, monitor: dict[str, Any] | None) -> tuple[int, str]:
    """The frame that tells the story, and what it is: the monitor's first failure verdict once the robot had moved
    (detection), else its first anomaly (often frame 0 of a changed scene: prediction), else the last frame."""
    if monitor and monitor.get("first_failure_acting") is not None:
        return int(monitor["first_failure_acting"]), "first failure verdict once the robot moved"
    anomaly = demo["anomaly"][:] if "anomaly" in demo else np.array([], dtype=np.uint8)
    flagged = np.flatnonzero(anomaly)
    if len(flagged):
        return int(flagged[0]), "first anomaly"
    return len(demo["obs/agentview_image"]) - 1, "last frame"


def mode_figure(demo: h5py.Group, monitor: dict[str, Any] | None, path: Path) -> dict[str, Any]:
    """First frame | the telling frame | heatmap over it; returns what the caption needs."""
    frames = demo["obs/agentview_image"]
    index, what = shown_frame(demo, monitor)
    heatmap = demo["heatmap"][index] if "heatmap" in demo else None
    panels = 3 if heatmap is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(3 * panels, 3.2))
    axes[0].imshow(frames[0])
    axes[0].set_title("first frame", fontsize=9)
    axes[1].imshow(frames[index])
    axes[1].set_title(f"{what} (step {index})", fontsize=9)
    if heatmap is not None:
        heatmap_overlay(axes[2], frames[index], heatmap)
        axes[2].set_title("monitor heatmap", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"step": index, "what": what}


def monitor_caption(monitor: dict[str, Any] | None) -> str:
    """What the monitor saw in one rollout: prediction (before the robot moved) apart from detection."""
    if not monitor:
        return "no monitor watched"
    parts = []
    if monitor.get("first_anomaly") is None:
        parts.append("no anomaly")
    else:
        before = monitor["first_anomaly"] < monitor.get("acting_from", 0)
        parts.append(
            f"first anomaly at step {monitor['first_anomaly']}" + (" (before the robot moved)" if before else "")
        )
    acting = monitor.get("first_failure_acting")
    parts.append(
        "no failure verdict once the robot moved"
        if acting is None
        else f"first failure verdict once the robot moved (step {monitor.get('acting_from', 0)}) at step {acting}"
    )
    late = monitor.get("first_late")
    if late is not None:
        parts.append(f"overrun rule from step {late}")
    return "; ".join(parts)


def mode_monitor_cell(monitor: dict[str, Any] | None) -> str:
    """How the runtime monitor did on a mode's rollouts alone: failures caught (with the median step of its first
    failure verdict once the robot moved) and false alarms on the successes."""
    if not monitor:
        return ""
    when = monitor["median_first_failure_acting"]
    caught = f"{monitor['caught']} / {monitor['failures']}" + ("" if when is None else f" (step {when:.0f})")
    return f"{caught}, {monitor['false_alarms']} / {monitor['successes']}"


def receipts_of(demo: h5py.Group) -> list[dict[str, Any]]:
    """What each perturbation of a stored rollout changed (none for files written before receipts existed)."""
    return json.loads(demo.attrs.get("receipts", "[]"))


def write_video(frames: np.ndarray, path: Path, fps: int = 20) -> None:
    import imageio.v2 as imageio

    big = np.repeat(np.repeat(frames, VIDEO_SCALE, axis=1), VIDEO_SCALE, axis=2)
    imageio.mimwrite(path, list(big), fps=fps, codec="libx264", quality=7, macro_block_size=16)


def write_report(run_dir: Path, summary: dict[str, Any] | None = None, top_k: int = 5, videos: bool = True) -> Path:
    """Renders radar.png, media/ and report.html into `run_dir`; returns the report's path."""
    summary = summary or json.loads((run_dir / "summary.json").read_text())
    radar_plot(summary, run_dir / "radar.png")
    if "boundary" in summary:
        boundary_plot(summary, run_dir / "boundary.png")
    pairs = pair_matrix(summary["ranking"])
    if pairs is not None:
        pair_matrix_plot(pairs, run_dir / PAIRS)
    media = run_dir / "media"
    media.mkdir(exist_ok=True)
    dataset = run_dir / "failures.hdf5"
    rollouts = read_rollouts(dataset) if dataset.exists() else []
    sections = []
    with h5py.File(dataset, "r") if rollouts else contextlib.nullcontext() as file:
        for row in summary["ranking"][:top_k]:
            mode = row["perturbation"]
            chosen = pick_rollout(rollouts, mode)
            if chosen is None:
                sections.append(f"<h3>{row['rank']}. {html.escape(mode)}</h3><p>never rolled out</p>")
                continue
            demo = file["data"][chosen["demo"]]
            stem = f"{row['rank']:02d}_{mode}"
            mode_figure(demo, chosen["monitor"], media / f"{stem}.png")
            video = ""
            if videos:
                write_video(demo["obs/agentview_image"][:], media / f"{stem}.mp4")
                video = f'<video src="media/{stem}.mp4" controls loop muted width="336"></video>'
            sections.append(
                f"<h3>{row['rank']}. {html.escape(mode)} &mdash; failed {row['failed_alone']} of "
                f"{row['tried_alone']} alone{', rate ' + interval(row) if interval(row) else ''}; search score "
                f"{row['search_score']:.3f}</h3>"
                f"<p>rollout {chosen['demo']} (seed {chosen['seed']}, perturbations: "
                f"{html.escape(', '.join(chosen['perturbations']))}): <b>{chosen['outcome']}</b> after "
                f"{chosen['length']} steps; monitor: {html.escape(monitor_caption(chosen['monitor']))}</p>"
                + "".join(f"<p class=receipt>{html.escape(describe(r))}</p>" for r in receipts_of(demo))
                + f'<img src="media/{stem}.png"> {video}'
            )
    path = run_dir / "report.html"
    path.write_text(_page(summary, sections, pairs=pairs is not None, clusters=clusters_section(run_dir)))
    return path


def clusters_section(run_dir: Path) -> str:
    """The failure clusters of `run_dir`/clusters.json (python -m diagnosis.cluster) as a table and a map, or ''."""
    path = run_dir / "clusters.json"
    if not path.is_file():
        return ""
    document = json.loads(path.read_text())
    rows = "".join(
        f"<tr><td>{c['id']}</td><td>{html.escape(c['name'])}</td><td>{c['frequency']:.0%}</td><td>{c['size']}</td>"
        f"<td style='text-align:left'>{html.escape(c['description'])}</td></tr>"
        for c in document["clusters"]
    )
    return f"""<h2>Failure clusters</h2>
<p class="note">{len(document["clusters"])} clusters of {document["failures"]} failed rollouts, {document["outliers"]}
outliers ({html.escape(document["method"])}; <code>{html.escape(document["command"])}</code>).</p>
<table><tr><th>id</th><th>name</th><th>share</th><th>size</th><th>a typical reason</th></tr>{rows}</table>
<img src="clusters.png" width="800">"""


def _page(summary: dict[str, Any], sections: list[str], pairs: bool, clusters: str = "") -> str:
    metrics = summary["metrics"]
    truth = summary.get("ground_truth")
    truth_line = ""
    if truth:
        spent = truth.get("budget_on_true_top5")
        truth_line = (
            f"<p>Against ground truth ({html.escape(Path(truth['path']).name)}): significant-pair accuracy "
            f"<b>{truth['pairwise_accuracy']:.3f}</b> over {truth['significant_pairs']} of {truth['all_pairs']} pairs "
            f"(pairs whose ground-truth intervals do not overlap); over all pairs Kendall &tau;-b "
            f"{truth['kendall_tau']:.3f}, Spearman &rho; {truth['spearman_rho']:.3f}"
            + ("" if spent is None else f"; {spent:.0%} of the rollouts went to the true top 5 modes")
            + ".</p>"
        )
    monitor = "".join(f"<p>{html.escape(line)}</p>" for line in monitor_lines(summary.get("monitor")))
    boundary = "".join(f"<p><b>{html.escape(line)}</b></p>" for line in boundary_lines(summary))
    if "boundary" in summary:
        boundary += '<img src="boundary.png" width="800">'

    header = [
        "rank",
        "perturbation",
        "failure rate alone [95% CI]",
        "failed / tried alone",
        "failed / tried in any set",
        "search score (rank)",
    ]
    watched = summary.get("monitor") is not None
    if watched:
        header.append("monitor: failures caught, false alarms")
    if truth:
        header.append("ground-truth success")
    rows = []
    for r in summary["ranking"]:
        cells = [
            r["rank"],
            html.escape(r["perturbation"]),
            interval(r),
            f"{r['failed_alone']} / {r['tried_alone']}",
            f"{r['failed']} / {r['tried']}",
            f"{r['search_score']:.3f}" + (f" ({r['search_rank']})" if "search_rank" in r else ""),
        ]
        if watched:
            cells.append(mode_monitor_cell(r.get("monitor")))
        if truth:
            cells.append("" if r.get("ground_truth_success") is None else f"{r['ground_truth_success']:.2f}")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    budget = summary["budget"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>FailScope: {html.escape(summary["policy"])} on {summary["task"]}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}
td:nth-child(2){{text-align:left}}img,video{{vertical-align:top;margin:4px}}.note{{color:#555;font-size:90%}}</style>
</head><body>
<h1>Failure modes of {html.escape(summary["policy"])} on {summary["task"]}</h1>
<p>Search <b>{summary["method"]}</b>, {budget["rollouts_done"]} of {budget["total_rollouts"]} rollouts
({summary["status"]}), {summary["wall_time_s"]:.0f} s, {summary["failures_found"]} failed rollouts.</p>
<p><b>{html.escape(plain_summary(summary))}</b></p>
<p class="note">Modes are ranked by their <b>estimated failure rate</b> under the perturbation alone,
(failed + 1) / (tried + 2), whatever chose the rollouts; the <b>failure rate</b> shown is the observed one with its
95% Wilson interval. The <b>search score</b> is the method's own ranking score normalised over the modes (for PPO,
RoboMD's softmax on the nominal scene): it sums to 1 and is not a failure rate. RoboMD's metrics of the ranking (on the
search scores): entropy {metrics["entropy"]:.3f}, NFM {metrics["nfm"]} (score &gt; {metrics["nfm_threshold"]:.3f}),
FSI {metrics["fsi"]:.3f}.</p>
{truth_line}
{monitor}
{boundary}
<img src="radar.png" width="1050">
{PAIRS_SECTION if pairs else ""}
{clusters}
<h2>Top failure modes</h2>
{"".join(sections)}
<h2>Ranking</h2>
<table><tr>{"".join(f"<th>{h}</th>" for h in header)}</tr>{"".join(rows)}</table>
</body></html>
"""
