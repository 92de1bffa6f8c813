"""Requests through the OpenAI Batch API: upload a JSONL file, create a batch, poll it, download its output
and error files, and put each answer where the online path puts it (the client's response cache).

Each request's `custom_id` is its cache key, so an answer matches its request whatever order the output
file has, and identical prompts cost one line. The batch id is recorded (`on_submit`) the moment the batch
exists, and a later run resumes that batch instead of paying for a second one: the caller keeps the ids in
its progress file. Answers are cached by the same rules as online ones (an empty, truncated or filtered
completion is returned but not cached); lines in the error file, and lines an expired batch never ran, come
back as errors for the caller to retry.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..extras.errors import LLMError
from ..runs.progress import tqdm

logger = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "expired", "failed", "cancelled")
DEFAULT_POLL_SECONDS = 30.0


@dataclass
class BatchOutcome:
    texts: dict[str, str] = field(default_factory=dict)  # custom_id (cache key) -> completion text
    errors: dict[str, str] = field(default_factory=dict)  # custom_id -> why it failed
    status: str = ""


class BatchRunner:
    """Batches for one LLMClient (its model, parameters, cache, usage and budget)."""

    def __init__(self, client, poll_seconds: float = DEFAULT_POLL_SECONDS, progress_bar: bool = True):
        self.client = client
        self.poll_seconds = poll_seconds
        self.progress_bar = progress_bar
        self._sdk = None

    @property
    def sdk(self):
        if self._sdk is None:
            import os

            from openai import OpenAI

            config = self.client.config
            self._sdk = OpenAI(base_url=self.client.base_url, api_key=os.environ.get(config.api_key_env) or "not-needed",
                               max_retries=config.max_retries, timeout=config.timeout)
        return self._sdk

    def close(self) -> None:
        if self._sdk is not None:
            self._sdk.close()
            self._sdk = None

    def body(self, messages: list[dict], extra: dict | None = None) -> dict:
        return {"model": self.client.model, "messages": messages, **self.client.params, **(extra or {})}

    def submit(self, requests: dict[str, tuple[list[dict], dict | None]], description: str) -> str:
        """Upload the requests (custom_id -> (messages, extra)) and create a batch; returns its id."""
        import openai

        lines = "".join(json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT,
                                    "body": self.body(messages, extra)}, ensure_ascii=False) + "\n"
                        for key, (messages, extra) in requests.items())
        try:
            uploaded = self.sdk.files.create(file=(f"{description}.jsonl", io.BytesIO(lines.encode())),
                                             purpose="batch")
            batch = self.sdk.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h",
                                            metadata={"description": description[:500]})
        except openai.APIError as err:
            raise LLMError(f"Batch API at {self.client.base_url}: could not submit {len(requests)} requests "
                           f"({description}): {err}") from None
        logger.info("submitted batch %s: %d requests (%s)", batch.id, len(requests), description)
        return batch.id

    def wait(self, batch_id: str, description: str, sleep: Callable[[float], None] = time.sleep):
        """Poll until the batch ends, with a progress line; returns the final Batch object."""
        import openai

        bar = tqdm(total=None, desc=f"{description} (batch)", unit="req", disable=None if self.progress_bar else True)
        try:
            while True:
                try:
                    batch = self.sdk.batches.retrieve(batch_id)
                except openai.NotFoundError:
                    raise LLMError(f"batch {batch_id} is unknown at {self.client.base_url} (a progress file from "
                                   "another endpoint?); re-run with --restart") from None
                except openai.APIError as err:
                    raise LLMError(f"Batch API at {self.client.base_url}: cannot read batch {batch_id}: {err}") from None
                counts = batch.request_counts
                if counts is not None and counts.total:
                    bar.total = counts.total
                    bar.n = counts.completed + counts.failed
                bar.set_postfix_str(f"{batch.status}, {counts.failed if counts else 0} failed", refresh=True)
                if batch.status in TERMINAL:
                    return batch
                sleep(self.poll_seconds)
        finally:
            bar.close()

    def collect(self, batch, wanted: dict[str, tuple[list[dict], dict | None]]) -> BatchOutcome:
        """Read a finished batch's files: answers into the cache (and the outcome), failures as errors."""
        outcome = BatchOutcome(status=batch.status)
        if batch.status == "failed":
            details = "; ".join(f"line {e.line}: {e.message}" if e.line else str(e.message)
                                for e in (batch.errors.data if batch.errors and batch.errors.data else []))
            raise LLMError(f"batch {batch.id} failed validation at {self.client.base_url}: {details or 'no details'}")
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            for raw in self.sdk.files.content(file_id).text.splitlines():
                if raw.strip():
                    self._line(json.loads(raw), wanted, outcome)
        for key in wanted:
            if key not in outcome.texts and key not in outcome.errors:
                outcome.errors[key] = f"batch {batch.id} ended {batch.status} before this request ran"
        return outcome

    def _line(self, row: dict, wanted: dict, outcome: BatchOutcome) -> None:
        key = row.get("custom_id")
        if key not in wanted:
            return
        response, error = row.get("response"), row.get("error")
        if error or not response or response.get("status_code") != 200:
            if error:
                outcome.errors[key] = f"{error.get('code')}: {error.get('message')}"
            else:
                inner = (response or {}).get("body", {}).get("error", {})
                outcome.errors[key] = f"HTTP {(response or {}).get('status_code')}: {inner.get('message', '')}"
            return
        body = response["body"]
        client, usage = self.client, body.get("usage") or {}
        prompt_tokens, completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
        client.usage.batch_calls += 1
        client.usage.prompt_tokens += prompt_tokens or 0
        client.usage.completion_tokens += completion_tokens or 0
        if client.prices.known:
            client.usage.cost += client.prices.cost(prompt_tokens or 0, completion_tokens or 0, batch=True)
        client.budget.settle(0.0, prompt_tokens or 0, completion_tokens or 0, batch=True)
        choices = body.get("choices") or []
        if not choices:
            outcome.errors[key] = "response has no choices"
            return
        choice = choices[0]
        text = (choice.get("message") or {}).get("content") or ""
        finish = choice.get("finish_reason")
        if finish == "length":
            client.usage.truncated += 1
        elif finish == "content_filter" or (choice.get("message") or {}).get("refusal"):
            client.usage.filtered += 1
        elif not text.strip():
            client.usage.empty += 1
        else:
            messages, extra = wanted[key]
            client._store(key, messages, text, prompt_tokens, completion_tokens, extra)
        outcome.texts[key] = text
