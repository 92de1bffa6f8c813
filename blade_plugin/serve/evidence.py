"""One request's evidence in each `serve --combine` mode: the small model's knowledge, the BM25 passages, or both,
gathered in the order the mode needs them (modes.py has the table; qa/answering.py `_evidence` is the same
logic for evaluation and the ablation, which serve reproduces prompt for prompt on a multiple-choice question).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from ..qa.data import QAItem
from .modes import (
    KNOWLEDGE_AS_QUERY,
    KNOWLEDGE_FROM_PASSAGES,
    PASSAGES,
    RETRIEVING,
    SHOWING_PASSAGES,
    WRITING,
)
from .passages import PassageLookup

# (small-model text, its tokens) -> (knowledge, from the cache)
WriteKnowledge = Callable[[str, int], Awaitable[tuple[str, bool]]]
# (item, passages) -> the small model's input holding them and its tokens, checked against the input cap
SmallInput = Callable[[QAItem, list[str]], tuple[str, int]]


@dataclass
class Gathered:
    knowledge: str | None = None  # what the small model wrote (None: it wrote nothing in this mode)
    cached: bool = False
    knowledge_s: float = 0.0
    passages: list[str] | None = None  # what BM25 retrieved (None: no retrieval in this mode)
    retrieval_s: float = 0.0

    def shown(self, mode: str) -> tuple[str, list[str], bool]:
        """(knowledge, passages, passages in the knowledge slot) as the LLM's prompt carries them."""
        passages = list(self.passages or ()) if mode in SHOWING_PASSAGES else []
        knowledge = "" if mode in (PASSAGES, KNOWLEDGE_AS_QUERY) else (self.knowledge or "")
        return knowledge, passages, mode in (PASSAGES, KNOWLEDGE_AS_QUERY)

    def blade_fields(self, mode: str) -> dict:
        """The response's `blade` object (the knowledge mode keeps the three fields it always had)."""
        fields = {"knowledge": self.knowledge, "knowledge_ms": round(self.knowledge_s * 1000, 1),
                  "knowledge_cached": self.cached}
        if mode in RETRIEVING:
            fields.update(combine=mode, passages=self.passages, retrieval_ms=round(self.retrieval_s * 1000, 1))
        return fields


async def gather(mode: str, item: QAItem, text: str, tokens: int, write: WriteKnowledge,
                 lookup: PassageLookup | None, small_input: SmallInput) -> Gathered:
    """The evidence of `item` in `mode`; `text`/`tokens`: the small model's input without passages."""
    got = Gathered()

    async def retrieve(extra: str = "") -> None:
        began = time.perf_counter()
        got.passages = await lookup.passages(item, extra)
        got.retrieval_s += time.perf_counter() - began

    if mode in RETRIEVING and mode != KNOWLEDGE_AS_QUERY:
        await retrieve()
    if mode == KNOWLEDGE_FROM_PASSAGES:  # the small model reads the passages: its input is longer, checked again
        text, tokens = await run_in_threadpool(small_input, item, got.passages)
    if mode in WRITING:
        began = time.perf_counter()
        got.knowledge, got.cached = await write(text, tokens)
        got.knowledge_s = time.perf_counter() - began
    if mode == KNOWLEDGE_AS_QUERY:  # the knowledge expands the BM25 query, as the ablation row does
        await retrieve(got.knowledge.strip())
    return got
