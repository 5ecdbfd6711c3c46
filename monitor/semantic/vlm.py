"""The `vlm` semantic filter: a vision-language model behind an OpenAI-compatible chat-completions endpoint.

The reference frame, the current frame and the heatmap overlaid on the current frame go as PNG data URLs with
FIDeL's question (e.g. to vLLM serving Qwen2.5-VL-7B-Instruct); the answer is JSON, verdict first. Network errors
are retried with backoff; if the endpoint still fails (or the reply has no verdict) the filter answers the
configured `fallback` and warns once, not once per frame, and after `disable_after` failed calls in a row it stops
calling, so a dead endpoint cannot add its timeout to every frame of every rollout.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.choices import check_choice
from monitor.semantic.endpoint import ChatEndpoint, EndpointConfig, EndpointError, image_part
from monitor.semantic.images import check_inputs, overlay_heatmap

FALLBACKS = ("failure", "benign")

SYSTEM_PROMPT = "You check a robot manipulator's camera for task failures. You answer with JSON only."
USER_PROMPT = """The robot's task: "{task}".
Image 1 is a reference frame from a successful demonstration at the same stage of the task. Image 2 is the current \
camera frame. Image 3 is the current frame overlaid with an anomaly heatmap: red marks where the current frame \
differs most from the successful demonstrations, blue where it looks nominal.
An anomaly detector flagged the current frame. Compare the two images and read the heatmap. Decide whether the \
difference is benign (a lighting or colour change, camera noise, a distractor object that does not interfere with \
the task) or a task failure (the robot or the object is in a state where the task is failing or has failed: the \
object dropped, missed, pushed away or knocked over, the gripper empty when it should hold the object, the robot \
stuck or colliding).
Answer with JSON only, verdict first: {{"verdict": "failure" or "benign", "reason": "<one short sentence>"}}"""

VERDICT_WORDS = {
    "failure": True,
    "fail": True,
    "failed": True,
    "failing": True,
    "benign": False,
    "nominal": False,
    "normal": False,
}
"""Words accepted as a verdict (lower case) → is_failure."""


def parse_verdict(text: str) -> tuple[bool, str] | None:
    """(is_failure, reason) from a VLM reply, or None when it holds no verdict.

    Accepts the JSON asked for (also inside code fences, with single quotes, or cut off by max_tokens) and a reply
    whose first word is the verdict ("Failure: the cube fell."). Never guesses from words further in: "not a
    failure" must not read as a failure.
    """
    text = re.sub(r"```(?:json)?", "", text or "").strip()
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            data = json.loads(text[start : end + 1])
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            lowered = {str(k).lower(): v for k, v in data.items()}
            for key in ("verdict", "answer", "label", "decision"):
                word = str(lowered.get(key, "")).strip().lower()
                if word in VERDICT_WORDS:
                    reason = lowered.get("reason") or lowered.get("explanation") or ""
                    return VERDICT_WORDS[word], str(reason).strip()
    match = re.search(r"""["']?(?:verdict|answer)["']?\s*[:=]\s*["']?([a-z]+)""", text, re.IGNORECASE)
    if match and match.group(1).lower() in VERDICT_WORDS:
        reason = re.search(r"""["']?reason["']?\s*[:=]\s*["']([^"']*)""", text, re.IGNORECASE)
        return VERDICT_WORDS[match.group(1).lower()], reason.group(1).strip() if reason else ""
    match = re.match(r"""[\s"'*#>-]*([a-z]+)\b(.*)""", text, re.IGNORECASE | re.DOTALL)
    if match and match.group(1).lower() in VERDICT_WORDS:
        return VERDICT_WORDS[match.group(1).lower()], match.group(2).strip(" \t\n.:;,-—*\"'")
    return None


@dataclass
class VLMConfig(EndpointConfig):
    """The endpoint (EndpointConfig's fields), and what to answer when it gives no verdict."""

    fallback: str = "failure"
    """Verdict when the endpoint fails or answers without a verdict: failure (safe: the anomaly stands) or benign."""
    upscale: int = 3
    """Images are enlarged by this factor (nearest neighbour): an 84 px frame is a handful of tokens for a VLM."""
    max_tokens: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.fallback, FALLBACKS, "fallback")
        if self.upscale < 1:
            raise ValueError(f"upscale must be >= 1, got {self.upscale}")


class VLMFilter:
    """FIDeL's D_F through a VLM on an OpenAI-compatible endpoint; see the module docstring for the failure policy."""

    def __init__(self, config: VLMConfig = VLMConfig()):
        self.config = config
        self.endpoint = ChatEndpoint(config)
        self._warned: set[str] = set()

    @property
    def url(self) -> str:
        return self.endpoint.url

    @property
    def requests(self) -> int:
        """HTTP requests sent (retries included)."""
        return self.endpoint.requests

    @property
    def failed_calls(self) -> int:
        """Calls answered by the fallback because the endpoint failed."""
        return self.endpoint.failed_calls

    @property
    def disabled(self) -> bool:
        """True once `disable_after` calls in a row failed: later calls answer the fallback without a request."""
        return self.endpoint.disabled

    def request_body(
        self, task_text: str, reference_frame: np.ndarray, frame: np.ndarray, heatmap: np.ndarray
    ) -> dict[str, Any]:
        """The chat-completions request (public so a user can see exactly what the VLM is asked)."""
        check_inputs(reference_frame, frame, heatmap)
        images = [reference_frame, frame, overlay_heatmap(frame, heatmap)]
        content: list[dict[str, Any]] = [{"type": "text", "text": USER_PROMPT.format(task=task_text)}]
        content += [image_part(image, self.config.upscale) for image in images]
        return self.endpoint.request_body(SYSTEM_PROMPT, content)

    def __call__(
        self, task_text: str, reference_frame: np.ndarray, frame: np.ndarray, heatmap: np.ndarray
    ) -> tuple[bool, str]:
        check_inputs(reference_frame, frame, heatmap)
        if self.disabled:  # already warned when the calls began to fail
            return self._fall_back("endpoint", f"VLM endpoint {self.url} not called after {self.failed_calls} failures")
        try:
            reply = self.endpoint.complete(self.request_body(task_text, reference_frame, frame, heatmap))
        except EndpointError as error:
            return self._fall_back("endpoint", f"VLM endpoint {self.url} failed: {error}")
        verdict = parse_verdict(reply)
        if verdict is None:
            return self._fall_back("unparseable", f"no verdict in the VLM reply {reply[:200]!r}")
        return verdict

    def _fall_back(self, kind: str, message: str) -> tuple[bool, str]:
        fallback = self.config.fallback
        if kind not in self._warned:
            self._warned.add(kind)
            limit = self.config.disable_after
            stop = f", and stops calling after {limit} failed calls in a row" if kind == "endpoint" and limit else ""
            warnings.warn(
                f"{message}; the semantic filter answers {fallback!r} for such frames{stop} (said once)",
                RuntimeWarning,
                stacklevel=3,
            )
        return fallback == "failure", f"[fallback: {fallback}] {message}"
