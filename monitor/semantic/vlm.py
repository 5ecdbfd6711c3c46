"""The `vlm` semantic filter: a vision-language model behind an OpenAI-compatible chat-completions endpoint.

The reference frame, the current frame and the heatmap overlaid on the current frame go as PNG data URLs with
FIDeL's question (e.g. to vLLM serving Qwen2.5-VL-7B-Instruct); the answer is JSON, verdict first. Network errors
are retried with backoff; if the endpoint still fails (or the reply has no verdict) the filter answers the
configured `fallback` and warns once, not once per frame, and after `disable_after` failed calls in a row it stops
calling, so a dead endpoint cannot add its timeout to every frame of every rollout.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.choices import check_choice
from monitor.semantic.images import check_inputs, overlay_heatmap, png_data_url

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


@dataclass(frozen=True)
class VLMConfig:
    """Where the VLM lives and how patiently to ask it."""

    base_url: str = "http://localhost:8000/v1"
    """OpenAI-compatible API root; requests go to `{base_url}/chat/completions` (vLLM: `vllm serve MODEL`)."""
    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    """Model name the server knows."""
    api_key_env: str = "FAILSCOPE_VLM_API_KEY"
    """Environment variable holding the API key; unset or empty = no Authorization header (local vLLM)."""
    timeout_s: float = 30.0
    """Per-request timeout."""
    retries: int = 2
    """Extra attempts after a network error, timeout, 408/429 or 5xx (other 4xx are not retried)."""
    backoff_s: float = 0.5
    """Wait before retry k (0-based): backoff_s · 2^k."""
    fallback: str = "failure"
    """Verdict when the endpoint fails or answers without a verdict: failure (safe: the anomaly stands) or benign."""
    disable_after: int | None = 3
    """Stop calling after this many failed calls in a row and answer `fallback` (None = keep trying every frame)."""
    upscale: int = 3
    """Images are enlarged by this factor (nearest neighbour): an 84 px frame is a handful of tokens for a VLM."""
    max_tokens: int = 128
    temperature: float = 0.0

    def __post_init__(self) -> None:
        check_choice(self.fallback, FALLBACKS, "fallback")
        if self.retries < 0 or self.timeout_s <= 0 or self.backoff_s < 0 or self.upscale < 1:
            raise ValueError(
                f"need retries >= 0, timeout_s > 0, backoff_s >= 0, upscale >= 1; got retries={self.retries}, "
                f"timeout_s={self.timeout_s}, backoff_s={self.backoff_s}, upscale={self.upscale}"
            )
        if self.disable_after is not None and self.disable_after < 1:
            raise ValueError(f"disable_after must be >= 1 or None, got {self.disable_after!r}")


class EndpointError(RuntimeError):
    """The endpoint did not give a usable chat completion."""


_RETRYABLE_STATUS = {408, 429}


class VLMFilter:
    """FIDeL's D_F through a VLM on an OpenAI-compatible endpoint; see the module docstring for the failure policy."""

    def __init__(self, config: VLMConfig = VLMConfig()):
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.requests = 0
        """HTTP requests sent (retries included)."""
        self.failed_calls = 0
        """Calls answered by the fallback because the endpoint failed."""
        self._failures_in_a_row = 0
        self._warned: set[str] = set()

    @property
    def disabled(self) -> bool:
        """True once `disable_after` calls in a row failed: later calls answer the fallback without a request."""
        limit = self.config.disable_after
        return limit is not None and self._failures_in_a_row >= limit

    def request_body(
        self, task_text: str, reference_frame: np.ndarray, frame: np.ndarray, heatmap: np.ndarray
    ) -> dict[str, Any]:
        """The chat-completions request (public so a user can see exactly what the VLM is asked)."""
        check_inputs(reference_frame, frame, heatmap)
        k = self.config.upscale
        images = [reference_frame, frame, overlay_heatmap(frame, heatmap)]
        content: list[dict[str, Any]] = [{"type": "text", "text": USER_PROMPT.format(task=task_text)}]
        for image in images:
            large = np.repeat(np.repeat(image, k, axis=0), k, axis=1) if k > 1 else image
            content.append({"type": "image_url", "image_url": {"url": png_data_url(large)}})
        return {
            "model": self.config.model,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}],
            "max_tokens": self.config.max_tokens,
            "temperature": self.config.temperature,
        }

    def __call__(
        self, task_text: str, reference_frame: np.ndarray, frame: np.ndarray, heatmap: np.ndarray
    ) -> tuple[bool, str]:
        check_inputs(reference_frame, frame, heatmap)
        if self.disabled:  # already warned when the calls began to fail
            return self._fall_back("endpoint", f"VLM endpoint {self.url} not called after {self.failed_calls} failures")
        body = self.request_body(task_text, reference_frame, frame, heatmap)
        try:
            reply = self.complete(body)
        except EndpointError as error:
            self.failed_calls += 1
            self._failures_in_a_row += 1
            return self._fall_back("endpoint", f"VLM endpoint {self.url} failed: {error}")
        self._failures_in_a_row = 0
        verdict = parse_verdict(reply)
        if verdict is None:
            return self._fall_back("unparseable", f"no verdict in the VLM reply {reply[:200]!r}")
        return verdict

    def complete(self, body: dict[str, Any]) -> str:
        """POSTs `body` (with retries and backoff) and returns the reply's text; raises EndpointError."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.config.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        error: Exception | None = None
        for attempt in range(self.config.retries + 1):
            if attempt:
                time.sleep(self.config.backoff_s * 2 ** (attempt - 1))
            self.requests += 1
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                    return _reply_text(json.loads(response.read()))
            except urllib.error.HTTPError as http:
                detail = http.read()[:300].decode(errors="replace")
                error = EndpointError(f"HTTP {http.code}: {detail}")
                if http.code < 500 and http.code not in _RETRYABLE_STATUS:
                    raise error from http  # a bad key, model name or request: asking again will not help
            except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as other:
                error = other  # connection refused, timeout, a body that is not a chat completion
        raise EndpointError(f"{type(error).__name__}: {error} (after {self.config.retries + 1} attempts)")

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


def _reply_text(reply: dict[str, Any]) -> str:
    """The assistant text of a chat completion (content as a string or as a list of text parts)."""
    content = reply["choices"][0]["message"]["content"]
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        raise TypeError(f"reply content is {type(content).__name__}, not text")
    return content
