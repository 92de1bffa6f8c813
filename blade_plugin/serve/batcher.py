"""Dynamic batching of small-LM knowledge generation for concurrent requests.

Requests call `await batcher.knowledge(text)`. A dispatcher task on the event loop collects distinct texts
until `max_batch_size` are waiting or `max_wait_s` has passed since the first, then runs ONE batched
`generate(texts)` on a single worker thread (the model is not thread-safe, and on CPU two concurrent
generations only fight over the same cores). The event loop stays free meanwhile, and texts arriving
during a generation form the next batch. An identical text already waiting or generating shares its
result; finished texts go to an LRU cache.

Hostile input must not hurt the others: a batch is also bounded in tokens (rows x longest prompt, the padded
size the model computes, and rows x longest prompt squared, the size of its attention matrices: batched rows
carry a padding mask, and with one PyTorch's CPU attention materialises them), so long prompts run alone
instead of slowing and bloating a batch of short ones;
a batch that fails is retried one text at a time, so a text the model cannot take fails alone; and `close`
never waits for a generation in progress (the server's shutdown timeout has already been spent by then).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .metrics import ServeMetrics

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """More distinct questions are waiting than `max_queue`; retry after `retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"the small-model queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


class GenerationFailed(Exception):
    """The small model could not write knowledge for this text (details are in the server log only)."""


class ShuttingDown(Exception):
    """The server stopped before this text's generation could run."""


class KnowledgeBatcher:
    """Shares small-LM forward passes between concurrent requests. Start and close on the serving loop."""

    def __init__(self, generate: Callable[[list[str]], list[str]], max_batch_size: int = 32,
                 max_wait_s: float = 0.005, max_queue: int = 256, cache_size: int = 1024,
                 metrics: ServeMetrics | None = None, max_batch_tokens: int | None = None,
                 max_batch_attention: int | None = None):
        """generate: texts -> knowledge per text, in order (called on the worker thread only);
        max_batch_tokens: bound on rows x longest prompt of one batch; max_batch_attention: bound on rows x
        longest prompt squared (None: no bound; a text beyond a bound still runs, alone)."""
        if max_batch_size < 1 or max_queue < 1 or max_wait_s < 0 or cache_size < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_wait_s and cache_size >= 0")
        if (max_batch_tokens is not None and max_batch_tokens < 1) or (
                max_batch_attention is not None and max_batch_attention < 1):
            raise ValueError("max_batch_tokens and max_batch_attention must be >= 1 or None")
        self._generate = generate
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.cache_size = cache_size
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_attention = max_batch_attention
        self._tokens: dict[str, int] = {}  # prompt length per waiting text (for the batch token bound)
        self._generating = False  # a generation runs on the worker thread now
        self._closed = False
        self.metrics = metrics or ServeMetrics()
        self._waiting: OrderedDict[str, asyncio.Future] = OrderedDict()  # not yet in a batch, arrival order
        self._running: dict[str, asyncio.Future] = {}  # in the generation now in progress
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._last_batch_s = 1.0

    @property
    def depth(self) -> int:
        """Distinct texts waiting for or in generation."""
        return len(self._waiting) + len(self._running)

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blade-small-lm")
        self._task = asyncio.get_running_loop().create_task(self._dispatch(), name="blade-batcher")

    @property
    def generating(self) -> bool:
        """Whether the worker thread is inside a generation now (a shutdown may have to abandon it)."""
        return self._generating

    async def close(self) -> None:
        """Stop at once: texts still waiting fail with ShuttingDown, and a generation in progress is abandoned
        (its thread is left to finish; the server's graceful timeout, spent before this is called, is what
        in-flight requests get)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for future in [*self._waiting.values(), *self._running.values()]:
            _fail(future, ShuttingDown("the server is shutting down"))
        self._waiting.clear()
        self._running.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=not self._generating, cancel_futures=True)
        if self._generating:
            logger.warning("shutdown: abandoning a small-model generation still running")

    async def knowledge(self, text: str, tokens: int = 0) -> tuple[str, bool]:
        """(knowledge for `text`, whether it came from the cache); tokens: the text's prompt length (for the
        batch token bound). Raises QueueFull when admission fails, GenerationFailed when the model fails on
        this text, ShuttingDown when the server stops first."""
        if self._closed:
            raise ShuttingDown("the server is shutting down")
        cached = self._cache.get(text)
        if cached is not None:
            self._cache.move_to_end(text)
            self.metrics.cache.inc(result="hit")
            return cached, True
        future = self._waiting.get(text) or self._running.get(text)
        if future is not None:
            self.metrics.cache.inc(result="shared")
        else:
            if self.depth >= self.max_queue:
                raise QueueFull(max(1, math.ceil(self._last_batch_s)))
            self.metrics.cache.inc(result="miss")
            future = asyncio.get_running_loop().create_future()
            self._waiting[text] = future
            self._tokens[text] = tokens
            self.metrics.queue_depth.set(self.depth)
            self._wakeup.set()
        # A client that hangs up cancels its own wait, never the generation other requests share.
        return await asyncio.shield(future), False

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._waiting:
                continue
            deadline = loop.time() + self.max_wait_s
            while len(self._waiting) < self.max_batch_size and (remaining := deadline - loop.time()) > 0:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
                self._wakeup.clear()
            texts = self._next_batch()
            for text in texts:
                self._running[text] = self._waiting.pop(text)
                self._tokens.pop(text, None)
            if self._waiting:
                self._wakeup.set()  # the rest forms the next batch straight away
            await self._run_batch(loop, texts)

    def _next_batch(self) -> list[str]:
        """Waiting texts in arrival order, up to max_batch_size, max_batch_tokens and max_batch_attention:
        the first always goes; a text that would overflow a bound waits for a later batch."""
        batch: list[str] = []
        longest = 0
        for text in self._waiting:
            if len(batch) == self.max_batch_size:
                break
            length = max(longest, self._tokens.get(text, 0))
            rows = len(batch) + 1
            if batch and ((self.max_batch_tokens is not None and rows * length > self.max_batch_tokens)
                          or (self.max_batch_attention is not None
                              and rows * length * length > self.max_batch_attention)):
                continue
            batch.append(text)
            longest = length
        return batch

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, texts: list[str]) -> None:
        started = time.perf_counter()
        try:
            outputs = await self._generate_on_worker(loop, texts)
        except Exception:  # one text the model cannot take must not fail the others: each alone, once more
            if len(texts) == 1:
                logger.exception("small-model generation failed for one text (%d characters)", len(texts[0]))
                outputs = [None]
            else:
                logger.exception("small-model generation failed for a batch of %d; retrying each text alone",
                                 len(texts))
                outputs = [await self._generate_alone(loop, text) for text in texts]
        else:
            self._last_batch_s = time.perf_counter() - started
            self.metrics.batch_size.observe(len(texts))
            self.metrics.batch_seconds.observe(self._last_batch_s)
            logger.debug("small-model batch of %d in %.2f s", len(texts), self._last_batch_s)
        for text, knowledge in zip(texts, outputs):
            future = self._running.pop(text, None)
            if future is None or future.done():
                continue
            if knowledge is None:
                _fail(future, GenerationFailed("the small model failed on this request"))
                continue
            if self.cache_size:
                self._cache[text] = knowledge
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            future.set_result(knowledge)
        self.metrics.queue_depth.set(self.depth)

    async def _generate_alone(self, loop: asyncio.AbstractEventLoop, text: str) -> str | None:
        try:
            return (await self._generate_on_worker(loop, [text]))[0]
        except Exception:
            logger.exception("small-model generation failed for one text (%d characters)", len(text))
            return None

    async def _generate_on_worker(self, loop: asyncio.AbstractEventLoop, texts: list[str]) -> list[str]:
        def run() -> list[str]:
            self._generating = True
            try:
                return self._generate(texts)
            finally:
                self._generating = False

        outputs = await loop.run_in_executor(self._executor, run)
        if len(outputs) != len(texts):
            raise RuntimeError(f"small model returned {len(outputs)} texts for {len(texts)} prompts")
        return outputs


def _fail(future: asyncio.Future, error: Exception) -> None:
    """Fail a shared future. Its waiters may all have left (clients that hung up, requests a shutdown
    cancelled): marking the exception as retrieved keeps asyncio from logging it as never retrieved."""
    if not future.done():
        future.set_exception(error)
        future.exception()
