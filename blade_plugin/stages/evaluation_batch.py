"""`evaluate --batch`: the evaluation's LLM answer requests through the OpenAI Batch API, at half price; the
small LM still writes the knowledge locally, first, for every mode. Every mode's answer requests go into one
phase ("evaluate"), so a run waits for one batch (up to 24 h), not one per mode.

Everything else is the online path's (stages/evaluation.py): the same progress file (the batch rows sit
beside the predictions, `{"type": "batch", "mode": "batch", ...}`, see llm/batch_phase.py), the same response
cache and the same records (`scored_record`), so predictions.jsonl is byte-identical to an online run's and
either path resumes the other's progress. A killed run's batch is polled by the re-run, not paid for again:
its requests are rebuilt from the same items and the same (deterministic) knowledge, so they have the same
cache keys. Lines a batch did not answer are retried online or in new batches (`retry`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..extras.errors import LLMError
from ..llm.batch import DEFAULT_POLL_SECONDS, BatchRunner
from ..llm.batch_phase import RETRY_MODES, batch_rows, run_phase
from ..llm.budget import BudgetExceeded
from ..qa.answering import AnswerRecord, ErrorBudget, KnowledgeAnswerer, error_record, scored_record
from ..qa.answers import answer_response_format
from ..qa.data import QAItem
from ..runs.job_log import JobLog
from ..runs.progress import tqdm

logger = logging.getLogger(__name__)

PHASE = "evaluate"
BATCH_ROUNDS = 3  # --batch-retry batch: new batches for the unanswered lines, at most this many in all


@dataclass(frozen=True)
class BatchSettings:
    retry: str = "online"  # lines a batch did not answer: "online" or "batch" (see llm/batch_phase.py)
    poll_seconds: float = DEFAULT_POLL_SECONDS

    def __post_init__(self) -> None:
        if self.retry not in RETRY_MODES:
            raise ValueError(f"retry must be one of {RETRY_MODES}, got {self.retry!r}")


def answer_modes_batch(items: list[QAItem], by_mode: dict[str, KnowledgeAnswerer], modes: tuple[str, ...],
                       finished: set, done: dict, log: JobLog, on_record: Callable[[str], Callable[[AnswerRecord], None]],
                       max_errors: int, settings: BatchSettings, progress_path: str) -> None:
    """Answer every unfinished (mode, item) through the Batch API, reporting each record to `on_record(mode)`.

    Raises BudgetExceeded (after saving what was answered) when the spend budget stopped the run, and
    TooManyErrors when more than `max_errors` items of one mode failed, as the online path does."""
    client = next(iter(by_mode.values())).client
    if client.config.backend != "openai":
        raise LLMError("--batch needs an OpenAI-compatible endpoint (--llm-backend openai) with the Batch API")
    json_mode = client.config.answer_format == "json"
    todo = {mode: [item for item in items if (mode, item.id) not in finished] for mode in modes}
    knowledge = {mode: _knowledge(by_mode[mode], todo[mode], mode) for mode in modes}
    requests: dict[str, tuple[list[dict], dict | None]] = {}
    for mode in modes:
        prompts = by_mode[mode].prompts
        for item, text in zip(todo[mode], knowledge[mode]):
            # The online path's request exactly (qa/answering.py `ask`), so both share cache keys.
            extra = {"response_format": answer_response_format(item.options).payload()} if json_mode else None
            requests[_request_id(mode, item.id)] = (prompts.answer(item, text), extra)
    runner = BatchRunner(client, poll_seconds=settings.poll_seconds)
    try:
        answers = run_phase(PHASE, requests, client, runner, log, batch_rows(done), settings.retry, BATCH_ROUNDS)
    finally:
        runner.close()
    for mode in modes:
        budget = ErrorBudget(max_errors, len(todo[mode]))
        failures = []
        for item, text in zip(todo[mode], knowledge[mode]):
            answer = answers[_request_id(mode, item.id)]
            if answer is None:
                continue  # not asked: the spend budget stopped the run first
            record = error_record(item, text, answer) if isinstance(answer, LLMError) else \
                scored_record(item, text, answer)
            on_record(mode)(record)
            if record.error is not None:
                failures.append(record.error)
        if client.budget.closed is None:
            for error in failures:
                budget.charge(error)
    if client.budget.closed is not None:
        raise BudgetExceeded(client.budget.stop_message(progress_path))


def _request_id(mode: str, item_id: str) -> str:
    return f"{mode}\t{item_id}"


def _knowledge(answerer: KnowledgeAnswerer, items: list[QAItem], mode: str) -> list[str]:
    """The small LM's knowledge for `items` in the answerer's batches, stripped as the online path strips it."""
    if answerer.writer is None or not items:
        return [""] * len(items)
    out: list[str] = []
    with tqdm(total=len(items), desc=f"knowledge [{mode}]", unit="q", disable=None) as bar:
        for start in range(0, len(items), answerer.batch_size):
            chunk = items[start:start + answerer.batch_size]
            out.extend(k.strip() for k in answerer.write_knowledge([answerer.prompts.small_model_query(i) for i in chunk]))
            bar.update(len(chunk))
    return out
