"""Semantic filter backends by name: `build_semantic_filter("trained", path=...)`, the Hydra config's
`monitor.semantic` choices."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from envs.choices import Registry
from monitor.base import SemanticFilter

if TYPE_CHECKING:
    from monitor.encoders import PatchEncoder


class NoFilter:
    """Every anomaly is a failure: FIDeL without its semantic filter, the baseline a filter must beat on TNR."""

    def __call__(
        self, task_text: str, reference_frame: np.ndarray, frame: np.ndarray, heatmap: np.ndarray
    ) -> tuple[bool, str]:
        return True, ""


def _build_none(**options: Any) -> SemanticFilter:
    if options:
        raise ValueError(f"the none filter takes no options, got {sorted(options)}")
    return NoFilter()


def _build_vlm(**options: Any) -> SemanticFilter:
    from monitor.semantic.vlm import VLMConfig, VLMFilter

    valid = [f.name for f in fields(VLMConfig)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for the vlm filter; valid: {', '.join(valid)}")
    return VLMFilter(VLMConfig(**options))


def _build_trained(
    path: str | Path | None = None, encoder: PatchEncoder | None = None, **options: Any
) -> SemanticFilter:
    from monitor.semantic.trained import TrainedFilter

    if options:
        raise ValueError(f"unknown option(s) {sorted(options)} for the trained filter; valid: path, encoder")
    if path is None:
        raise ValueError("the trained filter needs path= a folder written by TrainedFilter.save")
    return TrainedFilter.load(path, encoder)


def _build_failsense(path: str | Path | None = None, **options: Any) -> SemanticFilter:
    from monitor.failsense.filter import FailSenseFilter

    if options:
        raise ValueError(f"unknown option(s) {sorted(options)} for the failsense filter; valid: path")
    if path is None:
        raise ValueError("the failsense filter needs path= a checkpoint folder of python -m monitor.failsense.train")
    return FailSenseFilter.load(path)


SEMANTIC_FILTERS: Registry[Callable[..., SemanticFilter]] = Registry(
    "semantic filter",
    {"none": _build_none, "vlm": _build_vlm, "trained": _build_trained, "failsense": _build_failsense},
)
"""Backend name → factory taking the backend's options (each backend's module loads when it is built: the
trained filter imports torch and the encoder, which a VLM-only user does not need)."""


def build_semantic_filter(name: str, **options: Any) -> SemanticFilter:
    """The semantic filter `name` (none, vlm, trained, failsense) with its options, e.g. from a Hydra config group.

    vlm: the fields of VLMConfig (base_url, model, api_key_env, timeout_s, retries, ...); trained: path (a folder
    written by TrainedFilter.save) and optionally encoder (the monitor's PatchEncoder, to share it); failsense: path
    (a checkpoint folder of monitor.failsense.train).
    """
    return SEMANTIC_FILTERS[name](**options)
