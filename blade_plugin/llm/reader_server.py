"""The offline evidence reader behind an OpenAI-compatible HTTP endpoint on 127.0.0.1 (chat completions and the
model list), for tools that only speak HTTP: `python -m blade_plugin.llm.reader --port 8000`.

Standard library only (http.server), one thread a connection: a local tool endpoint, like a vLLM started
without --api-key, so any key and any model name are accepted.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

MAX_BODY = 8 << 20  # bytes: a prompt of the reader's size is a few KB


class ReaderServer:
    """`with ReaderServer(reply) as server:` serves `reply(messages) -> str` at `server.base_url` (".../v1");
    `request_count` counts answered chat completions."""

    def __init__(self, reply: Callable[[list[dict]], str], port: int = 0, latency: float = 0.0):
        self.reply, self.latency = reply, latency
        self.request_count = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # the client logs its own requests
                pass

            def _send(self, status: int, payload: dict) -> None:
                body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, message: str) -> None:
                self._send(status, {"error": {"message": message, "type": "invalid_request_error",
                                              "param": None, "code": None}})

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": "evidence-reader", "object": "model",
                                                                 "created": 0, "owned_by": "blade-plugin"}]})
                else:
                    self._error(404, f"no route {self.path}")

            def do_POST(self) -> None:  # noqa: N802
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._error(404, f"no route {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                if length <= 0 or length > MAX_BODY:
                    return self._error(413 if length > MAX_BODY else 400, "a JSON body of at most 8 MiB is needed")
                try:
                    body = json.loads(self.rfile.read(length))
                    messages = body["messages"]
                    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                        raise TypeError
                except (ValueError, KeyError, TypeError):
                    return self._error(400, "expected a JSON object with a `messages` list")
                if server.latency:
                    time.sleep(server.latency)
                text = server.reply(messages)
                with server._lock:
                    server.request_count += 1
                prompt = sum(len(str(m.get("content", "")).split()) for m in messages)
                self._send(200, {
                    "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                    "model": str(body.get("model") or "evidence-reader"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop", "logprobs": None}],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": len(text.split()),
                              "total_tokens": prompt + len(text.split())}})

        return Handler

    def __enter__(self) -> ReaderServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="reader-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
