"""What a person reads after a search: radar.png and report.html, rendered from summary.json and failures.hdf5.

For each of the top failure modes the report shows a rollout under it — alone if the search ever tried it alone,
failed if any did: the first frame, the frame where things went wrong with the monitor's heatmap over it (the
first frame the monitor flagged, else the last), and a short video.
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

VIDEO_SCALE = 4  # 84 px frames → 336 px videos (a multiple of 16, as H.264 encoders want)


def radar_plot(summary: dict[str, Any], path: Path) -> None:
    """Failure probability per perturbation on a polar axis (RoboMD Fig. 7), with the ground truth's failure rate
    scaled onto the same axis when it is known."""
    rows = sorted(summary["ranking"], key=lambda r: r["perturbation"])
    names = [r["perturbation"] for r in rows]
    probs = np.array([r["probability"] for r in rows])
    angles = np.linspace(0, 2 * np.pi, len(rows), endpoint=False)
    closed = np.append(angles, angles[0])
    fig, ax = plt.subplots(figsize=(9, 9), subplot_kw={"projection": "polar"})
    ax.plot(closed, np.append(probs, probs[0]), color="tab:red", linewidth=2, label=f"search ({summary['method']})")
    ax.fill(closed, np.append(probs, probs[0]), color="tab:red", alpha=0.2)
    truth = [r.get("ground_truth_success") for r in rows]
    if all(t is not None for t in truth):
        failure_rate = 1.0 - np.array(truth, dtype=float)
        if failure_rate.max() > 0:
            scaled = failure_rate * probs.max() / failure_rate.max()
            ax.plot(closed, np.append(scaled, scaled[0]), "k--", linewidth=1, label="ground truth failure rate (scaled)")
    ax.set_xticks(angles)
    ax.set_xticklabels(names, fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"P(failure) per perturbation: {summary['policy']} on {summary['task']}", pad=30)
    ax.legend(loc="lower right", bbox_to_anchor=(1.15, -0.1), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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


def mode_figure(demo: h5py.Group, path: Path) -> dict[str, Any]:
    """First frame | failure frame | heatmap over it; returns what the caption needs."""
    frames = demo["obs/agentview_image"]
    anomaly = demo["anomaly"][:] if "anomaly" in demo else None
    flagged = np.flatnonzero(anomaly) if anomaly is not None else np.array([], dtype=int)
    index = int(flagged[0]) if len(flagged) else len(frames) - 1
    heatmap = demo["heatmap"][index] if "heatmap" in demo else None
    panels = 3 if heatmap is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(3 * panels, 3.2))
    axes[0].imshow(frames[0])
    axes[0].set_title("first frame", fontsize=9)
    axes[1].imshow(frames[index])
    axes[1].set_title(f"{'first flagged' if len(flagged) else 'last'} frame (step {index})", fontsize=9)
    if heatmap is not None:
        heatmap_overlay(axes[2], frames[index], heatmap)
        axes[2].set_title("monitor heatmap", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"step": index, "flagged": bool(len(flagged))}


def write_video(frames: np.ndarray, path: Path, fps: int = 20) -> None:
    import imageio.v2 as imageio

    big = np.repeat(np.repeat(frames, VIDEO_SCALE, axis=1), VIDEO_SCALE, axis=2)
    imageio.mimwrite(path, list(big), fps=fps, codec="libx264", quality=7, macro_block_size=16)


def write_report(run_dir: Path, summary: dict[str, Any] | None = None, top_k: int = 5, videos: bool = True) -> Path:
    """Renders radar.png, media/ and report.html into `run_dir`; returns the report's path."""
    summary = summary or json.loads((run_dir / "summary.json").read_text())
    radar_plot(summary, run_dir / "radar.png")
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
            caption = mode_figure(demo, media / f"{stem}.png")
            video = ""
            if videos:
                write_video(demo["obs/agentview_image"][:], media / f"{stem}.mp4")
                video = f'<video src="media/{stem}.mp4" controls loop muted width="336"></video>'
            sections.append(
                f"<h3>{row['rank']}. {html.escape(mode)} &mdash; P(fail) {row['probability']:.3f}</h3>"
                f"<p>rollout {chosen['demo']} (seed {chosen['seed']}, perturbations: "
                f"{html.escape(', '.join(chosen['perturbations']))}): <b>{chosen['outcome']}</b> after "
                f"{chosen['length']} steps; {'monitor flagged' if caption['flagged'] else 'showing'} step {caption['step']}</p>"
                f'<img src="media/{stem}.png"> {video}'
            )
    path = run_dir / "report.html"
    path.write_text(_page(summary, sections))
    return path


def _page(summary: dict[str, Any], sections: list[str]) -> str:
    metrics = summary["metrics"]
    truth = summary.get("ground_truth")
    truth_line = (
        f"<p>Against ground truth ({html.escape(Path(truth['path']).name)}): pairwise accuracy "
        f"<b>{truth['pairwise_accuracy']:.3f}</b> over {truth['significant_pairs']} significant pairs, "
        f"Kendall &tau; {truth['kendall_tau']:.3f}</p>" if truth else ""
    )
    header = ["rank", "perturbation", "P(fail)", "failed / tried alone", "failed / tried in any set"]
    if truth:
        header.append("ground-truth success")
    rows = []
    for r in summary["ranking"]:
        cells = [
            r["rank"], html.escape(r["perturbation"]), f"{r['probability']:.3f}",
            f"{r['failed_alone']} / {r['tried_alone']}", f"{r['failed']} / {r['tried']}",
        ]
        if truth:
            cells.append("" if r.get("ground_truth_success") is None else f"{r['ground_truth_success']:.2f}")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    budget = summary["budget"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>FailScope: {html.escape(summary['policy'])} on {summary['task']}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}
td:nth-child(2){{text-align:left}}img,video{{vertical-align:top;margin:4px}}</style></head><body>
<h1>Failure modes of {html.escape(summary['policy'])} on {summary['task']}</h1>
<p>Search <b>{summary['method']}</b>, {budget['rollouts_done']} of {budget['total_rollouts']} rollouts
({summary['status']}), {summary['wall_time_s']:.0f} s, {summary['failures_found']} failed rollouts.
Entropy {metrics['entropy']:.3f}, NFM {metrics['nfm']} (P &gt; {metrics['nfm_threshold']:.3f}), FSI {metrics['fsi']:.3f}.</p>
{truth_line}
<img src="radar.png" width="600">
<h2>Top failure modes</h2>
{''.join(sections)}
<h2>Ranking</h2>
<table><tr>{''.join(f'<th>{h}</th>' for h in header)}</tr>{''.join(rows)}</table>
</body></html>
"""
