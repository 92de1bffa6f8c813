"""The upstream (black-box) LLM behind `blade-bpo serve`, through the `openai` SDK.

The caller's request body goes out as it came (only `messages` gain the knowledge, `model` may be pinned),
so sampling parameters, tools, stop sequences and any vendor extension reach the upstream untouched. The
SDK does the retries (429, 5xx, timeouts, with backoff); what still fails becomes an `UpstreamError`. The
API key is read from the environment once, never logged, and scrubbed from any upstream message relayed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..extras.urls import redact_url

logger = logging.getLogger(__name__)

# Upstream statuses that are the caller's own mistake (a bad parameter, an unknown model): relayed as they
# came. Everything else (auth of *our* key, rate limits after retries, 5xx, timeouts) is a 502.
CALLER_ERRORS = {400, 404, 409, 413, 415, 422}


@dataclass
class UpstreamConfig:
    base_url: str
    model: str | None = None  # pins the upstream model; None passes the caller's `model` through
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 120.0
    max_retries: int = 3


class UpstreamError(Exception):
    """A failed upstream call: `status` to answer with and an OpenAI-style `error` object."""

    def __init__(self, status: int, error: dict):
        super().__init__(error.get("message", ""))
        self.status = status
        self.error = error


class Upstream:
    """One AsyncOpenAI client for the server's lifetime (create and close it on the serving loop)."""

    def __init__(self, config: UpstreamConfig):
        from openai import AsyncOpenAI

        self.config = config
        self._secret = os.environ.get(config.api_key_env) or ""
        self.client = AsyncOpenAI(base_url=config.base_url, api_key=self._secret or "not-needed",
                                  max_retries=config.max_retries, timeout=config.timeout)

    async def close(self) -> None:
        await self.client.close()

    def scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _arguments(self, payload: dict) -> dict:
        body = dict(payload)
        if self.config.model:
            body["model"] = self.config.model
        arguments = {"model": body.pop("model"), "messages": body.pop("messages")}
        if "stream" in body:  # only when the caller sent it: the body stays exactly the caller's
            arguments["stream"] = body.pop("stream")
        # Everything else goes verbatim into the JSON body: the SDK adds nothing of its own.
        return {**arguments, "extra_body": body}

    @contextlib.asynccontextmanager
    async def open(self, payload: dict) -> AsyncIterator[object]:
        """The upstream's raw HTTP response (an `openai` AsyncAPIResponse, body not yet read) for `payload`.

        Raises UpstreamError when the upstream refuses or fails after the SDK's retries.
        """
        import openai

        try:
            async with self.client.chat.completions.with_streaming_response.create(
                    **self._arguments(payload)) as response:
                yield response
        except openai.APIStatusError as err:
            raise self._status_error(err) from None
        except openai.APIConnectionError as err:  # includes timeouts
            message = f"upstream LLM unreachable at {redact_url(self.config.base_url)}: {err.message}"
            raise UpstreamError(502, {"message": self.scrub(message), "type": "upstream_error", "param": None,
                                      "code": "upstream_unreachable"}) from None

    def _status_error(self, err) -> UpstreamError:
        body = err.body if isinstance(err.body, dict) else {}
        message = str(body.get("message") or err.message)
        if err.status_code in CALLER_ERRORS:
            error = {"message": self.scrub(message), "type": body.get("type") or "invalid_request_error",
                     "param": body.get("param"), "code": body.get("code")}
            return UpstreamError(err.status_code, error)
        logger.warning("upstream LLM answered %d after retries: %s", err.status_code, self.scrub(message))
        return UpstreamError(502, {"message": self.scrub(f"upstream LLM returned {err.status_code}: {message}"),
                                   "type": "upstream_error", "param": None, "code": err.status_code})
