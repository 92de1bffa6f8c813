"""A real OpenAI-compatible HTTP server on 127.0.0.1 with scripted answers, latency and injected faults,
for tests and benchmarks (never a mock: requests go through the `openai` client and real sockets).

    python -m blade_plugin.testing.openai_stub_server --port 8000 --latency 0.5
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import ThreadingHTTPServer

from .background import BackgroundHTTPServer, LoopbackHandler, block_until_interrupted

# A responder returns the reply text, or (text, finish_reason) to script "length" / "content_filter" replies.
Responder = Callable[[list[dict], dict], "str | tuple[str, str]"]


def default_responder(messages: list[dict], body: dict) -> str:
    return "Answer: A"


class _Handler(LoopbackHandler):
    server: _Server

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.server.stub.batch_api.handle(self, "GET"):  # /v1/files, /v1/batches (testing/batch_api.py)
            return
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": "stub", "object": "model", "owned_by": "tests"}]})
        else:
            self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        stub = self.server.stub
        if stub.batch_api.handle(self, "POST"):
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._send(400, {"error": {"message": "invalid JSON body", "type": "invalid_request_error"}})
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            return
        with stub._lock:
            stub.authorizations.append(self.headers.get("Authorization"))
        fault = stub._record(body)
        if stub.latency:
            time.sleep(stub.latency)
        if fault is None and stub.reject_response_format and "response_format" in body:
            # as OpenAI answers for models without structured outputs (vLLM/old servers answer much alike)
            self._send(400, {"error": {"message": "Invalid parameter: 'response_format' of type 'json_schema' is "
                                                  "not supported with this model.",
                                       "type": "invalid_request_error", "param": "response_format", "code": None}})
            return
        if fault is not None:
            status, headers = fault
            self._send(status, {"error": {"message": f"injected fault {status}", "type": "server_error",
                                          "code": status}}, headers)
            return
        messages = body.get("messages") or []
        try:
            reply = stub.responder(messages, body)
        except Exception as err:  # a broken script is a 500, as a broken server would be
            self._send(500, {"error": {"message": f"responder failed: {err!r}", "type": "server_error"}})
            return
        text, finish_reason = reply if isinstance(reply, tuple) else (reply, "stop")
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        completion_tokens = len(text.split())
        if body.get("stream"):
            self._send_stream(body, text, prompt_tokens, completion_tokens)
            return
        self._send(200, {
            "id": f"chatcmpl-stub-{stub.request_count}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "stub"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })

    def _send_stream(self, body: dict, text: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Server-sent events as OpenAI sends them: a role chunk, one chunk per word, a finish chunk, the
        usage chunk when `stream_options.include_usage`, then `data: [DONE]`."""
        stub = self.server.stub
        base = {"id": f"chatcmpl-stub-{stub.request_count}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body.get("model", "stub")}

        def chunk(delta: dict, finish: str | None) -> dict:
            return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        words = text.split(" ")
        chunks = [chunk({"role": "assistant", "content": ""}, None)]
        chunks += [chunk({"content": word if i == 0 else " " + word}, None) for i, word in enumerate(words)]
        chunks.append(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "choices": [], "usage": {"prompt_tokens": prompt_tokens,
                                                            "completion_tokens": completion_tokens,
                                                            "total_tokens": prompt_tokens + completion_tokens}})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # no length: the end of the connection ends the stream
        self.end_headers()
        self.close_connection = True
        for payload in chunks:
            self.wfile.write(f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode())
            self.wfile.flush()
            if stub.stream_delay:
                time.sleep(stub.stream_delay)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address, stub: StubOpenAIServer):
        super().__init__(address, _Handler)
        self.stub = stub

    def handle_error(self, request, client_address) -> None:
        # A client that gave up (a cancelled batch, a timeout) closes its socket mid-response: that is
        # normal traffic, not a server fault worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class StubOpenAIServer(BackgroundHTTPServer):
    """Context manager; `.base_url` is `http://127.0.0.1:PORT/v1`. Thread-safe counters and records.

    Injected transient faults (`inject_faults`, `fail_always`) carry `retry-after-ms: fault_retry_after_ms`
    (as real rate limiters send a retry-after), so clients retry them quickly; `fail_matching` makes every
    request whose messages contain a text fail for good, with no retry hint (an over-long prompt's 400).
    """

    _thread_name = "stub-openai"

    def __init__(self, responder: Responder | None = None, latency: float = 0.0, port: int = 0,
                 fault_retry_after_ms: int = 10, reject_response_format: bool = False):
        self.responder = responder or default_responder
        self.latency = latency
        self.fault_retry_after_ms = fault_retry_after_ms
        self.reject_response_format = reject_response_format  # 400 for any request with response_format
        self.stream_delay = 0.0  # seconds between streamed chunks (stream: true requests)
        self.authorizations: list[str | None] = []  # the Authorization header of each chat request
        self._lock = threading.Lock()
        self._faults: deque[tuple[int, dict | None]] = deque()
        self._fail_always: int | None = None
        self._fail_matching: list[tuple[str, int]] = []
        self.requests: list[dict] = []
        self.request_count = 0
        self.fault_count = 0
        from .batch_api import BatchAPI

        self.batch_api = BatchAPI(self)
        self._server = _Server(("127.0.0.1", port), self)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def inject_faults(self, statuses: list[int], headers: dict | None = None) -> None:
        """The next len(statuses) requests fail with these HTTP statuses, in order (with `headers` instead of
        the default retry-after-ms, if given)."""
        with self._lock:
            self._faults.extend((status, headers) for status in statuses)

    def fail_matching(self, text: str, status: int = 400) -> None:
        """Every request whose messages contain `text` fails with `status`, without a retry hint."""
        with self._lock:
            self._fail_matching.append((text, status))

    def fail_always(self, status: int | None) -> None:
        with self._lock:
            self._fail_always = status

    def reset_stats(self) -> None:
        with self._lock:
            self.requests.clear()
            self.request_count = 0
            self.fault_count = 0

    def _record(self, body: dict) -> tuple[int, dict] | None:
        """The fault (status, headers) this request gets, if any."""
        default_headers = {"retry-after-ms": str(self.fault_retry_after_ms)}
        with self._lock:
            self.requests.append(body)
            self.request_count += 1
            content = json.dumps(body.get("messages") or [], ensure_ascii=False)
            fault = None
            for text, status in self._fail_matching:
                if json.dumps(text, ensure_ascii=False)[1:-1] in content:
                    fault = (status, {})
                    break
            if fault is None and self._faults:
                status, headers = self._faults.popleft()
                fault = (status, default_headers if headers is None else headers)
            elif fault is None and self._fail_always is not None:
                fault = (self._fail_always, default_headers)
            if fault is not None:
                self.fault_count += 1
            return fault



def main() -> None:
    parser = argparse.ArgumentParser(description="Scripted OpenAI-compatible server on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--reject-response-format", action="store_true",
                        help="Answer 400 to requests with response_format, as endpoints without structured outputs do.")
    args = parser.parse_args()
    with StubOpenAIServer(latency=args.latency, port=args.port,
                          reject_response_format=args.reject_response_format) as server:
        print(f"serving {server.base_url} (Ctrl-C to stop)", flush=True)
        block_until_interrupted()


if __name__ == "__main__":
    main()
