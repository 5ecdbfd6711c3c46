"""FIDeL's baselines under the same Monitor interface, fitted on the same nominal split with thresholds calibrated the
same way: `padim` (per-position Gaussians of the patch features, no OT), `patchcore` (nearest neighbours in a memory
bank of patch features), `autoencoder` (reconstruction error of a small conv autoencoder), `flow_score`
(FAIL-Detect's logpZO on the policy's own image features); `base` holds what they share, saving and loading
included (`ThresholdMonitor.load` reads any of them)."""

from monitor.baselines.autoencoder import AutoencoderConfig, AutoencoderMonitor
from monitor.baselines.base import Calibration, ThresholdMonitor, calibrated_threshold
from monitor.baselines.flow_score import FlowScoreConfig, FlowScoreMonitor
from monitor.baselines.padim import PadimConfig, PadimMonitor
from monitor.baselines.patchcore import PatchCoreConfig, PatchCoreMonitor

__all__ = [
    "AutoencoderConfig",
    "AutoencoderMonitor",
    "Calibration",
    "FlowScoreConfig",
    "FlowScoreMonitor",
    "PadimConfig",
    "PadimMonitor",
    "PatchCoreConfig",
    "PatchCoreMonitor",
    "ThresholdMonitor",
    "calibrated_threshold",
]
