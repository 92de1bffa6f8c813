"""BM25 retrieval per request for `blade-bpo serve --corpus`: on a thread pool of its own (never the event loop,
never the pool that parses requests), each lookup bounded in time.

A lookup that overruns its deadline answers its request with a 503 at once; its thread cannot be interrupted, so
it finishes in the background, and the pool's size bounds how many such threads there can be (the requests
behind them wait in the pool's queue, under the same deadline).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from ..qa.combine_modes import PassageSource
from ..qa.data import QAItem

logger = logging.getLogger(__name__)


class RetrievalTimeout(Exception):
    """A lookup did not finish within its deadline."""


class PassageLookup:
    """`await lookup.passages(item, extra)`: the retriever's passages for `item` (`extra` joins the query)."""

    def __init__(self, retriever: PassageSource, timeout: float, workers: int = 2):
        self.retriever, self.timeout = retriever, timeout
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="blade-retrieval")

    async def passages(self, item: QAItem, extra: str = "") -> list[str]:
        future = asyncio.get_running_loop().run_in_executor(self._pool, self.retriever.texts, item, extra)
        try:
            return await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            logger.warning("a BM25 lookup took longer than --retrieval-timeout %g s (query of %d characters)",
                           self.timeout, len(item.question) + len(extra))
            raise RetrievalTimeout(f"retrieval did not finish within {self.timeout:g} s") from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
