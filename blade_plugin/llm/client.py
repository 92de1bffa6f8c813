"""The black-box LLM client: any OpenAI-compatible endpoint through the `openai` package, asyncio with
bounded concurrency, the SDK's own retries (exponential backoff with jitter; honours `retry-after-ms`,
`retry-after` in seconds or as an HTTP date, `x-should-retry`; retries 408, 409, 429, 5xx, timeouts and
connection errors), a shared SQLite response cache and a usage count.

Reasoning models (o-series, gpt-5) take `max_completion_tokens` and no temperature: `param_style` picks
the request's sampling fields, and `auto` learns them from the endpoint's first 400 (llm/param_style.py).
Cache keys hold the fields actually sent, so `auto` and the explicit style share entries. A 401 or a 404
(wrong key, unknown model, wrong URL) stops the run with one line naming the fix (`LLMSetupError`).

Only complete answers are cached: an empty completion, one cut at `max_tokens` (`finish_reason == "length"`)
or one stopped by a content filter is returned to the caller but counted (`Usage.empty`, `.truncated`,
`.filtered`) and asked again next time.

The API key is read from the environment when the HTTP client is built and is never stored, logged or
made part of a cache key.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from ..extras.errors import BladeError, LLMError, LLMSetupError
from ..extras.paths import default_cache_db
from .cache import ResponseCache, cache_key, normalize_base_url
from .param_style import ParamStyle, refuses_chat_params, request_params
from .structured import ResponseFormat, is_structured_reply, rejects_response_format, with_instruction

logger = logging.getLogger(__name__)

# A header of ours on every request: the SDK re-sends the same headers on a retry, so an httpx event hook
# can count the attempts of each logical request (the SDK itself only logs them). Never sent with the key.
_ATTEMPT_HEADER = "x-blade-request"


def env_base_url() -> str | None:
    """$OPENAI_BASE_URL, the openai SDK's own default endpoint: the one place outside click (which reads it
    through `envvar=` for the CLI) that the library falls back to it, for callers building an LLMConfig."""
    return os.environ.get("OPENAI_BASE_URL") or None


@dataclass
class LLMConfig:
    base_url: str | None = None  # default: $OPENAI_BASE_URL
    model: str | None = None  # default: $BLADE_LLM_MODEL
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_tokens: int = 512
    top_p: float | None = None
    concurrency: int = 8
    max_retries: int = 5  # the openai SDK's retries, with its backoff (0.5 s doubling to 8 s, or retry-after)
    timeout: float = 60.0
    cache_db: Path | None = None  # default: paths.default_cache_db()
    use_cache: bool = True
    backend: Literal["openai", "local", "reader"] = "openai"  # reader: the offline evidence reader (llm/reader.py)
    local_model_dir: str | None = None
    local_batch_size: int = 8
    answer_format: Literal["text", "json"] = "text"  # json: answer requests ask for {"answer": [...]}
    param_style: ParamStyle = "auto"  # chat: temperature + max_tokens; reasoning: max_completion_tokens only
    price_input: float | None = None  # US dollars per million prompt tokens (default: $BLADE_PRICE_INPUT)
    price_output: float | None = None  # ... per million completion tokens (default: $BLADE_PRICE_OUTPUT)
    max_cost: float | None = None  # US dollars this run may spend (see llm/budget.py)
    max_llm_calls: int | None = None  # requests this run may send (cache hits are free)

    def resolved_base_url(self) -> str:
        if self.backend == "local":
            return "local:" + str(Path(self.local_model_dir or "").resolve())
        if self.backend == "reader":
            from .reader import READER_VERSION

            return "reader:" + READER_VERSION
        url = self.base_url or env_base_url()
        return normalize_base_url(url or "https://api.openai.com/v1")

    def resolved_model(self) -> str:
        if self.backend == "local":
            return Path(self.local_model_dir or "local").name
        if self.backend == "reader":
            return "evidence-reader"
        model = self.model or os.environ.get("BLADE_LLM_MODEL")
        if not model:
            raise BladeError("no LLM model given: pass --llm-model or set BLADE_LLM_MODEL")
        return model

    def describe(self) -> str:
        return f"{self.backend}:{self.resolved_model()} @ {self.resolved_base_url()}"


@dataclass
class Usage:
    calls: int = 0  # requests actually made (each retry counts), not cache hits
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0  # attempts after the first, over all requests
    failures: int = 0  # requests that failed for good (after their retries)
    empty: int = 0  # completions with no text (not cached)
    truncated: int = 0  # finish_reason == "length": cut at max_tokens (not cached)
    filtered: int = 0  # finish_reason == "content_filter" or a refusal (not cached)
    json_by_instruction: int = 0  # json-mode answer requests that asked in the prompt (no response_format)
    unstructured: int = 0  # json-mode answers that came back without the schema's JSON (parsed as text)
    seconds: float = 0.0  # summed request latency (retry waits included)
    batch_calls: int = 0  # requests answered through the Batch API (billed at half price)
    cost: float | None = None  # US dollars at the run's prices (None: no prices given); cache hits are free

    def as_dict(self) -> dict:
        return {k: (round(v, 6 if k == "cost" else 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class _LoopState:
    loop: asyncio.AbstractEventLoop
    client: object
    semaphore: asyncio.Semaphore
    inflight: dict = field(default_factory=dict)  # key -> Future, so duplicate prompts cost one request
    attempts: dict = field(default_factory=dict)  # request tag -> HTTP attempts so far
    last_status: dict = field(default_factory=dict)  # request tag -> last HTTP status seen


@dataclass
class _Completion:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    cacheable: bool


class LLMClient:
    """`await acomplete(messages)`, `await acomplete_many(batch)`, or the sync `complete_many(batch)`.

    Safe to use from successive `asyncio.run` calls: the HTTP client is rebuilt per event loop, since
    httpx connection pools cannot outlive the loop that made them.
    """

    def __init__(self, config: LLMConfig):
        self.config = config
        self.base_url = config.resolved_base_url()
        self.model = config.resolved_model()
        # "auto" starts as chat and is settled by the first request (a probe), unless a style is given
        self._style = "reasoning" if config.param_style == "reasoning" else "chat"
        self._style_settled = config.param_style != "auto" or config.backend != "openai"
        self._style_probe: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self.cache = ResponseCache(config.cache_db or default_cache_db()) if config.use_cache else None
        from .budget import Budget, Prices

        self.prices = Prices.from_env(config.price_input, config.price_output)
        self.usage = Usage(cost=0.0 if self.prices.known else None)
        self.budget = Budget(config.max_llm_calls, config.max_cost, self.prices)
        self._counter = None  # the prompt-token counter, built on the first budgeted request
        self._state: _LoopState | None = None
        self._local = None
        self._response_format_ok: bool | None = None  # learnt from the first structured answer request
        self._probe: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._local_queues: dict = {}  # event loop -> [(messages, Future)] waiting for the next local batch

    @staticmethod
    def params_for(config: LLMConfig) -> dict:
        """The sampling parameters every request carries (part of each cache key)."""
        style = "reasoning" if config.param_style == "reasoning" else "chat"  # `auto` starts as chat
        return request_params(style, config.temperature, config.max_tokens, config.top_p)

    # --- identity and lifecycle -------------------------------------------------------------------
    @property
    def params(self) -> dict:
        """The sampling fields every request carries now (they change once if `auto` learns `reasoning`)."""
        return request_params(self._style, self.config.temperature, self.config.max_tokens, self.config.top_p)

    def identity(self) -> dict:
        """What a result depends on (for progress fingerprints); never includes the key.

        The configured settings, not the learnt ones, so a resumed run matches the run it resumes: `auto`
        resolves the same way for the same endpoint and model, which are part of the identity."""
        identity = {"backend": self.config.backend, "base_url": self.base_url, "model": self.model,
                    **request_params("chat", self.config.temperature, self.config.max_tokens, self.config.top_p)}
        if self.config.param_style != "auto":
            identity["param_style"] = self.config.param_style
        if self.config.answer_format != "text":
            identity["answer_format"] = self.config.answer_format
        return identity

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
            self.cache = None
        self._state = None

    # --- plumbing ---------------------------------------------------------------------------------
    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        if self._state is None or self._state.loop is not loop:
            from openai import AsyncOpenAI, DefaultAsyncHttpxClient

            api_key = os.environ.get(self.config.api_key_env) or "not-needed"
            state = _LoopState(loop, None, asyncio.Semaphore(max(1, self.config.concurrency)))
            http_client = DefaultAsyncHttpxClient(event_hooks={"request": [self._hook_request(state)],
                                                               "response": [self._hook_response(state)]})
            state.client = AsyncOpenAI(base_url=self.base_url, api_key=api_key, max_retries=self.config.max_retries,
                                       timeout=self.config.timeout, http_client=http_client)
            self._state = state
        return self._state

    def _hook_request(self, state: _LoopState):
        async def on_request(request) -> None:
            self.usage.calls += 1
            tag = request.headers.get(_ATTEMPT_HEADER)
            attempt = state.attempts.get(tag, 0) + 1
            state.attempts[tag] = attempt
            if attempt > 1:
                self.usage.retries += 1
                logger.warning("LLM %s (%s): retry %d/%d", self.base_url, state.last_status.get(tag, "no response"),
                               attempt - 1, self.config.max_retries)
        return on_request

    def _hook_response(self, state: _LoopState):
        async def on_response(response) -> None:
            if response.status_code >= 400:
                state.last_status[response.request.headers.get(_ATTEMPT_HEADER)] = f"HTTP {response.status_code}"
        return on_response

    def _key(self, messages: list[dict], extra: dict | None = None) -> str:
        return cache_key(self.base_url, self.model, messages, {**self.params, **extra} if extra else self.params)

    def _cached(self, key: str) -> str | None:
        if self.cache is None:
            return None
        hit = self.cache.get(key)
        if hit is not None:
            self.usage.cache_hits += 1
        return hit

    def count_tokens(self, messages: list[dict]) -> int:
        """Prompt tokens of one request, counted offline (llm/tokens.py)."""
        if self._counter is None:
            from .tokens import token_counter

            self._counter = token_counter(self.model)
        return self._counter.count(messages)

    def _reserve(self, messages: list[dict]) -> float | None:
        if not self.budget.active:
            return None
        prompt = self.count_tokens(messages) if self.budget.max_cost is not None else 0
        return self.budget.reserve(prompt, self.config.max_tokens)

    def _settle(self, reserved: float | None, messages: list[dict], completion: _Completion) -> None:
        prompt = completion.prompt_tokens
        completion_tokens = completion.completion_tokens
        if self.prices.known:
            self.usage.cost += self.prices.cost(prompt or 0, completion_tokens or 0)
        if reserved is not None:
            self.budget.settle(reserved, prompt if prompt is not None else self.count_tokens(messages),
                               completion_tokens if completion_tokens is not None else self.config.max_tokens)

    def _store(self, key, messages, text, prompt_tokens, completion_tokens, extra: dict | None = None) -> None:
        if self.cache is not None and text.strip():
            self.cache.put(key, self.base_url, self.model, messages, {**self.params, **(extra or {})}, text,
                           prompt_tokens, completion_tokens)

    async def _request(self, messages: list[dict], extra: dict | None = None) -> _Completion:
        """One logical request (the SDK retries it); LLMError once it has failed for good."""
        import openai

        state = self._loop_state()
        tag = uuid.uuid4().hex
        started = time.perf_counter()
        where = f"LLM request to {self.base_url} (model {self.model})"
        try:
            response = await state.client.chat.completions.create(
                model=self.model, messages=messages, extra_headers={_ATTEMPT_HEADER: tag}, **self.params,
                **(extra or {}))
        except openai.APIStatusError as err:
            self.usage.failures += 1
            if err.status_code in (401, 404):
                raise await self._setup_error(err, state) from None
            attempts = state.attempts.get(tag, 1)
            if attempts > 1:
                raise LLMError(f"{where} failed after {attempts} attempts; last error: HTTP {err.status_code}: "
                               f"{_short(err)}") from None
            raise LLMError(f"{where} failed with HTTP {err.status_code}: {_short(err)}; not retried") from None
        except (openai.APITimeoutError, openai.APIConnectionError) as err:
            self.usage.failures += 1
            raise LLMError(f"{where} failed after {state.attempts.get(tag, 1)} attempts; last error: "
                           f"{type(err).__name__}") from None
        finally:
            self.usage.seconds += time.perf_counter() - started
            state.attempts.pop(tag, None)
            state.last_status.pop(tag, None)
        if not response.choices:
            self.usage.failures += 1
            raise LLMError(f"LLM response from {self.base_url} (model {self.model}) has no choices")
        choice = response.choices[0]
        text = choice.message.content or ""
        usage = response.usage
        prompt_tokens = getattr(usage, "prompt_tokens", None) if usage else None
        completion_tokens = getattr(usage, "completion_tokens", None) if usage else None
        self.usage.prompt_tokens += prompt_tokens or 0
        self.usage.completion_tokens += completion_tokens or 0
        cacheable = False
        if choice.finish_reason == "length":
            self.usage.truncated += 1
        elif choice.finish_reason == "content_filter" or getattr(choice.message, "refusal", None):
            self.usage.filtered += 1
        elif not text.strip():
            self.usage.empty += 1
        else:
            cacheable = True
        if not cacheable:
            logger.debug("LLM %s: incomplete answer (finish_reason %s, %d chars): not cached", self.base_url,
                         choice.finish_reason, len(text))
        return _Completion(text, prompt_tokens, completion_tokens, cacheable)

    async def _setup_error(self, err, state: _LoopState) -> LLMSetupError:
        """One line naming the fix for a 401 (the key) or a 404 (the model, or the URL)."""
        env = self.config.api_key_env
        if err.status_code == 401:
            if not os.environ.get(env):
                return LLMSetupError(f"{self.base_url} wants an API key (HTTP 401) and ${env} is not set: export "
                                     f"{env}=<your key>, or name the variable holding it with --llm-api-key-env")
            return LLMSetupError(f"{env} was rejected by {self.base_url} (HTTP 401: {_short(err)}); set {env} to "
                                 "a key valid for this endpoint, or name another variable with --llm-api-key-env")
        body = err.body if isinstance(err.body, dict) else {}
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        if inner.get("code") == "model_not_found" or "model" in str(inner.get("message") or err.message).lower():
            try:
                listed = [m.id async for m in state.client.models.list()]
            except Exception as list_err:  # noqa: BLE001 - the list is a hint; the 404 is the error
                listed_text = f"GET {self.base_url}/models failed too ({type(list_err).__name__})"
            else:
                listed_text = f"GET {self.base_url}/models lists: {', '.join(listed[:20]) or '(nothing)'}"
                if len(listed) > 20:
                    listed_text += f" and {len(listed) - 20} more"
            return LLMSetupError(f"model '{self.model}' not found at {self.base_url} (HTTP 404); {listed_text}; pass "
                                 "one with --llm-model or set BLADE_LLM_MODEL")
        return LLMSetupError(f"{self.base_url}/chat/completions not found (HTTP 404: {_short(err)}); --llm-base-url "
                             "or OPENAI_BASE_URL must be the API root the OpenAI paths hang off (e.g. "
                             "http://127.0.0.1:8000/v1)")

    # --- sampling parameters (--llm-param-style) ------------------------------------------------------
    def _lock_for(self, attr: str) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        held = getattr(self, attr)
        if held is None or held[0] is not loop:
            held = (loop, asyncio.Lock())
            setattr(self, attr, held)
        return held[1]

    async def _acomplete(self, messages: list[dict], extra: dict | None = None) -> str:
        """A completion in the settled parameter style. Under `auto`, the first request not in the cache is a
        probe the others wait for: a reasoning model's 400 switches this client to `reasoning` for good and
        the request goes again (its cache key changes with the fields it carries)."""
        if self._style_settled:
            return await self._send(messages, extra)
        hit = self._cached(self._key(messages, extra))
        if hit is not None:
            return hit
        async with self._lock_for("_style_probe"):
            if not self._style_settled:
                try:
                    text = await self._send(messages, extra)
                except LLMError as err:
                    if not refuses_chat_params(err):
                        raise
                    self._style, self._style_settled = "reasoning", True
                    logger.warning("%s (model %s) refuses max_tokens/temperature as a reasoning model does "
                                   "(%s): sending max_completion_tokens and no temperature from now on "
                                   "(--llm-param-style reasoning skips this probe)", self.base_url, self.model,
                                   _short(err.__context__ or err))
                else:
                    self._style_settled = True
                    return text
        return await self._send(messages, extra)

    # --- structured answers (--answer-format json) ----------------------------------------------------
    async def _acomplete_structured(self, messages: list[dict], response_format: ResponseFormat) -> str:
        """An answer request in json mode: `response_format` while the endpoint takes it; after its first
        refusal (400/422 naming response_format) this client asks in the prompt instead, for good. An endpoint
        that takes the field but answers free text (`llamafactory-cli api` drops it) is caught the same way:
        its first reply is not the schema's JSON, so the question goes again with the instruction.
        `usage.json_by_instruction` and `usage.unstructured` tell which way the answers came."""
        extra = {"response_format": response_format.payload()}
        if self._response_format_ok is None:
            # The first structured request is a probe: the others wait for its verdict rather than all
            # collecting the same 400 at once.
            async with self._lock_for("_probe"):
                if self._response_format_ok is None:
                    try:
                        text = await self._acomplete(messages, extra)
                    except LLMError as err:
                        if not rejects_response_format(err):
                            raise
                        self._response_format_ok = False
                        logger.warning("%s (model %s) refuses response_format with a JSON schema; asking for "
                                       "JSON in the prompt instead", self.base_url, self.model)
                    else:
                        if is_structured_reply(text, response_format):
                            self._response_format_ok = True
                            return text
                        self._response_format_ok = False
                        self.usage.unstructured += 1
                        logger.warning("%s (model %s) took response_format but answered without the schema's JSON "
                                       "(%r): it ignores structured outputs; asking for JSON in the prompt instead",
                                       self.base_url, self.model, text[:60])
        if self._response_format_ok:
            text = await self._acomplete(messages, extra)
        else:
            self.usage.json_by_instruction += 1
            text = await self._acomplete(with_instruction(messages, response_format.instruction))
        if not is_structured_reply(text, response_format):
            self.usage.unstructured += 1
        return text

    def _local_messages(self, batch: list[list[dict]], response_formats) -> list[list[dict]]:
        """The local backend has no response_format: in json mode its answer prompts carry the instruction."""
        if self.config.answer_format != "json" or response_formats is None:
            return batch
        return [with_instruction(m, f.instruction) if f is not None else m for m, f in zip(batch, response_formats)]

    # --- public API -------------------------------------------------------------------------------
    async def acomplete(self, messages: list[dict], response_format: ResponseFormat | None = None) -> str:
        """One completion. `response_format` marks an answer request: in `answer_format="json"` it asks for
        that JSON reply; in text mode it is ignored."""
        if self.config.backend in ("local", "reader"):
            return await self._local_one(self._local_messages([messages], [response_format])[0])
        if response_format is not None and self.config.answer_format == "json":
            return await self._acomplete_structured(messages, response_format)
        return await self._acomplete(messages)

    async def _send(self, messages: list[dict], extra: dict | None = None) -> str:
        key = self._key(messages, extra)
        hit = self._cached(key)
        if hit is not None:
            return hit
        state = self._loop_state()
        if key in state.inflight:  # the same prompt is already on its way
            return await asyncio.shield(state.inflight[key])
        future = state.loop.create_future()
        state.inflight[key] = future
        reserved = None
        try:
            reserved = self._reserve(messages)
            async with state.semaphore:
                completion = await self._request(messages, extra)
            self._settle(reserved, messages, completion)
            reserved = None
            if completion.cacheable:
                self._store(key, messages, completion.text, completion.prompt_tokens, completion.completion_tokens,
                            extra)
            future.set_result(completion.text)
            return completion.text
        except BaseException as err:
            if reserved is not None:  # a failed request is not billed
                self.budget.settle(reserved, 0, 0)
            future.set_exception(err)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            state.inflight.pop(key, None)

    async def acomplete_many(self, batch: list[list[dict]], desc: str | None = None,
                             response_formats: list[ResponseFormat | None] | None = None) -> list[str]:
        """Completions in input order; the first failure cancels the rest and is raised.
        `response_formats` (one per request, or None) marks answer requests, as in `acomplete`."""
        if self.config.backend in ("local", "reader"):
            return await self._local_many(self._local_messages(batch, response_formats))
        bar = None
        if desc:
            from tqdm.auto import tqdm

            # disable=None: no bar unless stderr is a terminal, so CI logs get no carriage-return spam
            bar = tqdm(total=len(batch), desc=desc, unit="req", leave=False, disable=None)

        async def one(messages, response_format):
            text = await self.acomplete(messages, response_format)
            if bar is not None:
                bar.update(1)
            return text

        formats = response_formats if response_formats is not None else [None] * len(batch)
        tasks = [asyncio.ensure_future(one(m, f)) for m, f in zip(batch, formats)]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            if bar is not None:
                bar.close()

    def complete_many(self, batch: list[list[dict]], desc: str | None = None) -> list[str]:
        return self.run(self.acomplete_many(batch, desc))

    def run(self, coro):
        """`asyncio.run(coro)`, closing this loop's HTTP client before the loop ends (an unclosed async
        client would otherwise try to close itself later on a dead loop)."""

        async def main():
            try:
                return await coro
            finally:
                await self.aclose_http()

        return asyncio.run(main())

    async def aclose_http(self) -> None:
        state = self._state
        if state is not None and state.loop is asyncio.get_running_loop():
            self._state = None
            await state.client.close()

    async def _local_one(self, messages: list[dict]) -> str:
        """One local completion, batched with every other request made in the same event-loop tick, so
        per-item pipelines (KIT, evaluation) still feed the local model whole batches."""
        loop = asyncio.get_running_loop()
        queue = self._local_queues.get(loop)
        if queue is None:
            queue = self._local_queues[loop] = []
        future = loop.create_future()
        queue.append((messages, future))
        if len(queue) == 1:  # the first request of a tick schedules the batch that serves them all
            loop.call_soon(lambda: asyncio.ensure_future(self._local_flush(loop)))
        return await future

    async def _local_flush(self, loop) -> None:
        batch = self._local_queues.pop(loop, [])
        if not batch:
            return
        try:
            texts = await self._local_many([messages for messages, _ in batch])
        except BaseException as err:  # noqa: BLE001 - handed to every waiter, which re-raises it
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return  # the waiters re-raise it
        for (_, future), text in zip(batch, texts):
            if not future.done():
                future.set_result(text)

    async def _local_many(self, batch: list[list[dict]]) -> list[str]:
        if self._local is None and self.config.backend == "reader":
            from .reader import EvidenceReader

            self._local = EvidenceReader()
        if self._local is None:
            from .local import LocalChatBackend

            self._local = LocalChatBackend(self.config.local_model_dir, self.config.max_tokens,
                                           self.config.local_batch_size)
        results: list[str | None] = []
        todo: dict[str, tuple[int, list[dict]]] = {}
        for messages in batch:
            key = self._key(messages)
            hit = self._cached(key)
            results.append(hit)
            if hit is None and key not in todo:
                todo[key] = (len(results) - 1, messages)
        if todo:
            started = time.perf_counter()
            keys = list(todo)
            generations = await asyncio.to_thread(self._local.generate, [todo[k][1] for k in keys])
            self.usage.seconds += time.perf_counter() - started
            for key, gen in zip(keys, generations):
                self.usage.calls += 1
                if not gen.text.strip():
                    self.usage.empty += 1
                self.usage.prompt_tokens += gen.prompt_tokens
                self.usage.completion_tokens += gen.completion_tokens
                self._store(key, todo[key][1], gen.text, gen.prompt_tokens, gen.completion_tokens)
            texts = dict(zip(keys, (g.text for g in generations)))
            results = [r if r is not None else texts[self._key(m)] for r, m in zip(results, batch)]
        return results  # type: ignore[return-value]


def _short(err) -> str:
    """The endpoint's own error message, on one line (openai puts the parsed `error` object in `.body`)."""
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error")
        message = inner.get("message") if isinstance(inner, dict) else body.get("message")
        if message:
            return " ".join(str(message).split())[:200]
    return " ".join(str(err).split())[:200]
