"""The FastAPI application of `blade-bpo serve`: an OpenAI-compatible endpoint that adds BLADE knowledge.

POST /v1/chat/completions: the last user message's question goes to the small LM (dynamically batched with
concurrent requests), its knowledge enters the prompt through the Jinja templates, and the request goes
upstream with the caller's parameters. The upstream's answer comes back as it was sent, plus
`"blade": {"knowledge", "knowledge_ms", "knowledge_cached"}` (in the first chunk of a stream) and an
`x-blade-knowledge-ms` header. GET /v1/models, /health and /metrics (Prometheus) complete the API.
"""

from __future__ import annotations

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
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..qa.prompts import PromptSet
from .augment import question_of, small_model_text, with_knowledge
from .batcher import KnowledgeBatcher, QueueFull
from .metrics import CONTENT_TYPE, ServeMetrics
from .protocol import ApiError, parse_chat_request
from .question import message_text
from .upstream import Upstream, UpstreamConfig, UpstreamError

logger = logging.getLogger(__name__)

ROUTES = ("/v1/chat/completions", "/v1/models", "/health", "/metrics")
_EVENT_END = re.compile(r"\r?\n\r?\n")


@dataclass
class ServeSettings:
    served_model_name: str = "blade"
    api_key: str | None = None  # the bearer token callers must send; None: no auth
    max_body_bytes: int = 1 << 20
    max_message_chars: int = 32_000
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256
    knowledge_cache_size: int = 1024
    price_input: float | None = None  # US dollars per million upstream prompt tokens (for /metrics)
    price_output: float | None = None


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
                status["code"] = message["status"]
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            self.metrics.in_progress.dec()
            self.metrics.requests.inc(route=route, code=str(status["code"]))
            self.metrics.request_seconds.observe(time.perf_counter() - started, route=route)


def create_app(settings: ServeSettings, generate: Callable[[list[str]], list[str]], prompts: PromptSet,
               chat_prompts: PromptSet, upstream_config: UpstreamConfig,
               metrics: ServeMetrics | None = None) -> FastAPI:
    """The ASGI app. generate: small-LM texts -> knowledge per text (runs on the batcher's worker thread);
    chat_prompts: where `chat_system.j2` comes from (see `augment.with_knowledge`)."""
    metrics = metrics or ServeMetrics()
    started = int(time.time())
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher = KnowledgeBatcher(generate, settings.max_batch_size, settings.max_wait_ms / 1000,
                                   settings.max_queue, settings.knowledge_cache_size, metrics)
        batcher.start()
        state.update(batcher=batcher, upstream=Upstream(upstream_config))
        try:
            yield
        finally:  # uvicorn gets here after in-flight requests have finished (graceful shutdown)
            await batcher.close()
            await state["upstream"].close()

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

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> JSONResponse:
        metrics.errors.inc(kind="internal")
        logger.exception("request failed")
        body = {"error": {"message": f"internal error: {type(err).__name__}: {err}", "type": "server_error",
                          "param": None, "code": None}}
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
                           code="request_too_large", kind="too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:  # chunked bodies declare no length: count as they come
                raise ApiError(413, f"request body exceeds the limit of {limit} bytes", code="request_too_large",
                               kind="too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "small_lm_queue_depth": state["batcher"].depth}

    @app.get("/metrics")
    async def prometheus() -> Response:
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
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ApiError(400, f"the request body is not valid JSON ({err})") from None
        parsed = parse_chat_request(body)
        for index, message in enumerate(body["messages"]):
            length = len(message_text(message.get("content")))
            if length > settings.max_message_chars:
                raise ApiError(413, f"messages.{index}.content has {length} characters; the limit is "
                                    f"{settings.max_message_chars}", param=f"messages.{index}.content",
                               code="message_too_large", kind="too_large")
        payload = {key: value for key, value in body.items() if key != "blade"}
        blade = {"knowledge": None, "knowledge_ms": 0.0, "knowledge_cached": False}
        question = question_of(payload["messages"]) if parsed.blade.knowledge else None
        if question is not None:
            began = time.perf_counter()
            try:
                knowledge, cached = await state["batcher"].knowledge(small_model_text(prompts, question))
            except QueueFull as err:
                raise ApiError(429, str(err), type_="rate_limit_error", code="queue_full",
                               headers={"Retry-After": str(err.retry_after)}, kind="queue_full") from None
            elapsed = time.perf_counter() - began
            metrics.knowledge_seconds.observe(elapsed)
            blade.update(knowledge=knowledge, knowledge_ms=round(elapsed * 1000, 1), knowledge_cached=cached)
            payload["messages"] = with_knowledge(payload["messages"], question, knowledge, prompts, chat_prompts)
        headers = {"x-blade-knowledge-ms": f"{blade['knowledge_ms']:.1f}"}
        if parsed.stream:
            return await _stream(payload, blade, headers)
        began = time.perf_counter()
        try:
            async with state["upstream"].open(payload) as response:
                data = await response.json()
                status = response.http_response.status_code
        except UpstreamError as err:
            raise _upstream_api_error(err) from None
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
