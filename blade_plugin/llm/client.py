"""The black-box LLM client: any OpenAI-compatible endpoint through the `openai` package, asyncio with
bounded concurrency, retries with exponential backoff, a shared SQLite response cache and a usage count.

The API key is read from the environment when the HTTP client is built and is never stored, logged or
made part of a cache key.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import BladeError, LLMError
from ..paths import default_cache_db
from .cache import ResponseCache, cache_key

logger = logging.getLogger(__name__)

# 429 and 5xx are transient; 408 is the server timing out, which counts as a timeout. Every other 4xx is a
# request the endpoint will keep refusing, so retrying it only delays the error.
RETRYABLE_STATUS = {408, 429}


@dataclass
class LLMConfig:
    base_url: str | None = None  # default: $OPENAI_BASE_URL
    model: str | None = None  # default: $BLADE_LLM_MODEL
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_tokens: int = 512
    top_p: float | None = None
    concurrency: int = 8
    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 20.0
    timeout: float = 60.0
    cache_db: Path | None = None  # default: paths.default_cache_db()
    use_cache: bool = True
    backend: Literal["openai", "local", "reader"] = "openai"  # reader: the offline evidence reader (llm/reader.py)
    local_model_dir: str | None = None
    local_batch_size: int = 8

    def resolved_base_url(self) -> str:
        if self.backend == "local":
            return "local:" + str(Path(self.local_model_dir or "").resolve())
        if self.backend == "reader":
            from .reader import READER_VERSION

            return "reader:" + READER_VERSION
        url = self.base_url or os.environ.get("OPENAI_BASE_URL")
        return url or "https://api.openai.com/v1"

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
    retries: int = 0
    failures: int = 0
    seconds: float = 0.0  # summed request latency

    def as_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class _LoopState:
    loop: asyncio.AbstractEventLoop
    client: object
    semaphore: asyncio.Semaphore
    inflight: dict = field(default_factory=dict)  # key -> Future, so duplicate prompts cost one request


class LLMClient:
    """`await acomplete(messages)`, `await acomplete_many(batch)`, or the sync `complete_many(batch)`.

    Safe to use from successive `asyncio.run` calls: the HTTP client is rebuilt per event loop, since
    httpx connection pools cannot outlive the loop that made them.
    """

    def __init__(self, config: LLMConfig):
        self.config = config
        self.base_url = config.resolved_base_url()
        self.model = config.resolved_model()
        self.params = {"temperature": config.temperature, "max_tokens": config.max_tokens}
        if config.top_p is not None:
            self.params["top_p"] = config.top_p
        self.cache = ResponseCache(config.cache_db or default_cache_db()) if config.use_cache else None
        self.usage = Usage()
        self._state: _LoopState | None = None
        self._local = None

    # --- identity and lifecycle -------------------------------------------------------------------
    def identity(self) -> dict:
        """What a result depends on (for progress fingerprints); never includes the key."""
        return {"backend": self.config.backend, "base_url": self.base_url, "model": self.model, **self.params}

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
            from openai import AsyncOpenAI

            api_key = os.environ.get(self.config.api_key_env) or "not-needed"
            client = AsyncOpenAI(base_url=self.base_url, api_key=api_key, max_retries=0,
                                 timeout=self.config.timeout)
            self._state = _LoopState(loop, client, asyncio.Semaphore(max(1, self.config.concurrency)))
        return self._state

    def _key(self, messages: list[dict]) -> str:
        return cache_key(self.base_url, self.model, messages, self.params)

    def _cached(self, key: str) -> str | None:
        if self.cache is None:
            return None
        hit = self.cache.get(key)
        if hit is not None:
            self.usage.cache_hits += 1
        return hit

    def _store(self, key, messages, text, prompt_tokens, completion_tokens) -> None:
        if self.cache is not None:
            self.cache.put(key, self.base_url, self.model, messages, self.params, text, prompt_tokens,
                           completion_tokens)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(self.config.backoff_max, retry_after)
        delay = min(self.config.backoff_max, self.config.backoff_base * 2**attempt)
        return delay * (0.5 + random.random() / 2)  # jitter: retries from many tasks do not arrive together

    async def _request(self, messages: list[dict]) -> tuple[str, int | None, int | None]:
        import openai

        state = self._loop_state()
        attempts = self.config.max_retries + 1
        last = ""
        for attempt in range(attempts):
            started = time.perf_counter()
            retry_after = None
            try:
                self.usage.calls += 1
                response = await state.client.chat.completions.create(model=self.model, messages=messages,
                                                                      **self.params)
                self.usage.seconds += time.perf_counter() - started
                if not response.choices:
                    self.usage.failures += 1
                    raise LLMError(f"LLM response from {self.base_url} (model {self.model}) has no choices")
                text = response.choices[0].message.content or ""
                usage = response.usage
                prompt_tokens = getattr(usage, "prompt_tokens", None) if usage else None
                completion_tokens = getattr(usage, "completion_tokens", None) if usage else None
                self.usage.prompt_tokens += prompt_tokens or 0
                self.usage.completion_tokens += completion_tokens or 0
                return text, prompt_tokens, completion_tokens
            except openai.APIStatusError as err:
                self.usage.seconds += time.perf_counter() - started
                status = err.status_code
                if status not in RETRYABLE_STATUS and status < 500:
                    self.usage.failures += 1
                    raise LLMError(f"LLM request to {self.base_url} (model {self.model}) failed with HTTP {status}: "
                                   f"{_short(err)}; not retried") from None
                last = f"HTTP {status}"
                header = err.response.headers.get("retry-after") if err.response is not None else None
                try:
                    retry_after = float(header) if header is not None else None
                except ValueError:
                    retry_after = None
            except (openai.APITimeoutError, openai.APIConnectionError) as err:
                self.usage.seconds += time.perf_counter() - started
                last = type(err).__name__
            if attempt + 1 < attempts:
                self.usage.retries += 1
                delay = self._backoff(attempt, retry_after)
                logger.warning("LLM %s (%s); retry %d/%d in %.1f s", self.base_url, last, attempt + 1,
                               self.config.max_retries, delay)
                await asyncio.sleep(delay)
        self.usage.failures += 1
        raise LLMError(f"LLM request to {self.base_url} (model {self.model}) failed after {attempts} attempts; "
                       f"last error: {last}")

    # --- public API -------------------------------------------------------------------------------
    async def acomplete(self, messages: list[dict]) -> str:
        if self.config.backend in ("local", "reader"):
            return (await self.acomplete_many([messages]))[0]
        key = self._key(messages)
        hit = self._cached(key)
        if hit is not None:
            return hit
        state = self._loop_state()
        if key in state.inflight:  # the same prompt is already on its way
            return await asyncio.shield(state.inflight[key])
        future = state.loop.create_future()
        state.inflight[key] = future
        try:
            async with state.semaphore:
                text, prompt_tokens, completion_tokens = await self._request(messages)
            self._store(key, messages, text, prompt_tokens, completion_tokens)
            future.set_result(text)
            return text
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            state.inflight.pop(key, None)

    async def acomplete_many(self, batch: list[list[dict]], desc: str | None = None) -> list[str]:
        """Completions in input order; the first failure cancels the rest and is raised."""
        if self.config.backend in ("local", "reader"):
            return await self._local_many(batch)
        bar = None
        if desc:
            from tqdm.auto import tqdm

            # disable=None: no bar unless stderr is a terminal, so CI logs get no carriage-return spam
            bar = tqdm(total=len(batch), desc=desc, unit="req", leave=False, disable=None)

        async def one(messages):
            text = await self.acomplete(messages)
            if bar is not None:
                bar.update(1)
            return text

        tasks = [asyncio.ensure_future(one(m)) for m in batch]
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
