"""FIDeL as a runtime monitor: fit on nominal camera streams, then `reset()` / `step(frame)` inside every rollout.

Per frame: patch features (encoders.py) → OT match against the memory of nominal episodes (memory.py, ot.py) →
score, t_min and heatmap → a conformal threshold (conformal.py) decides whether the frame is anomalous → an optional
semantic filter decides whether the anomaly is a task failure. A frame later than the end of every calibration
episode is a failure whatever it shows (FidelConfig.overrun). A fitted monitor saves to a folder of JSON and
safetensors (no pickle) and refuses to load for another task or an encoder whose output has changed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from envs.choices import check_choice
from monitor.base import MonitorOutput, SemanticFilter, judge_frame
from monitor.config_dicts import config_from_dict
from monitor.conformal import ConformalBand, GaussianBand, Scores, overrun_step, split_episodes
from monitor.encoders import EncoderConfig, PatchEncoder
from monitor.memory import Memory, MemoryConfig
from monitor.ot import FRAME_SCORES, HEATMAPS, TIME_ANCHORS, OTConfig, OTScorer, PatchCost, prior_potentials

THRESHOLDS = ("time_space", "time", "gaussian")
FORMAT_VERSION = 3
"""2: scoring options (frame_score, heatmap, time prior, OT position_weight) in the config; 3: the overrun step."""
TORCH_THREADS = 1
"""torch intra-op threads while the monitor works. Its tensors are small: on an idle machine a second thread saves
about a millisecond (`python -m monitor.bench`, experiments/results/monitor_bench.md), but inside the search every
core already runs a rollout worker, and threads that wait for a busy core cost far more than they save. The
caller's setting is restored after each call."""


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Runs the block with `threads` torch intra-op threads (None: unchanged), then restores the previous count."""
    previous = torch.get_num_threads()
    if threads is not None and threads != previous:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


@dataclass(frozen=True)
class FidelConfig:
    """Everything that shapes a fitted FIDeL monitor (and keys its cache)."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """Frozen vision backbone and patch grid."""
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    """Memory length and σ floor."""
    ot: OTConfig = field(default_factory=OTConfig)
    """Entropic OT settings."""
    window: int | None = 4
    """Online search: memory steps either side of the previous t_min (None = all steps every frame)."""
    lag: int | None = None
    """Online search: memory steps before the previous t_min (None = `window`). lag=1 (t_min nearly monotone)
    did not change the filter-split AUROC, so off."""
    # Scoring. FIDeL as published is frame_score="transport", heatmap="min", time_weight=0 (and OTConfig
    # position_weight=0). Every default below was chosen on the SimFails-lift filter split only, each option alone
    # and in combination: experiments/results/fidel_variants_lift.md (experiments/fidel_variants.py), where the
    # published scoring is the first row.
    frame_score: str = "heatmap"
    """Frame score: "transport" (FIDeL's transport cost at t_min, the mean over the 49 patches, which dilutes a change
    of one or two patches: a cube), "heatmap" (mean of the heatmap's `top_k` largest patches: a small change
    stays visible) or "band" (the CP-time&space band's normalised deviation, which scores lower: the calibration
    episodes are too few for per-patch, per-step normalisation)."""
    top_k: int = 3
    """frame_score="heatmap": how many of the largest heatmap patches are averaged (1 to 5 score alike; 3 tolerates
    one noisy patch)."""
    heatmap: str = "transport"
    """Per query patch: its cheapest memory patch at t_min ("min", FIDeL's) or its transported cost under the plan at
    t_min ("transport": what the patch actually pays, so the heatmap's mean is the transport cost; it scores
    higher)."""
    time_weight: float = 1.0
    """γ of the temporal prior: t_min minimises transport cost + γ·|t − k|/T at the episode's k-th frame (the memory
    has T = the median nominal length, so a nominal frame k sits near step k). Without it, late frames of a failing
    episode match an earlier phase and look nominal. γ = 1: larger values gain nothing overall and lose AUROC on
    the nominal episodes."""
    time_score_weight: float = 0.0
    """γ': the frame score adds γ'·|t_min − k|/T (the temporal mismatch as evidence itself). Its gain is within
    noise, so off."""
    time_anchor: str = "clock"
    """What k the temporal prior pulls t_min towards: the frame's index ("clock") or the previous t_min + 1
    ("progress", tolerant of executions slower or faster than the demonstrations)."""
    thresholding: str = "time_space"
    """Which band decides `is_anomaly`: time_space (CP-time&space), time (CP-time) or gaussian (baseline)."""
    alpha: float = 0.1
    """Conformal bands: at most this share of nominal episodes raises any alarm."""
    patch_fraction: float = 0.0
    """CP-time&space: a frame is anomalous when more than this share of the (masked) patches exceed their bounds.
    0 (any patch): a Lift cube covers one or two of 49 patches, and since the band is calibrated on the statistic
    this rule uses, ignoring a few patches is not needed to keep false alarms at α; it only costs sensitivity."""
    patch_mask: tuple[bool, ...] | None = None
    """CP-time&space: which of the P patches count (row-major over the grid); None = all."""
    memory_fraction: float = 0.4
    """Share of the nominal episodes that build the memory (Y); the rest calibrate, split evenly into E_A and E_B."""
    modulation_floor: float = 0.3
    """Band modulation ρ is at least this fraction of its mean: where the calibration episodes barely vary, a tiny ρ
    would turn noise into the largest normalised deviation and widen the whole band through h."""
    band_radius: int = 1
    """Frames within this many memory steps of t also inform μ(t) and ρ(t): t_min spreads the calibration frames
    unevenly, and a timestep seen by a few frames only gets a too-small ρ (same effect as above)."""
    overrun: bool = True
    """Frames after the end of the longest calibration episode are anomalies and failures, with no semantic filter
    asked (conformal.overrun_step; adds at most 1/(n+1) to the nominal false-alarm rate, n = calibration episodes).
    The OT score cannot see a stuck policy: hovering over the cube matches the grasp phase. Recall with and without
    the rule: experiments/results/default_search_lift.md and experiments/results/monitor_lift.md."""
    gaussian_z: float = 3.0
    """Gaussian baseline: threshold = mean + z·std of the calibration scores at t."""
    split_seed: int = 0
    """Seed of the random Y / E_A / E_B split."""

    def __post_init__(self) -> None:
        check_choice(self.thresholding, THRESHOLDS, "thresholding")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if self.window is not None and self.window < 0:
            raise ValueError(f"window must be >= 0 or None, got {self.window!r}")
        if self.lag is not None and self.lag < 0:
            raise ValueError(f"lag must be >= 0 or None, got {self.lag!r}")
        check_choice(self.frame_score, FRAME_SCORES, "frame_score")
        check_choice(self.heatmap, HEATMAPS, "heatmap")
        check_choice(self.time_anchor, TIME_ANCHORS, "time_anchor")
        if not 1 <= self.top_k <= self.encoder.grid**2:
            raise ValueError(f"top_k must be in [1, grid²={self.encoder.grid**2}], got {self.top_k!r}")
        if not self.time_weight >= 0:
            raise ValueError(f"time_weight must be >= 0, got {self.time_weight!r}")
        if not self.time_score_weight >= 0:
            raise ValueError(f"time_score_weight must be >= 0, got {self.time_score_weight!r}")
        if self.band_radius < 0:
            raise ValueError(f"band_radius must be >= 0, got {self.band_radius!r}")
        patches = self.encoder.grid**2
        if self.patch_mask is not None and (len(self.patch_mask) != patches or not any(self.patch_mask)):
            raise ValueError(
                f"patch_mask must have {patches} entries (grid²), at least one True; got {self.patch_mask}"
            )

    def scorer_options(self) -> dict:
        """The OTScorer keyword arguments this config sets."""
        return dict(
            frame_score=self.frame_score,
            top_k=self.top_k,
            heatmap=self.heatmap,
            time_weight=self.time_weight,
            lag=self.lag,
            time_score_weight=self.time_score_weight,
            time_anchor=self.time_anchor,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FidelConfig:
        return config_from_dict(cls, data)


class FidelMonitor:
    """A fitted FIDeL monitor for one task's camera. Build it with `fit`, `load` or `monitor.build.build_monitor`."""

    def __init__(
        self,
        *,
        task: str,
        instruction: str,
        config: FidelConfig,
        encoder: PatchEncoder,
        memory: Memory,
        prior: torch.Tensor,
        bands: dict[str, ConformalBand | GaussianBand],
        fingerprint: torch.Tensor,
        overrun_step: int | None = None,
        semantic_filter: SemanticFilter | None = None,
    ):
        self.task, self.instruction, self.config = task, instruction, config
        self.encoder, self.memory, self.prior, self.bands, self.fingerprint = encoder, memory, prior, bands, fingerprint
        self.overrun_step = overrun_step
        """Frame index from which the episode is late (None: no such rule); see FidelConfig.overrun."""
        self.frame_index = 0
        """Index in the current episode of the next frame `step` reads."""
        self.failed_by_look = False
        self.semantic_filter = semantic_filter
        """Called on anomalous frames to decide `is_failure`; None = every anomaly is a failure."""
        self.torch_threads: int | None = TORCH_THREADS
        """torch threads during `step()` (None: the caller's setting)."""
        self.frame_shape = tuple(memory.reference_frames.shape[1:])
        cost = PatchCost(memory.mean, memory.std, config.ot.position_weight)
        self.scorer = OTScorer(cost, config.ot, prior, window=config.window, **config.scorer_options())
        if config.frame_score == "band":
            self.scorer.normaliser = bands["time_space"]

    # -- fitting ---------------------------------------------------------------------------------------------------

    @classmethod
    @torch_threads(TORCH_THREADS)
    def fit(
        cls,
        task: str,
        nominal_episodes: Sequence[np.ndarray],
        config: FidelConfig = FidelConfig(),
        semantic_filter: SemanticFilter | None = None,
    ) -> FidelMonitor:
        """Fits on nominal camera streams, each (T_i, H, W, 3) uint8, e.g. `Episode.frames` of successful rollouts."""
        from envs.tasks import get_task

        instruction = get_task(task).instruction
        shapes = {tuple(e.shape[1:]) for e in nominal_episodes}
        for e in nominal_episodes:
            if e.ndim != 4 or e.shape[-1] != 3 or e.dtype != np.uint8 or len(e) == 0:
                raise ValueError(
                    f"each nominal episode must be uint8 (T, H, W, 3) with T >= 1, got {e.dtype} {e.shape}"
                )
        if len(shapes) > 1:
            raise ValueError(f"nominal episodes have different frame shapes: {sorted(shapes)}")
        split = split_episodes(len(nominal_episodes), config.alpha, config.memory_fraction, config.split_seed)
        encoder = PatchEncoder(config.encoder)
        features = [_finite(encoder.encode(e), "nominal frames") for e in nominal_episodes]
        memory = Memory.fit(
            [features[i] for i in split.memory], [nominal_episodes[i] for i in split.memory], config.memory
        )
        cost = PatchCost(memory.mean, memory.std, config.ot.position_weight)
        prior = prior_potentials(cost, memory.mean, config.ot)
        scorer = OTScorer(cost, config.ot, prior, window=config.window, **config.scorer_options())
        replays = {i: _replay(scorer, features[i]) for i in split.centre + split.width}

        def scores(indices: tuple[int, ...], values: str) -> list[Scores]:
            return [(replays[i]["t_min"], replays[i][values]) for i in indices]

        mask = None if config.patch_mask is None else np.array(config.patch_mask)
        common = dict(
            steps=memory.steps, alpha=config.alpha, modulation_floor=config.modulation_floor, radius=config.band_radius
        )
        time_space = ConformalBand.fit(
            scores(split.centre, "heatmap"),
            scores(split.width, "heatmap"),
            patch_fraction=config.patch_fraction,
            mask=mask,
            **common,
        )
        if config.frame_score == "band":  # the score the fitted scorer will give (it needs this band)
            for replay in replays.values():
                replay["score"] = time_space.nonconformity(replay["t_min"], replay["heatmap"])
        bands = {
            "time": ConformalBand.fit(scores(split.centre, "score"), scores(split.width, "score"), **common),
            "time_space": time_space,
            "gaussian": GaussianBand.fit(
                scores(split.centre + split.width, "score"), memory.steps, config.gaussian_z, radius=config.band_radius
            ),
        }
        fingerprint = encoder.fingerprint(memory.reference_frames.shape[1:])
        calibration = split.centre + split.width
        late = overrun_step([len(nominal_episodes[i]) for i in calibration]) if config.overrun else None
        return cls(
            task=task,
            instruction=instruction,
            config=config,
            encoder=encoder,
            memory=memory,
            prior=prior,
            bands=bands,
            fingerprint=fingerprint,
            overrun_step=late,
            semantic_filter=semantic_filter,
        )

    # -- the Monitor protocol --------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Start of an episode: the next frame is searched against the whole memory."""
        self.scorer.reset()
        self.frame_index = 0
        self.failed_by_look = False
        """Some frame of this episode was a failure without the overrun rule (late frames then skip the filter)."""

    def step(self, frame: np.ndarray) -> MonitorOutput:
        """Reads one camera frame (H, W, 3) uint8, upright, as the policy sees it."""
        if not isinstance(frame, np.ndarray) or frame.shape != self.frame_shape or frame.dtype != np.uint8:
            given = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ValueError(f"frame must be uint8 {self.frame_shape} (the nominal episodes' shape), got {given}")
        with torch_threads(self.torch_threads):
            features = _finite(self.encoder(frame[None])[0], "this frame")
            match = self.scorer(features)
        patch_costs = match.heatmap.numpy()
        is_anomaly, threshold = self.decide(match.score, match.t_min, patch_costs)
        grid = self.config.encoder.grid
        heatmap = patch_costs.reshape(grid, grid)
        ask_filter = None
        if self.semantic_filter is not None:
            reference = self.memory.reference_frames[match.t_min]
            ask_filter = partial(self.semantic_filter, self.instruction, reference, frame, heatmap)
        late = self.is_late(self.frame_index)
        verdict = judge_frame(is_anomaly, late, self.frame_index, ask_filter, judge_late=not self.failed_by_look)
        self.failed_by_look = self.failed_by_look or bool(verdict.visual_failure)
        self.frame_index += 1
        return MonitorOutput(
            score=match.score,
            threshold=threshold,
            is_anomaly=verdict.is_anomaly,
            is_failure=verdict.is_failure,
            heatmap=heatmap,
            t_min=match.t_min,
            explanation=verdict.explanation,
            late=verdict.late,
            visual_failure=verdict.visual_failure,
        )

    def is_late(self, frame_index: int) -> bool:
        """Whether frame `frame_index` of an episode lies past every calibration episode's end (FidelConfig.overrun)."""
        return self.overrun_step is not None and frame_index >= self.overrun_step

    def decide(
        self, score: float, t_min: int, heatmap: np.ndarray, thresholding: str | None = None
    ) -> tuple[bool, float]:
        """(is_anomaly, score threshold) under a band (default: the configured one; the threshold is NaN for the
        per-patch band). Public so that evaluations can compare thresholdings on the same scores."""
        name = thresholding or self.config.thresholding
        check_choice(name, THRESHOLDS, "thresholding")
        band = self.bands[name]
        if name == "time_space":
            return band.is_anomaly(t_min, heatmap.reshape(-1)), math.nan
        return band.is_anomaly(t_min, score), float(np.asarray(band.upper(t_min)))

    # -- persistence -----------------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Writes `monitor.json` and `monitor.safetensors` into the folder `path` (created if needed)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {f"memory.{k}": v.contiguous() for k, v in self.memory.tensors().items()}
        tensors["prior"], tensors["fingerprint"] = self.prior, self.fingerprint
        for name, band in self.bands.items():
            tensors.update({f"band.{name}.{k}": torch.from_numpy(np.array(v)) for k, v in band.arrays().items()})
        save_file(tensors, path / "monitor.safetensors")
        meta = {"format": FORMAT_VERSION, "task": self.task, "instruction": self.instruction}
        meta["overrun_step"] = self.overrun_step
        meta["config"] = self.config.to_dict()
        (path / "monitor.json").write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    @torch_threads(TORCH_THREADS)
    def load(
        cls,
        path: str | Path,
        task: str | None = None,
        encoder: EncoderConfig | None = None,
        semantic_filter: SemanticFilter | None = None,
    ) -> FidelMonitor:
        """Loads a saved monitor; `task` / `encoder`, when given, must be what it was fitted for."""
        path = Path(path)
        if not (path / "monitor.json").is_file():
            raise FileNotFoundError(
                f"no saved monitor in {str(path)!r} (expected monitor.json and monitor.safetensors)"
            )
        meta = json.loads((path / "monitor.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"monitor in {str(path)!r} has format {meta.get('format')!r}; this code reads {FORMAT_VERSION}"
            )
        config = FidelConfig.from_dict(meta["config"])
        if task is not None and task != meta["task"]:
            raise ValueError(f"monitor in {str(path)!r} was fitted for task {meta['task']!r}, not {task!r}")
        if encoder is not None and encoder != config.encoder:
            raise ValueError(f"monitor in {str(path)!r} was fitted with encoder {config.encoder}, not {encoder}")
        tensors = load_file(path / "monitor.safetensors")
        memory = Memory.from_tensors({k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("memory.")})

        def arrays(name: str) -> dict[str, np.ndarray]:
            prefix = f"band.{name}."
            return {k[len(prefix) :]: v.numpy() for k, v in tensors.items() if k.startswith(prefix)}

        bands = {
            "time": ConformalBand.from_arrays(arrays("time")),
            "time_space": ConformalBand.from_arrays(arrays("time_space")),
            "gaussian": GaussianBand.from_arrays(arrays("gaussian")),
        }
        patch_encoder = PatchEncoder(config.encoder)
        fingerprint = tensors["fingerprint"]
        patch_encoder.check_fingerprint(fingerprint, memory.reference_frames.shape[1:], f"the monitor in {str(path)!r}")
        return cls(
            task=meta["task"],
            instruction=meta["instruction"],
            config=config,
            encoder=patch_encoder,
            memory=memory,
            prior=tensors["prior"],
            bands=bands,
            fingerprint=fingerprint,
            overrun_step=meta["overrun_step"],
            semantic_filter=semantic_filter,
        )


def _finite(features: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.isfinite(features).all():
        raise FloatingPointError(f"the encoder returned NaN or infinite features for {what}")
    return features


def _replay(scorer: OTScorer, features: torch.Tensor) -> dict[str, np.ndarray]:
    """An episode's t_min, score and heatmap per frame, exactly as `step` would produce them online."""
    scorer.reset()
    matches = [scorer(x) for x in features]
    return {
        "t_min": np.array([m.t_min for m in matches]),
        "score": np.array([m.score for m in matches]),
        "heatmap": torch.stack([m.heatmap for m in matches]).double().numpy(),
    }
