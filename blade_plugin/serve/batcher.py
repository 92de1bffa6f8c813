"""Dynamic batching of small-LM knowledge generation for concurrent requests.

Requests call `await batcher.knowledge(text)`. A dispatcher task on the event loop collects distinct texts
until `max_batch_size` are waiting or `max_wait_s` has passed since the first, then runs ONE batched
`generate(texts)` on a single worker thread (the model is not thread-safe, and on CPU two concurrent
generations only fight over the same cores). The event loop stays free meanwhile, and texts arriving
during a generation form the next batch. An identical text already waiting or generating shares its
result; finished texts go to an LRU cache.
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


class KnowledgeBatcher:
    """Shares small-LM forward passes between concurrent requests. Start and close on the serving loop."""

    def __init__(self, generate: Callable[[list[str]], list[str]], max_batch_size: int = 32,
                 max_wait_s: float = 0.005, max_queue: int = 256, cache_size: int = 1024,
                 metrics: ServeMetrics | None = None):
        """generate: texts -> knowledge per text, in order (called on the worker thread only)."""
        if max_batch_size < 1 or max_queue < 1 or max_wait_s < 0 or cache_size < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_wait_s and cache_size >= 0")
        self._generate = generate
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.cache_size = cache_size
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

    async def close(self) -> None:
        """Finish what is queued (a graceful shutdown has already let in-flight requests end), then stop."""
        while self.depth and self._task is not None and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def knowledge(self, text: str) -> tuple[str, bool]:
        """(knowledge for `text`, whether it came from the cache). Raises QueueFull when admission fails."""
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
            texts = list(self._waiting)[:self.max_batch_size]
            for text in texts:
                self._running[text] = self._waiting.pop(text)
            if self._waiting:
                self._wakeup.set()  # the rest forms the next batch straight away
            await self._run_batch(loop, texts)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, texts: list[str]) -> None:
        started = time.perf_counter()
        try:
            outputs = await loop.run_in_executor(self._executor, self._generate, texts)
            if len(outputs) != len(texts):
                raise RuntimeError(f"small model returned {len(outputs)} texts for {len(texts)} prompts")
        except Exception as err:  # every waiting request gets the error (a 500), the server keeps serving
            logger.exception("small-model generation failed for a batch of %d", len(texts))
            for text in texts:
                future = self._running.pop(text)
                if not future.done():
                    future.set_exception(err)
            self.metrics.queue_depth.set(self.depth)
            return
        self._last_batch_s = time.perf_counter() - started
        self.metrics.batch_size.observe(len(texts))
        self.metrics.batch_seconds.observe(self._last_batch_s)
        for text, knowledge in zip(texts, outputs):
            future = self._running.pop(text)
            if self.cache_size:
                self._cache[text] = knowledge
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            if not future.done():
                future.set_result(knowledge)
        self.metrics.queue_depth.set(self.depth)
        logger.debug("small-model batch of %d in %.2f s", len(texts), self._last_batch_s)
