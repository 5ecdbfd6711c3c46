"""FIDeL's semantic filter D_F: of the frames the monitor finds anomalous, which are task failures?

The OT score flags anything unlike the nominal demonstrations, a dimmer light as much as a dropped cube. A filter
takes a second look at (task instruction, nominal reference frame at t_min, current frame, heatmap) and answers
(is_failure, explanation), so that benign anomalies stop counting as failures (the interface:
`monitor.base.SemanticFilter`). Backends, built by name with `build_semantic_filter` (registry.py):

- `none`: every anomaly is a failure (FIDeL without D_F; what the monitor does when it has no filter).
- `vlm` (vlm.py): a vision-language model behind an OpenAI-compatible chat-completions endpoint.
- `trained` (trained.py): the offline default, a small classifier on frozen encoder features.

images.py holds what the backends share: input checks, heatmap resizing and overlay, PNG data URLs. Importing
this package loads neither torch nor the encoder; `from monitor.semantic.trained import TrainedFilter` does.
"""

from monitor.semantic.registry import SEMANTIC_FILTERS, NoFilter, build_semantic_filter

__all__ = ["SEMANTIC_FILTERS", "NoFilter", "build_semantic_filter"]
