"""A real OpenAI-compatible HTTP server on 127.0.0.1 with scripted answers, latency and injected faults,
for tests and benchmarks (never a mock: requests go through the `openai` client and real sockets).

It is as strict as the OpenAI API on what this project sends or reads (see `openai_rules`): the Bearer key
(401), the model list (`GET /v1/models`; an unknown model is a 404 `model_not_found`), the exact path
`/v1/chat/completions`, the message shape, unknown or out-of-range parameters (400), `n` choices, the
`response_format` JSON schema (a reply under it is schema-valid JSON), the scripted finish reason in streams
too, and reasoning models (names like `o4-mini`, `gpt-5`, or `reasoning_models=`) that refuse `max_tokens`,
`top_p` and a non-default `temperature`.

    python -m blade_testing.openai_stub_server --port 8000 --latency 0.5
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from http.server import ThreadingHTTPServer

from .background import BackgroundHTTPServer, LoopbackHandler, block_until_interrupted
from .json_schema_subset import conforms, example_instance
from .openai_rules import (APIError, check_auth, check_chat_request, invalid_url, looks_like_reasoning_model,
                           model_not_found)

# A responder returns the reply text, or (text, finish_reason) to script "length" / "content_filter" replies.
Responder = Callable[[list[dict], dict], "str | tuple[str, str]"]

# What the test suite's environment carries (tests/conftest.py sets OPENAI_API_KEY to it) and what a stub
# accepts unless told otherwise: a key, and one chat model plus one reasoning model.
DEFAULT_API_KEY = "sk-blade-stub-0123456789"
DEFAULT_MODELS = ("stub", "o4-mini")
CHAT_PATH = "/v1/chat/completions"


def default_responder(messages: list[dict], body: dict) -> str:
    """'Answer: A'; under a response_format JSON schema, the schema's minimal instance (as a model would
    answer in the required shape)."""
    schema = _schema_of(body)
    if schema is not None:
        return json.dumps(example_instance(schema))
    return "Answer: A"


def _schema_of(body: dict) -> dict | None:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return (fmt.get("json_schema") or {}).get("schema") or {}
    return None


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
        self._finished()
        self.wfile.write(data)

    def _finished(self) -> None:
        """Record a chat request's finish before its last bytes go out: once the client has the reply it may
        send its next request at once, and that request's start must not precede this finish in `events`."""
        number = getattr(self, "_serving", None)
        if number is not None:
            self._serving = None
            self.server.stub._event("finish", number)

    def _refuse(self, error: APIError) -> None:
        self._send(error.status, error.body())

    def _path(self) -> str:
        return self.path.split("?", 1)[0]

    def do_GET(self) -> None:
        stub = self.server.stub
        problem = check_auth(self.headers.get("Authorization"), stub.api_key)
        if problem:
            self._refuse(problem)
            return
        if stub.batch_api.handle(self, "GET"):  # /v1/files, /v1/batches (testing/batch_api.py)
            return
        path = self._path()
        if path == "/v1/models":
            self._send(200, {"object": "list", "data": [stub._model_card(m) for m in stub.model_ids()]})
        elif path.startswith("/v1/models/"):
            model = path[len("/v1/models/"):]
            if stub.knows(model):
                self._send(200, stub._model_card(model))
            else:
                self._refuse(model_not_found(model))
        else:
            self._refuse(invalid_url("GET", path))

    def do_POST(self) -> None:
        stub = self.server.stub
        with stub._lock:
            stub.authorizations.append(self.headers.get("Authorization"))
        problem = check_auth(self.headers.get("Authorization"), stub.api_key)
        if problem:  # the real API checks the key first, on every path (the Batch API's too)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))  # keep the connection usable
            stub._refused(problem)
            self._refuse(problem)
            return
        if stub.batch_api.handle(self, "POST"):  # /v1/files, /v1/batches (testing/batch_api.py)
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self._path() != CHAT_PATH:
            self._refuse(invalid_url("POST", self._path()))
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._send(400, APIError(400, "We could not parse the JSON body of your request. (HINT: This likely "
                                          "means you aren't using your HTTP library correctly.)").body())
            return
        if not isinstance(body, dict):
            self._refuse(APIError(400, "Invalid type for request body: expected an object."))
            return
        number = self._serving = stub._begin(body)
        try:
            self._chat(stub, body, number)
        finally:
            self._finished()  # a no-op unless the handler failed before replying

    def _chat(self, stub: StubOpenAIServer, body: dict, number: int) -> None:
        if stub.drop_response_format:  # as `llamafactory-cli api` does: pydantic drops the unknown field
            body = {k: v for k, v in body.items() if k != "response_format"}
        if stub.latency and not self._wait_unless_abandoned(stub.latency):
            self._serving = None  # no reply, so no finish: `events` says ("abandoned", number) instead
            stub._event("abandoned", number)
            self.close_connection = True
            return
        problem = stub._validate(body)  # the API refuses a bad request before anything can go wrong
        if problem is not None:
            stub._refused(problem)
            self._refuse(problem)
            return
        fault = stub._fault_for(body)
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
        messages = body["messages"]
        choices = []
        for _ in range(body.get("n") or 1):
            try:
                reply = stub.responder(messages, body)
            except Exception as err:  # a broken script is a 500, as a broken server would be
                self._send(500, {"error": {"message": f"responder failed: {err!r}", "type": "server_error"}})
                return
            text, finish_reason = reply if isinstance(reply, tuple) else (reply, "stop")
            schema = _schema_of(body)
            if schema is not None and finish_reason == "stop" and not _valid_json(text, schema):
                # The real API constrains decoding to the schema: a reply outside it is a script defect.
                message = f"stub responder broke the response_format schema: {text[:80]!r}"
                stub.script_errors.append(message)
                self._send(500, {"error": {"message": message, "type": "server_error"}},
                           {"x-should-retry": "false"})
                return
            choices.append((text, finish_reason))
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        completion_tokens = sum(len(text.split()) for text, _ in choices)
        if body.get("stream"):
            self._send_stream(body, number, choices, prompt_tokens, completion_tokens)
            return
        self._send(200, {
            "id": f"chatcmpl-stub-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": finish_reason}
                        for i, (text, finish_reason) in enumerate(choices)],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })

    def _wait_unless_abandoned(self, seconds: float) -> bool:
        """Sleep `seconds` as a slow model would, watching the socket: False as soon as the client hangs up (a
        real server stops generating then, and a test sees that the caller cancelled its request)."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.connection], [], [], remaining)
            if not readable:
                continue
            try:
                if self.connection.recv(1, socket.MSG_PEEK) == b"":
                    return False
            except OSError:  # reset by the peer: gone as well
                return False
            time.sleep(remaining)  # bytes of a next request: not a hang-up; finish the wait
            return True
        return True

    def _send_stream(self, body: dict, number: int, choices: list[tuple[str, str]], prompt_tokens: int,
                     completion_tokens: int) -> None:
        """Server-sent events as OpenAI sends them: per choice a role chunk, one chunk per word and a chunk
        with its finish reason; the usage chunk when `stream_options.include_usage`; then `data: [DONE]`."""
        stub = self.server.stub
        base = {"id": f"chatcmpl-stub-{number}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body["model"]}

        def chunk(index: int, delta: dict, finish: str | None) -> dict:
            return {**base, "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        chunks = []
        for index, (text, finish_reason) in enumerate(choices):
            words = text.split(" ")
            chunks.append(chunk(index, {"role": "assistant", "content": ""}, None))
            chunks += [chunk(index, {"content": word if i == 0 else " " + word}, None) for i, word in enumerate(words)]
            chunks.append(chunk(index, {}, finish_reason))
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
        self._finished()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def _valid_json(text: str, schema: dict) -> bool:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return False
    return conforms(value, schema)


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

    `api_key`: the Bearer key it accepts (None: any or none, as a local server without a key); `models`:
    the model ids it serves (None: any id, as a single-model local server); `reasoning_models`: ids that
    behave as OpenAI's reasoning models (besides names like `o4-mini`/`gpt-5-mini`, see `openai_rules`).

    Injected transient faults (`inject_faults`, `fail_always`) carry `retry-after-ms: fault_retry_after_ms`
    (as real rate limiters send a retry-after), so clients retry them quickly; `fail_matching` makes every
    request whose messages contain a text fail for good, with no retry hint (an over-long prompt's 400).

    `events` records ("start" | "finish", request number, time.perf_counter()) per chat request, so tests
    check overlap and order (`max_in_flight()`) instead of wall-clock thresholds; a request whose client hangs
    up during the `latency` wait ends with ("abandoned", number, time) instead of "finish" (no reply is sent).
    """

    _thread_name = "stub-openai"

    def __init__(self, responder: Responder | None = None, latency: float = 0.0, port: int = 0,
                 fault_retry_after_ms: int = 10, reject_response_format: bool = False,
                 drop_response_format: bool = False, api_key: str | None = DEFAULT_API_KEY,
                 models: Iterable[str] | None = DEFAULT_MODELS,
                 reasoning_models: Iterable[str] = (), extra_parameters: Iterable[str] = ()):
        self.responder = responder or default_responder
        self.latency = latency
        self.fault_retry_after_ms = fault_retry_after_ms
        self.reject_response_format = reject_response_format  # 400 for any request with response_format
        self.drop_response_format = drop_response_format  # ignore it silently (the responder never sees it)
        self.api_key = api_key
        self.models = None if models is None else list(models)
        self.reasoning_models = set(reasoning_models)
        self.extra_parameters = frozenset(extra_parameters)  # vendor fields taken too (vLLM's top_k, ...)
        self.stream_delay = 0.0  # seconds between streamed chunks (stream: true requests)
        self.authorizations: list[str | None] = []  # the Authorization header of each chat request
        self.refusals: list[APIError] = []  # every 4xx the API rules gave (auth, model, parameters)
        self.script_errors: list[str] = []  # responder replies the real API could not have sent
        self.events: list[tuple[str, int, float]] = []
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

    # --- the model list -----------------------------------------------------------------------------
    def model_ids(self) -> list[str]:
        return list(self.models) if self.models is not None else ["stub"]

    def knows(self, model: str) -> bool:
        return self.models is None or model in self.models

    def is_reasoning(self, model: str) -> bool:
        return model in self.reasoning_models or looks_like_reasoning_model(model)

    @staticmethod
    def _model_card(model: str) -> dict:
        return {"id": model, "object": "model", "created": 0, "owned_by": "blade-stub"}

    # --- scripting ----------------------------------------------------------------------------------
    def inject_faults(self, statuses: list[int], headers: dict | Callable[[], dict] | None = None) -> None:
        """The next len(statuses) valid requests fail with these HTTP statuses, in order (with `headers`
        instead of the default retry-after-ms, if given; a callable is called for each fault as it is served,
        so a header that names a moment, such as an HTTP-date retry-after, is computed when it is sent)."""
        with self._lock:
            self._faults.extend((status, headers) for status in statuses)

    def fail_matching(self, text: str, status: int = 400) -> None:
        """Every request whose messages contain `text` fails with `status`, without a retry hint."""
        with self._lock:
            self._fail_matching.append((text, status))

    def fail_always(self, status: int | None) -> None:
        with self._lock:
            self._fail_always = status

    def settle(self, quiet: float = 0.5, timeout: float = 30.0) -> None:
        """Return once no request is being served and none has begun or finished for `quiet` seconds. A client
        killed mid-run can leave its last request in the socket; the server reads and counts it a moment
        later, so a test that resets the stats right after the kill would count it against the next run."""
        deadline = time.monotonic() + timeout
        seen = -1
        while True:
            with self._lock:
                now = len(self.events)
                busy = sum(1 if kind == "start" else -1 for kind, _, _ in self.events)  # started, not finished
            if now == seen and not busy:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the stub server was still busy after {timeout} s")
            seen = now
            time.sleep(quiet)

    def reset_stats(self) -> None:
        with self._lock:
            self.requests.clear()
            self.events.clear()
            self.request_count = 0
            self.fault_count = 0

    # --- what tests read ----------------------------------------------------------------------------
    def max_in_flight(self) -> int:
        """The most chat requests that were being served at one moment (from `events`)."""
        with self._lock:
            events = sorted(self.events, key=lambda e: (e[2], e[0] == "start"))  # a finish first on a tie
        running = peak = 0
        for kind, _, _ in events:
            running += 1 if kind == "start" else -1
            peak = max(peak, running)
        return peak

    def intervals(self) -> dict[int, tuple[float, float]]:
        """Request number -> (start, finish) times (perf_counter), finished requests only."""
        with self._lock:
            starts = {n: t for kind, n, t in self.events if kind == "start"}
            return {n: (starts[n], t) for kind, n, t in self.events if kind == "finish" and n in starts}

    # --- the handler's bookkeeping ------------------------------------------------------------------
    def _begin(self, body: dict) -> int:
        with self._lock:
            self.requests.append(body)
            self.request_count += 1
            number = self.request_count
            self.events.append(("start", number, time.perf_counter()))
        return number

    def _event(self, kind: str, number: int) -> None:
        with self._lock:
            self.events.append((kind, number, time.perf_counter()))

    def _refused(self, error: APIError) -> None:
        with self._lock:
            self.refusals.append(error)

    def _validate(self, body: dict) -> APIError | None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return APIError(400, "you must provide a model parameter")
        if not self.knows(model):
            return model_not_found(model)
        return check_chat_request(body, reasoning=self.is_reasoning(model), extra_parameters=self.extra_parameters)

    def _fault_for(self, body: dict) -> tuple[int, dict] | None:
        """The fault (status, headers) this valid request gets, if any."""
        default_headers = {"retry-after-ms": str(self.fault_retry_after_ms)}
        with self._lock:
            content = json.dumps(body.get("messages") or [], ensure_ascii=False)
            fault = None
            for text, status in self._fail_matching:
                if json.dumps(text, ensure_ascii=False)[1:-1] in content:
                    fault = (status, {})
                    break
            if fault is None and self._faults:
                status, headers = self._faults.popleft()
                if callable(headers):
                    headers = headers()
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
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="The Bearer key it accepts ('' for any).")
    parser.add_argument("--model", action="append", default=None,
                        help=f"A model id it serves (repeatable; default: {', '.join(DEFAULT_MODELS)}).")
    parser.add_argument("--reject-response-format", action="store_true",
                        help="Answer 400 to requests with response_format, as endpoints without structured outputs do.")
    args = parser.parse_args()
    with StubOpenAIServer(latency=args.latency, port=args.port, api_key=args.api_key or None,
                          models=args.model or DEFAULT_MODELS,
                          reject_response_format=args.reject_response_format) as server:
        print(f"serving {server.base_url} (Ctrl-C to stop)", flush=True)
        block_until_interrupted()


if __name__ == "__main__":
    main()
