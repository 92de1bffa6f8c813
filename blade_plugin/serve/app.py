"""The FastAPI application of `blade-bpo serve`: an OpenAI-compatible endpoint that adds BLADE knowledge.

POST /v1/chat/completions: the last user message's question goes to the small LM (dynamically batched with
concurrent requests), its knowledge enters the prompt through the Jinja templates, and the request goes
upstream with the caller's parameters. The upstream's answer comes back as it was sent, plus
`"blade": {"knowledge", "knowledge_ms", "knowledge_cached"}` (in the first chunk of a stream) and an
`x-blade-knowledge-ms` header. GET /v1/models, /health and /metrics (Prometheus) complete the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..qa.combine_modes import PassageSource
from ..qa.data import QAItem
from ..qa.prompts import PromptSet
from .augment import item_of, question_of, small_model_text, with_evidence
from .batcher import GenerationFailed, KnowledgeBatcher, QueueFull, ShuttingDown
from .connection import cancel_on_disconnect
from .evidence import gather
from .limits import RequestCaps, check_caps, decode_body
from .metrics import CONTENT_TYPE, ServeMetrics
from .modes import KNOWLEDGE, RETRIEVING
from .passages import PassageLookup, RetrievalTimeout
from .protocol import ApiError, parse_chat_request
from .question import ChatQuestion
from .upstream import Upstream, UpstreamConfig, UpstreamError

logger = logging.getLogger(__name__)

ROUTES = ("/v1/chat/completions", "/v1/models", "/health", "/metrics")
_EVENT_END = re.compile(r"\r?\n\r?\n")


@dataclass(frozen=True)
class Prepared:
    """A request checked and made ready off the event loop: what goes upstream and what the small LM reads."""

    payload: dict  # the body without `blade`
    stream: bool
    question: ChatQuestion | None  # None: no knowledge (opted out, or no user question to answer)
    small_text: str = ""
    tokens: int = 0


@dataclass
class ServeSettings:
    served_model_name: str = "blade"
    api_key: str | None = None  # the bearer token callers must send; None: no auth
    max_body_bytes: int = 1 << 20
    max_message_chars: int = 32_000
    max_messages: int = 512
    max_n: int = 8
    max_completion_tokens: int | None = None  # None: the upstream's own limit applies
    max_input_tokens: int | None = None  # the small model's input (templated question) in tokens; None: unchecked
    input_limit_reason: str = ""  # where max_input_tokens comes from, for the 400's message
    max_batch_tokens: int | None = None  # rows x longest prompt of one small-model batch
    body_timeout: float = 30.0  # seconds from the headers to the body's last byte (408 beyond)
    public_metrics: bool = False  # /metrics without the API key
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256
    knowledge_cache_size: int = 1024
    price_input: float | None = None  # US dollars per million upstream prompt tokens (for /metrics)
    price_output: float | None = None
    combine: str = KNOWLEDGE  # what the LLM sees (serve/modes.py); a mode that retrieves needs a retriever
    retrieval_timeout: float = 10.0  # seconds one BM25 lookup may take (503 beyond)


class _MetricsMiddleware:
    """Counts every HTTP request by route and status and times it to its last byte (streams included)."""

    def __init__(self, app, metrics: ServeMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in ROUTES else "other"
        started = time.perf_counter()
        status = {"code": 500}

        async def send_and_watch(message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_and_watch)
        except asyncio.CancelledError:
            # uvicorn cancels the requests still running when --shutdown-timeout has passed; raised on, the
            # cancellation would reach the log as a traceback. The request ends here, with a 503 if it can.
            if status["code"] == 500 and "started" not in status:
                await _send_json(send, 503, {"error": {"message": "the server is shutting down",
                                                       "type": "server_error", "param": None,
                                                       "code": "shutting_down"}})
                status["code"] = 503
            logger.warning("shutdown timeout: a %s request was cut short", route)
        finally:
            self.metrics.in_progress.dec()
            self.metrics.requests.inc(route=route, code=str(status["code"]))
            self.metrics.request_seconds.observe(time.perf_counter() - started, route=route)


def create_app(settings: ServeSettings, generate: Callable[[list[str]], list[str]], prompts: PromptSet,
               chat_prompts: PromptSet, upstream_config: UpstreamConfig,
               metrics: ServeMetrics | None = None, count_tokens: Callable[[str], int] | None = None,
               retriever: PassageSource | None = None) -> FastAPI:
    """The ASGI app. generate: small-LM texts -> knowledge per text (runs on the batcher's worker thread);
    chat_prompts: where `chat_system.j2` comes from (see `augment.with_evidence`); count_tokens: a small-LM
    text's prompt length in tokens (for `max_input_tokens` and the batcher's token bound; thread-safe);
    retriever: the corpus passages of `settings.combine` (retrieval/combine.py `PassageRetriever`).
    `app.state.batcher` is the running batcher (for a shutdown that must not wait for a generation)."""
    if settings.combine in RETRIEVING and retriever is None:
        raise ValueError(f"combine={settings.combine!r} retrieves passages: it needs a retriever (a corpus)")
    metrics = metrics or ServeMetrics()
    caps = RequestCaps(max_message_chars=settings.max_message_chars, max_messages=settings.max_messages,
                       max_n=settings.max_n, max_completion_tokens=settings.max_completion_tokens)
    started = int(time.time())
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher = KnowledgeBatcher(generate, settings.max_batch_size, settings.max_wait_ms / 1000,
                                   settings.max_queue, settings.knowledge_cache_size, metrics,
                                   max_batch_tokens=settings.max_batch_tokens,
                                   # no batch needs bigger attention matrices than one question at the limit
                                   max_batch_attention=(settings.max_input_tokens ** 2
                                                        if settings.max_input_tokens is not None else None))
        batcher.start()
        app.state.batcher = batcher
        lookup = PassageLookup(retriever, settings.retrieval_timeout) if retriever is not None else None
        state.update(batcher=batcher, upstream=Upstream(upstream_config), lookup=lookup)
        try:
            yield
        finally:  # uvicorn gets here after in-flight requests finished or its graceful timeout cancelled them
            await batcher.close()
            await state["upstream"].close()
            if lookup is not None:
                lookup.close()

    app = FastAPI(title="blade-bpo serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_MetricsMiddleware, metrics=metrics)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        metrics.errors.inc(kind=err.kind)
        return JSONResponse(err.body, status_code=err.status, headers=err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        metrics.errors.inc(kind="invalid")
        body = {"error": {"message": f"{request.method} {request.url.path}: {err.detail}",
                          "type": "invalid_request_error", "param": None, "code": None}}
        return JSONResponse(body, status_code=err.status_code, headers=getattr(err, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def client_left(request: Request, err: ClientDisconnect) -> Response:
        # Normal traffic, not a server fault: no traceback, no 500. 499 (nginx's "client closed request")
        # is what /metrics records; nobody is left to read it.
        metrics.errors.inc(kind="client_left")
        logger.debug("client left before its response (%s %s)", request.method, request.url.path)
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> JSONResponse:
        # Starlette re-raises after this, so uvicorn logs the traceback once; the body names no internals.
        metrics.errors.inc(kind="internal")
        body = {"error": {"message": "internal server error (the server log has the details)",
                          "type": "server_error", "param": None, "code": None}}
        return JSONResponse(body, status_code=500)

    def check_auth(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # Constant-time: the comparison must not reveal how much of a guessed key was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise ApiError(401, "invalid or missing API key: send 'Authorization: Bearer <key>'",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}, kind="auth")

    async def read_body(request: Request) -> bytes:
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes",
                           code="request_too_large", kind="too_large", headers={"Connection": "close"})
        chunks, size = [], 0
        try:
            async with asyncio.timeout(settings.body_timeout):  # a trickled body must not hold its socket forever
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:  # chunked bodies declare no length: count as they come
                        raise ApiError(413, f"request body exceeds the limit of {limit} bytes",
                                       code="request_too_large", kind="too_large", headers={"Connection": "close"})
                    chunks.append(chunk)
        except TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {settings.body_timeout:g} s",
                           code="request_timeout", kind="timeout", headers={"Connection": "close"}) from None
        return b"".join(chunks)

    def prepare(raw: bytes) -> Prepared:
        """Decode, check and template a request (linear in its size; runs on a worker thread)."""
        body = decode_body(raw)
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        check_caps(body, caps)
        parsed = parse_chat_request(body)
        payload = {key: value for key, value in body.items() if key != "blade"}
        question = question_of(payload["messages"]) if parsed.blade.knowledge else None
        if question is None:
            return Prepared(payload, parsed.stream, None)
        # Every mode checks the same cap on the question (the BM25 query is made of the same parsed question),
        # so a request one mode accepts, every mode accepts; knowledge-from-passages checks again with passages.
        text = small_model_text(prompts, question)
        index = len(payload["messages"]) - 1
        return Prepared(payload, parsed.stream, question, text, counted(text, index))

    def counted(text: str, index: int, passages: int = 0) -> int:
        """The small-model tokens of `text` (the content of messages[index]); a 400 beyond the input cap."""
        if count_tokens is None:
            return 0
        try:
            tokens = count_tokens(text)
        except Exception:
            logger.warning("the small model's tokenizer refused a request", exc_info=True)
            raise ApiError(400, f"invalid request: messages.{index}.content: the small "
                                f"model's tokenizer cannot encode this text", param=f"messages.{index}.content") from None
        if settings.max_input_tokens is not None and tokens > settings.max_input_tokens:
            held = f" with the {passages} retrieved passages" if passages else ""
            raise ApiError(400, f"messages.{index}.content: the small model's input{held} would be {tokens} tokens; "
                                f"this server accepts at most {settings.max_input_tokens} "
                                f"({settings.input_limit_reason or '--max-input-tokens'}). Shorten the message, "
                                f"or send it without knowledge (blade.knowledge: false).",
                           param=f"messages.{index}.content", code="context_length_exceeded")
        return tokens

    @app.get("/health")
    async def health() -> dict:
        batcher = state["batcher"]
        return {"status": "ok", "small_lm_queue_depth": batcher.depth, "small_lm_generating": batcher.generating}

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        if not settings.public_metrics:
            check_auth(request)
        return Response(metrics.registry.exposition(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        check_auth(request)
        return {"object": "list", "data": [{"id": settings.served_model_name, "object": "model", "created": started,
                                            "owned_by": "blade-plugin"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        check_auth(request)
        raw = await read_body(request)
        prepared = await run_in_threadpool(prepare, raw)
        return await cancel_on_disconnect(request, answer(prepared))

    async def write_knowledge(text: str, tokens: int) -> tuple[str, bool]:
        """The small model's knowledge for `text` through the batcher (its refusals as OpenAI errors)."""
        try:
            return await state["batcher"].knowledge(text, tokens)
        except QueueFull as err:
                raise ApiError(429, str(err), type_="rate_limit_error", code="queue_full",
                               headers={"Retry-After": str(err.retry_after)}, kind="queue_full") from None
        except GenerationFailed:
            raise ApiError(500, "the small model could not write knowledge for this request (the server log "
                                "has the details); retry it without knowledge: blade.knowledge false",
                           type_="server_error", code="small_model_failed", kind="internal") from None
        except ShuttingDown:
            raise ApiError(503, "the server is shutting down", type_="server_error", code="shutting_down",
                           kind="shutdown") from None

    def small_input(item: QAItem, passages: list[str], index: int) -> tuple[str, int]:
        """knowledge-from-passages: the small model's input holding the passages, and its tokens (capped)."""
        text = prompts.small_model_query(item, passages)
        return text, counted(text, index, len(passages))

    async def answer(prepared: Prepared) -> Response:
        payload = prepared.payload
        mode = settings.combine
        blade = {"knowledge": None, "knowledge_ms": 0.0, "knowledge_cached": False}
        headers = {}
        if prepared.question is not None:
            item, index = item_of(prepared.question), len(payload["messages"]) - 1
            try:
                got = await gather(mode, item, prepared.small_text, prepared.tokens, write_knowledge, state["lookup"],
                                   lambda i, p: small_input(i, p, index))
            except RetrievalTimeout as err:
                raise ApiError(503, f"{err}; retry, or send it without knowledge (blade.knowledge: false)",
                               type_="server_error", code="retrieval_timeout", kind="timeout") from None
            if got.knowledge is not None:
                metrics.knowledge_seconds.observe(got.knowledge_s)
            if got.passages is not None:
                metrics.retrieval_seconds.observe(got.retrieval_s)
                headers["x-blade-retrieval-ms"] = f"{got.retrieval_s * 1000:.1f}"
            blade = got.blade_fields(mode)
            knowledge, passages, as_knowledge = got.shown(mode)
            payload = {**payload, "messages": with_evidence(payload["messages"], prepared.question, knowledge,
                                                              passages, prompts, chat_prompts, as_knowledge)}
        headers["x-blade-knowledge-ms"] = f"{blade['knowledge_ms']:.1f}"
        if prepared.stream:
            return await _stream(payload, blade, headers)
        began = time.perf_counter()
        try:
            async with state["upstream"].open(payload) as response:
                data = await response.json()
                status = response.http_response.status_code
        except UpstreamError as err:
            raise _upstream_api_error(err) from None
        except ValueError:  # json.JSONDecodeError, UnicodeDecodeError: the upstream's fault, not ours
            raise ApiError(502, "upstream LLM sent a body that is not JSON", type_="upstream_error",
                           kind="upstream") from None
        metrics.upstream_seconds.observe(time.perf_counter() - began)
        if not isinstance(data, dict):
            raise ApiError(502, "upstream LLM sent a non-object JSON body", type_="upstream_error", kind="upstream")
        _count_usage(data)
        return JSONResponse({**data, "blade": blade}, status_code=status, headers=headers)

    def _upstream_api_error(err: UpstreamError) -> ApiError:
        kind = "upstream" if err.status >= 500 else "invalid"
        error = err.error
        return ApiError(err.status, error["message"], type_=error.get("type") or "upstream_error",
                        param=error.get("param"), code=error.get("code"), kind=kind)

    def _count_usage(data: dict) -> None:
        usage = data.get("usage")
        if isinstance(usage, dict):
            counted = {}
            for kind in ("prompt", "completion"):
                value = usage.get(f"{kind}_tokens")
                if isinstance(value, int) and value >= 0:
                    metrics.upstream_tokens.inc(value, kind=kind)
                    counted[kind] = value
            if settings.price_input is not None and settings.price_output is not None:
                metrics.upstream_cost.inc((counted.get("prompt", 0) * settings.price_input
                                           + counted.get("completion", 0) * settings.price_output) / 1e6)

    async def _stream(payload: dict, blade: dict, headers: dict) -> Response:
        """Relay the upstream's server-sent events as they come (the first chunk gains the `blade` field)."""
        stack = contextlib.AsyncExitStack()
        began = time.perf_counter()
        try:
            response = await stack.enter_async_context(state["upstream"].open(payload))
        except UpstreamError as err:
            await stack.aclose()
            raise _upstream_api_error(err) from None
        metrics.upstream_seconds.observe(time.perf_counter() - began)
        if not response.http_response.headers.get("content-type", "").startswith("text/event-stream"):
            await stack.aclose()
            raise ApiError(502, "upstream LLM ignored stream=true (no text/event-stream response)",
                           type_="upstream_error", kind="upstream")

        async def events() -> AsyncIterator[str]:
            pending, first = "", True
            try:
                async for text in response.iter_text():
                    pending += text
                    while (end := _EVENT_END.search(pending)) is not None:
                        event, pending = pending[:end.start()], pending[end.end():]
                        if first and _is_data_chunk(event):
                            event, first = _with_blade(event, blade), False
                        _track_usage(event)
                        yield f"{event}\n\n"
                if pending.strip():
                    yield f"{pending}\n\n"
            except Exception as err:  # the status line is gone: report as OpenAI does, in-band
                metrics.errors.inc(kind="upstream")
                logger.warning("upstream stream broke: %s", state["upstream"].scrub(str(err)))
                error = {"error": {"message": state["upstream"].scrub(f"upstream stream broke: {err}"),
                                   "type": "upstream_error", "param": None, "code": None}}
                yield f"data: {json.dumps(error)}\n\n"
            finally:
                await stack.aclose()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache"})

    def _track_usage(event: str) -> None:
        if '"usage"' not in event or not _is_data_chunk(event):
            return
        try:
            data = json.loads(event.partition(":")[2])
        except json.JSONDecodeError:
            return
        if isinstance(data, dict):
            _count_usage(data)

    return app


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": data})


def _is_data_chunk(event: str) -> bool:
    return event.startswith("data:") and "\n" not in event and event[5:].strip() != "[DONE]"


def _with_blade(event: str, blade: dict) -> str:
    try:
        data = json.loads(event[5:])
    except json.JSONDecodeError:
        return event
    if not isinstance(data, dict):
        return event
    return "data: " + json.dumps({**data, "blade": blade}, ensure_ascii=False, separators=(",", ":"))
