"""One phase of requests through the Batch API with resume and retries, shared by `knowledge --batch` and
`evaluate --batch`: the cache first, then this phase's unfinished batches from the progress file (a killed
run's batch is polled, not paid for again), then new batches, then the retries (`online`, or `batch` up to
`rounds` batches). Batch rows in the progress file: `{"type": "batch", "id": "batch:<phase>:<n>", "mode":
"batch", "phase", "batch_id", "requests", "state": "submitted" | "collected", ...}`.
"""

from __future__ import annotations

import logging

from .budget import BudgetExceeded
from ..extras.errors import LLMError
from ..runs.job_log import JobLog as ProgressLog
from .batch import BatchRunner

logger = logging.getLogger(__name__)

RETRY_MODES = ("online", "batch")


def batch_rows(done: dict) -> dict:
    """The batch rows of a loaded progress file, by their id."""
    return {row["id"]: row for row in done.values() if row.get("type") == "batch"}


def run_phase(name: str, requests: dict, client, runner: BatchRunner, log: ProgressLog, batches: dict, retry: str,
           rounds: int) -> dict:
    """Answers by item id (text, an LLMError, or None where the budget stopped it) for `requests`
    (id -> (messages, extra)): the cache, unfinished batches of this phase, new batches, then retries."""
    keys = {item_id: client._key(messages, extra) for item_id, (messages, extra) in requests.items()}
    wanted = {keys[item_id]: requests[item_id] for item_id in requests}
    texts: dict[str, str] = {}
    errors: dict[str, str] = {}
    for key in wanted:
        hit = client._cached(key)
        if hit is not None:
            texts[key] = hit
    # Batches a killed run submitted: poll them instead of paying again.
    for row_id, row in sorted(batches.items()):
        if row.get("phase") == name and row.get("state") != "collected":
            _collect(row, wanted, texts, errors, client, runner, log)
    for round_number in range(rounds):
        pending = {key: wanted[key] for key in wanted if key not in texts and (round_number == 0 or key in errors)}
        if round_number == 0:
            pending = {key: value for key, value in pending.items() if key not in errors}
        if not pending or (round_number > 0 and retry != "batch"):
            break
        admitted = _admit(pending, client)
        if admitted:
            row_id = f"batch:{name}:{sum(1 for k in batches if k.startswith(f'batch:{name}:'))}"
            batch_id = runner.submit(admitted, f"blade-{name}")
            row = {"type": "batch", "id": row_id, "mode": "batch", "phase": name, "batch_id": batch_id, "requests": len(admitted),
                   "reserved": admitted.reserved, "state": "submitted"}
            log.append(row)
            batches[row_id] = row
            for key in admitted:
                errors.pop(key, None)
            _collect(row, wanted, texts, errors, client, runner, log)
        if client.budget.closed is not None:
            break
    if retry == "online":
        for key in [k for k in wanted if k not in texts and k in errors]:
            messages, extra = wanted[key]
            try:
                texts[key] = client.run(_online(client, messages, extra))
                errors.pop(key)
            except BudgetExceeded:
                break
            except LLMError as err:
                errors[key] = f"{errors[key]}; online retry: {err}"
    result = {}
    for item_id, key in keys.items():
        if key in texts:
            result[item_id] = texts[key]
        elif key in errors:
            result[item_id] = LLMError(errors[key])
        else:
            result[item_id] = None
    return result


async def _online(client, messages, extra):
    return await client._acomplete(messages, extra)


class _Admitted(dict):
    reserved: float = 0.0


def _admit(pending: dict, client) -> _Admitted:
    """The requests the spend budget admits (each at its batch-price worst case), in order."""
    admitted = _Admitted()
    budget = client.budget
    for key, (messages, extra) in pending.items():
        if budget.active:
            try:
                prompt = client.count_tokens(messages) if budget.max_cost is not None else 0
                admitted.reserved += budget.reserve(prompt, client.config.max_tokens, batch=True)
            except BudgetExceeded:
                break
        admitted[key] = (messages, extra)
    return admitted


def _collect(row: dict, wanted: dict, texts: dict, errors: dict, client, runner: BatchRunner,
             log: ProgressLog) -> None:
    batch = runner.wait(row["batch_id"], row["phase"])
    outcome = runner.collect(batch, wanted)
    client.budget.settle(row.get("reserved", 0.0), 0, 0)
    texts.update(outcome.texts)
    for key, message in outcome.errors.items():
        if key not in texts:
            errors[key] = message
    failed = len(outcome.errors)
    if failed:
        logger.warning("batch %s (%s) ended %s: %d answered, %d not (%s)", batch.id, row["phase"], batch.status,
                       len(outcome.texts), failed, next(iter(outcome.errors.values())))
    done_row = {**row, "state": "collected", "status": batch.status, "answered": len(outcome.texts), "failed": failed}
    log.append(done_row)
    row.update(done_row)
