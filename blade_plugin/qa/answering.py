"""The BLADE inference step shared by BPO, evaluation, ablation, ad-hoc answering and the server: the small
LM (optionally under a soft prompt) writes knowledge for each question and the black-box LLM answers with it.
`KnowledgeAnswerer` holds the four parts (prompts, LLM client, knowledge writer, soft prompt); every caller
goes through it.

A streaming pipeline: generation runs batch by batch in a worker thread, and each item's LLM request starts
as soon as its batch's knowledge exists, while the next batch is being generated; results are reported per
item as they arrive (`on_record`), so a caller can checkpoint each one. An evaluation costs about one
batched generation pass plus one LLM round-trip, not their sum per batch.

A request that still fails after the client's retries marks its item as an error (scored wrong) instead of
cancelling the others; only more than `max_errors` such items stop the run (`LLMError`).

With a `PassageRetriever` and a `combine` mode (retrieval/combine.py) the corpus passages join in: beside the
knowledge in the LLM's prompt, in the small LM's query, or retrieved with the knowledge as the query.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .answers import answer_response_format, score_answer
from ..extras.constants import GENERATION_BATCH_SIZE
from ..llm.budget import BudgetExceeded
from ..extras.errors import LLMError
from .prompts import PromptSet
from .data import QAItem
from .combine_modes import KNOWLEDGE_AS_QUERY, KNOWLEDGE_FROM_PASSAGES, PASSAGES_AND_KNOWLEDGE, PassageSource

if TYPE_CHECKING:
    import torch

    from ..llm.base import LLMClientProtocol
    from ..small_lm.base import KnowledgeWriter

DEFAULT_MAX_ERROR_FRACTION = 0.05


def resolve_max_errors(max_errors: int | float | None, n_items: int) -> int:
    """The number of failed items a run tolerates: an int is a count (0: stop at the first error); a float
    in (0, 1) a fraction of `n_items`, at least 1; None the default, 5% of the items, at least 1."""
    if max_errors is None:
        max_errors = DEFAULT_MAX_ERROR_FRACTION
    if isinstance(max_errors, float) and not max_errors.is_integer():
        if not 0 < max_errors < 1:
            raise ValueError(f"max_errors fraction must be in (0, 1), got {max_errors}")
        return max(1, math.floor(max_errors * n_items))
    if max_errors < 0:
        raise ValueError(f"max_errors must be >= 0, got {max_errors}")
    return int(max_errors)


class TooManyErrors(LLMError):
    """More items failed than the run tolerates."""


@dataclass
class AnswerRecord:
    id: str
    knowledge: str
    raw: str
    parsed: list[str] | str | None
    correct: bool
    f1: float | None = None
    unparseable: bool = False  # no readable answer in `raw` (scored wrong, counted in metrics)
    error: str | None = None  # the LLM request failed for good: scored wrong, `raw` is ""
    # The combined modes only (retrieval/combine.py); None fields are left out of as_dict, so the rows of the
    # other modes are what they always were.
    passages: list[str] | None = None  # the LLM prompt's passages block (passages+knowledge)
    query_passages: list[str] | None = None  # the passages in the small LM's query (knowledge-from-passages)
    small_knowledge: str | None = None  # the small LM's text when the LLM does not see it (knowledge-as-query)

    def as_dict(self) -> dict:
        optional = ("passages", "query_passages", "small_knowledge")
        return {k: v for k, v in self.__dict__.items() if k not in optional or v is not None}


@dataclass(frozen=True)
class Evidence:
    """What one item's answer request carries besides the question: `knowledge` for the knowledge slot,
    `passages` for the passages block; the rest is recorded only (see AnswerRecord)."""

    knowledge: str
    passages: list[str] | None = None
    query_passages: list[str] | None = None
    small_knowledge: str | None = None

    def record(self, record: AnswerRecord) -> AnswerRecord:
        return replace(record, passages=self.passages, query_passages=self.query_passages,
                       small_knowledge=self.small_knowledge)


@dataclass
class AnswerTimings:
    generate_s: float = 0.0  # summed wall time of small-LM generation batches
    llm_wait_s: float = 0.0  # time spent waiting for the LLM after the last batch was generated
    total_s: float = 0.0
    extra: dict = field(default_factory=dict)


def error_record(item: QAItem, knowledge: str, err: BaseException) -> AnswerRecord:
    return AnswerRecord(item.id, knowledge, "", None, False, None, error=str(err))


def scored_record(item: QAItem, knowledge: str, raw: str) -> AnswerRecord:
    """The record of an answered item; the online and the Batch API paths both build it here."""
    score = score_answer(item, raw)
    parsed = list(score.parsed) if isinstance(score.parsed, tuple) else score.parsed
    return AnswerRecord(item.id, knowledge, raw, parsed, bool(score.correct), score.f1, score.unparseable)


class ErrorBudget:
    """Counts failed items; `charge` raises TooManyErrors once more than `limit` have failed."""

    def __init__(self, limit: int, total: int):
        self.limit, self.total, self.count = limit, total, 0

    def charge(self, err: BaseException) -> None:
        self.count += 1
        if self.count > self.limit:
            raise TooManyErrors(f"{self.count} of {self.total} items failed, more than --max-errors {self.limit}; "
                                f"last error: {err}")


async def answer_items(
    items: list[QAItem],
    prompts: PromptSet,
    client: LLMClientProtocol,
    generator: KnowledgeWriter | None = None,
    soft_prompt: torch.Tensor | None = None,
    batch_size: int = GENERATION_BATCH_SIZE,
    progress=None,
    max_errors: int | float | None = None,
    on_record: Callable[[AnswerRecord], None] | None = None,
    retriever: PassageSource | None = None,
    combine: str | None = None,
) -> tuple[list[AnswerRecord], AnswerTimings]:
    """Knowledge (if `generator`) then LLM answers for `items`; records in input order.

    `combine` (one of retrieval.combine.COMBINED_MODES, with `retriever`) adds corpus passages as that mode
    says; None: the knowledge alone, as always.

    `generator` is a KnowledgeWriter or None for the LLM-only baseline (empty knowledge); `soft_prompt` is a
    Tensor[n_tokens, hidden] or None; `progress` an optional tqdm bar, advanced per item; `on_record` is
    called with each record as soon as it is final (any order). An item whose LLM request fails for good
    gets `error` set and `correct=False`; `LLMError` (TooManyErrors) is raised only when more than
    `max_errors` items failed (see `resolve_max_errors`; None: 5%, at least 1).
    """
    started = time.perf_counter()
    timings = AnswerTimings()
    budget = ErrorBudget(resolve_max_errors(max_errors, len(items)), len(items))
    records: list[AnswerRecord | None] = [None] * len(items)
    tasks: list[asyncio.Task] = []

    if combine is not None and retriever is None:
        raise ValueError(f"combine={combine!r} needs a retriever (a corpus)")

    async def ask(index: int, item: QAItem, evidence: Evidence) -> None:
        knowledge = evidence.knowledge
        try:
            raw = await client.acomplete(prompts.answer(item, knowledge, evidence.passages or ()),
                                      answer_response_format(item.options))
        except BudgetExceeded:
            return  # not recorded: the caller stops after the requests in flight are saved
        except LLMError as err:
            record = error_record(item, knowledge, err)
        else:
            record = scored_record(item, knowledge, raw)
        record = evidence.record(record) if combine is not None else record
        records[index] = record
        if on_record is not None:
            on_record(record)
        if progress is not None:
            progress.update(1)
        if record.error is not None:
            budget.charge(record.error)

    from_passages = combine == KNOWLEDGE_FROM_PASSAGES
    try:
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            query_passages = [retriever.texts(item) for item in chunk] if from_passages else [[] for _ in chunk]
            if generator is None:
                knowledge = [""] * len(chunk)
            else:
                queries = [prompts.small_model_query(item, p) for item, p in zip(chunk, query_passages)]
                t0 = time.perf_counter()
                knowledge = await asyncio.to_thread(generator.generate, queries, soft_prompt)
                timings.generate_s += time.perf_counter() - t0
                knowledge = [k.strip() for k in knowledge]
            evidence = [_evidence(combine, retriever, item, k, p) for item, k, p in zip(chunk, knowledge, query_passages)]
            tasks.extend(asyncio.create_task(ask(start + i, item, e)) for i, (item, e) in enumerate(zip(chunk, evidence)))
            if _spend_closed(client):  # the spend budget is reached: generating more would be wasted
                break
            failed = next((t for t in tasks if t.done() and not t.cancelled() and t.exception()), None)
            if failed is not None:  # the error budget is spent: generating more would be wasted
                failed.result()
        waited_from = time.perf_counter()
        await asyncio.gather(*tasks)
        timings.llm_wait_s = time.perf_counter() - waited_from
        if _spend_closed(client):
            raise BudgetExceeded(f"budget reached ({client.budget.closed})")
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    timings.total_s = time.perf_counter() - started
    return records, timings  # type: ignore[return-value]


def _evidence(combine: str | None, retriever: PassageSource | None, item: QAItem, knowledge: str,
              query_passages: list[str]) -> Evidence:
    """What the LLM sees for one item in mode `combine` (retrieval/combine.py has the table)."""
    if combine is None:
        return Evidence(knowledge)
    if combine == PASSAGES_AND_KNOWLEDGE:
        return Evidence(knowledge, passages=retriever.texts(item))
    if combine == KNOWLEDGE_FROM_PASSAGES:
        return Evidence(knowledge, query_passages=query_passages)
    if combine == KNOWLEDGE_AS_QUERY:
        # the passages go where the plain BM25 row puts them, so the two rows differ in the query alone
        return Evidence("\n".join(retriever.texts(item, extra=knowledge)), small_knowledge=knowledge)
    raise ValueError(f"unknown combine mode {combine!r}")


def _spend_closed(client) -> bool:
    budget = getattr(client, "budget", None)
    return budget is not None and budget.closed is not None


def accuracy(records: list[AnswerRecord]) -> float:
    return sum(r.correct for r in records) / len(records) if records else 0.0


@dataclass(frozen=True)
class KnowledgeAnswerer:
    """BLADE's answering step as one object: `writer` (None: the LLM alone) writes knowledge for each
    question's `small_model_query.j2` text under `soft_prompt` (Tensor[n_tokens, hidden] or None), and
    `client` answers `answer.j2` with it. Variants for the other modes come from `with_soft_prompt`/`llm_only`.
    """

    prompts: PromptSet
    client: LLMClientProtocol | None
    writer: KnowledgeWriter | None = None
    soft_prompt: torch.Tensor | None = None
    batch_size: int = GENERATION_BATCH_SIZE
    retriever: PassageSource | None = None  # the corpus passages of the combined modes
    combine: str | None = None  # one of retrieval.combine.COMBINED_MODES, or None: knowledge alone

    def with_soft_prompt(self, soft_prompt: torch.Tensor | None) -> KnowledgeAnswerer:
        return replace(self, soft_prompt=soft_prompt)

    def llm_only(self) -> KnowledgeAnswerer:
        """The baseline: no knowledge, so no writer and no soft prompt."""
        return replace(self, writer=None, soft_prompt=None, combine=None)

    def combined(self, mode: str | None) -> KnowledgeAnswerer:
        """This answerer in combined mode `mode` (None: knowledge alone); it needs `retriever`."""
        if mode is not None and self.retriever is None:
            raise ValueError(f"mode {mode!r} needs a retriever (a corpus)")
        return replace(self, combine=mode)

    def write_knowledge(self, texts: list[str]) -> list[str]:
        """The writer's knowledge per small-LM input text, unstripped (the server's batcher calls this)."""
        if self.writer is None:
            return [""] * len(texts)
        return self.writer.generate(texts, self.soft_prompt)

    async def answer(self, items: list[QAItem], progress=None, max_errors: int | float | None = None,
                     on_record: Callable[[AnswerRecord], None] | None = None,
                     ) -> tuple[list[AnswerRecord], AnswerTimings]:
        """Knowledge then LLM answers for `items` (see `answer_items`), on the caller's event loop."""
        return await answer_items(items, self.prompts, self.client, self.writer, self.soft_prompt,
                                  batch_size=self.batch_size, progress=progress, max_errors=max_errors,
                                  on_record=on_record, retriever=self.retriever, combine=self.combine)

    def answer_sync(self, items: list[QAItem], **kwargs) -> tuple[list[AnswerRecord], AnswerTimings]:
        """`answer` run on the client's event loop."""
        return self.client.run(self.answer(items, **kwargs))
