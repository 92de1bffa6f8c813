"""The BLADE inference step shared by BPO, evaluation and ad-hoc answering: the small LM (optionally under
a soft prompt) writes knowledge for each question and the black-box LLM answers with it.

Generation runs batch by batch in a worker thread while the LLM calls for finished batches are already in
flight, so an evaluation costs about one batched generation pass plus one LLM round-trip, not their sum
per question.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from .qa.answers import answer_response_format, score_answer
from .defaults import GENERATION_BATCH_SIZE
from .qa.prompts import PromptSet
from .qa.data import QAItem


@dataclass
class AnswerRecord:
    id: str
    knowledge: str
    raw: str
    parsed: list[str] | str | None
    correct: bool
    f1: float | None = None
    unparseable: bool = False  # no readable answer in `raw` (scored wrong, counted in metrics)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class AnswerTimings:
    generate_s: float = 0.0  # summed wall time of small-LM generation batches
    llm_wait_s: float = 0.0  # time spent waiting for the LLM after the last batch was generated
    total_s: float = 0.0
    extra: dict = field(default_factory=dict)


async def answer_items(
    items: list[QAItem],
    prompts: PromptSet,
    client,
    generator=None,
    soft_prompt=None,
    batch_size: int = GENERATION_BATCH_SIZE,
    progress=None,
) -> tuple[list[AnswerRecord], AnswerTimings]:
    """Knowledge (if `generator`) then LLM answers for `items`, in input order.

    `generator` is a SoftPromptGenerator or None for the LLM-only baseline (empty knowledge);
    `soft_prompt` is a Tensor[n_tokens, hidden] or None; `progress` an optional tqdm bar, advanced per item.
    """
    started = time.perf_counter()
    timings = AnswerTimings()
    pending: list[tuple[list[QAItem], list[str], asyncio.Task]] = []

    async def ask(chunk: list[QAItem], knowledge: list[str]) -> list[str]:
        raws = await client.acomplete_many([prompts.answer(item, k) for item, k in zip(chunk, knowledge)],
                                           response_formats=[answer_response_format(item.options) for item in chunk])
        if progress is not None:
            progress.update(len(chunk))
        return raws

    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        if generator is None:
            knowledge = [""] * len(chunk)
        else:
            queries = [prompts.small_model_query(item) for item in chunk]
            t0 = time.perf_counter()
            knowledge = await asyncio.to_thread(generator.generate, queries, soft_prompt)
            timings.generate_s += time.perf_counter() - t0
            knowledge = [k.strip() for k in knowledge]
        pending.append((chunk, knowledge, asyncio.create_task(ask(chunk, knowledge))))

    waited_from = time.perf_counter()
    try:
        results = await asyncio.gather(*(task for _, _, task in pending))
    except BaseException:
        for _, _, task in pending:
            task.cancel()
        raise
    timings.llm_wait_s = time.perf_counter() - waited_from

    records = []
    for (chunk, knowledge, _), raws in zip(pending, results):
        for item, k, raw in zip(chunk, knowledge, raws):
            score = score_answer(item, raw)
            parsed = list(score.parsed) if isinstance(score.parsed, tuple) else score.parsed
            records.append(AnswerRecord(item.id, k, raw, parsed, bool(score.correct), score.f1, score.unparseable))
    timings.total_s = time.perf_counter() - started
    return records, timings


def accuracy(records: list[AnswerRecord]) -> float:
    return sum(r.correct for r in records) / len(records) if records else 0.0
