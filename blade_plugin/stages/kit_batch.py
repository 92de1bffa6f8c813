"""KIT through the OpenAI Batch API (`knowledge --batch`): the same progress file, cache and kit.jsonl as
the online path (stages/kit.py), at the Batch API's half price, in two batches: every knowledge-generation
request, then every consistency check (which needs the knowledge).

Resume: a batch's id is appended to the progress file (`{"type": "batch", "id": "batch:<phase>:<n>", ...}`)
as soon as it exists, and its final state when its files are read; a re-run polls an unfinished batch
instead of submitting the requests again. Answers go into the response cache as they are read, so a kill
after a download loses nothing either. Requests the batch did not answer (its error file, or an expired
batch's unrun lines) are retried online (`retry="online"`, default) or in new batches (`retry="batch"`, up
to `batch_rounds`); those still failing become item errors, which a re-run retries, as online.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..llm.budget import BudgetExceeded
from ..extras.errors import LLMError
from ..llm.batch import BatchRunner
from ..llm.batch_phase import RETRY_MODES, batch_rows, run_phase
from ..qa.answering import ErrorBudget, resolve_max_errors
from ..qa.answers import answer_response_format
from ..qa.data import QAItem
from ..qa.prompts import PromptSet
from ..runs.job_log import JobLog as ProgressLog
from .kit import KitStats, error_row, item_row, progress_path_for, write_kit_outputs
from .kit import kit_fingerprint as job_fingerprint

logger = logging.getLogger(__name__)


def generate_kit_data_batch(
    items: list[QAItem],
    prompts: PromptSet,
    client,
    out_path: Path,
    restart: bool = False,
    progress_bar: bool = True,
    max_errors: int | float | None = None,
    retry: str = "online",
    poll_seconds: float = 30.0,
    batch_rounds: int = 3,
) -> KitStats:
    """As `generate_kit_data`, through the Batch API; writes the same kit.jsonl for the same answers."""
    if retry not in RETRY_MODES:
        raise ValueError(f"retry must be one of {RETRY_MODES}, got {retry!r}")
    if client.config.backend != "openai":
        raise LLMError("--batch needs an OpenAI-compatible endpoint (--llm-backend openai) with the Batch API")
    started = time.perf_counter()
    out_path = Path(out_path)
    progress_path = progress_path_for(out_path)
    log = ProgressLog(progress_path, job_fingerprint(items, prompts, client.identity()), restart=restart)
    done = log.load(key=lambda row: row["id"])
    finished = {item.id for item in items if item.id in done and not done[item.id].get("error")}
    stats = KitStats(total=len(items), resumed=len(finished))
    todo = [item for item in items if item.id not in finished]
    if finished:
        logger.info("Resuming: %d of %d items already done (%s)", len(finished), len(items), progress_path)
    batches = batch_rows(done)
    runner = BatchRunner(client, poll_seconds=poll_seconds, progress_bar=progress_bar)
    json_mode = client.config.answer_format == "json"
    try:
        def generation(item):
            return prompts.knowledge_generation(item), None

        knowledge = run_phase("KIT generation", {item.id: generation(item) for item in todo}, client, runner, log,
                           batches, retry, batch_rounds)
        checks, rows = {}, {}
        for item in todo:
            result = knowledge[item.id]
            if isinstance(result, LLMError):
                rows[item.id] = error_row(item, "", str(result))
            elif result is not None:
                extra = {"response_format": answer_response_format(item.options).payload()} if json_mode else None
                checks[item.id] = (prompts.answer(item, result.strip()), extra)
        answers = run_phase("KIT check", checks, client, runner, log, batches, retry, batch_rounds)
    finally:
        runner.close()
    budget = ErrorBudget(resolve_max_errors(max_errors, len(items)), len(items))
    for item in todo:
        if item.id in rows:
            row = rows[item.id]
        elif item.id not in checks:
            continue  # not asked: the budget stopped the run first
        elif answers[item.id] is None:
            continue
        elif isinstance(answers[item.id], LLMError):
            row = error_row(item, knowledge[item.id].strip(), str(answers[item.id]))
        else:
            row = item_row(item, knowledge[item.id].strip(), answers[item.id])
        log.append(row)
        done[item.id] = row
    if client.budget.closed is not None:
        raise BudgetExceeded(client.budget.stop_message(str(progress_path)))
    for item in todo:
        if done[item.id].get("error"):
            budget.charge(done[item.id]["error"])
    return write_kit_outputs(items, prompts, done, out_path, stats, client, started)


