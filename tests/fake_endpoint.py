"""A chat-completions server on localhost for the clients of OpenAI-compatible endpoints: it records every request
and answers from a list (in turn, the last repeating) or from a function of the request body."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, bytes]


def completion(content: str) -> Reply:
    return 200, json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()


def prompt_text(body: dict[str, Any]) -> str:
    """The text of a request's user message (its text parts joined)."""
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


class FakeEndpoint:
    def __init__(self, replies: list[Reply] | Callable[[dict[str, Any]], Reply]):
        self.replies, self.requests = replies, []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if callable(endpoint.replies):
                    status, payload = endpoint.replies(body)
                else:
                    status, payload = endpoint.replies[min(len(endpoint.requests), len(endpoint.replies)) - 1]
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
