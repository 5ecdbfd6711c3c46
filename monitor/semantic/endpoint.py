"""A client for OpenAI-compatible chat-completions endpoints (vLLM, llama.cpp's server, hosted APIs), shared by the
VLM semantic filter and the language-model path of the failure clusters.

Network errors, timeouts, 408/429 and 5xx are retried with backoff; other 4xx are not (a bad key, model name or
request: asking again will not help). After `disable_after` failed calls in a row it stops sending requests, so a
dead endpoint cannot add its timeout to every frame of every rollout.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.semantic.images import png_data_url


@dataclass
class EndpointConfig:
    """Where the model lives and how patiently to ask it."""

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
    disable_after: int | None = 3
    """Stop calling after this many failed calls in a row (None = keep trying)."""
    max_tokens: int = 1024
    temperature: float = 0.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.timeout_s <= 0 or self.backoff_s < 0 or self.max_tokens < 1:
            raise ValueError(
                f"need retries >= 0, timeout_s > 0, backoff_s >= 0, max_tokens >= 1; got retries={self.retries}, "
                f"timeout_s={self.timeout_s}, backoff_s={self.backoff_s}, max_tokens={self.max_tokens}"
            )
        if self.disable_after is not None and self.disable_after < 1:
            raise ValueError(f"disable_after must be >= 1 or None, got {self.disable_after!r}")


class EndpointError(RuntimeError):
    """The endpoint did not give a usable chat completion."""


_RETRYABLE_STATUS = {408, 429}


class ChatEndpoint:
    """Chat completions from one endpoint; counts requests and failed calls, and stops after `disable_after`."""

    def __init__(self, config: EndpointConfig = EndpointConfig()):
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.requests = 0
        """HTTP requests sent (retries included)."""
        self.failed_calls = 0
        """Calls that got no usable completion."""
        self._failures_in_a_row = 0

    @property
    def disabled(self) -> bool:
        """True once `disable_after` calls in a row failed: later calls raise without a request."""
        limit = self.config.disable_after
        return limit is not None and self._failures_in_a_row >= limit

    def request_body(self, system: str, content: str | list[dict[str, Any]]) -> dict[str, Any]:
        """The request for one system prompt and one user message (text, or a list of text and image parts)."""
        return {
            "model": self.config.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": content}],
            "max_tokens": self.config.max_tokens,
            "temperature": self.config.temperature,
        }

    def complete(self, body: dict[str, Any]) -> str:
        """POSTs `body` (with retries and backoff) and returns the reply's text; raises EndpointError."""
        if self.disabled:
            raise EndpointError(f"{self.url} not called after {self._failures_in_a_row} failed calls in a row")
        try:
            text = self._post(body)
        except EndpointError:
            self.failed_calls += 1
            self._failures_in_a_row += 1
            raise
        self._failures_in_a_row = 0
        return text

    def _post(self, body: dict[str, Any]) -> str:
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
                    return reply_text(json.loads(response.read()))
            except urllib.error.HTTPError as http:
                detail = http.read()[:300].decode(errors="replace")
                error = EndpointError(f"HTTP {http.code}: {detail}")
                if http.code < 500 and http.code not in _RETRYABLE_STATUS:
                    raise error from http
            except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as other:
                error = other  # connection refused, timeout, a body that is not a chat completion
        raise EndpointError(f"{type(error).__name__}: {error} (after {self.config.retries + 1} attempts)")


def reply_text(reply: dict[str, Any]) -> str:
    """The assistant text of a chat completion (content as a string or as a list of text parts)."""
    content = reply["choices"][0]["message"]["content"]
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        raise TypeError(f"reply content is {type(content).__name__}, not text")
    return content


def image_part(image: np.ndarray, upscale: int = 1) -> dict[str, Any]:
    """An (H, W, 3) uint8 image as a chat message part (a PNG data URL), enlarged `upscale` times (nearest
    neighbour: an 84 px frame is a handful of tokens for a VLM)."""
    large = np.repeat(np.repeat(image, upscale, axis=0), upscale, axis=1) if upscale > 1 else image
    return {"type": "image_url", "image_url": {"url": png_data_url(large)}}
