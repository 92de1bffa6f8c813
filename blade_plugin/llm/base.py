"""What the stages need from a black-box LLM client: the `LLMClientProtocol` that `llm.client.LLMClient`
(OpenAI-compatible endpoint, the local and reader backends behind it) implements, and that tests' stand-ins
may implement too. Stages, BPO and answering take this type, not the concrete client."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from .structured import ResponseFormat

T = TypeVar("T")


class LLMUsageProtocol(Protocol):
    """Running totals of a client's requests (calls, cache hits, tokens, retries, failures, ...)."""

    calls: int

    def as_dict(self) -> dict: ...


@runtime_checkable
class LLMClientProtocol(Protocol):
    """A chat-completion client with its own event loop, usage counters and an identity for fingerprints."""

    usage: LLMUsageProtocol
    config: Any
    """The client's settings (e.g. `concurrency`, `answer_format`)."""

    async def acomplete(self, messages: list[dict], response_format: ResponseFormat | None = None) -> str:
        """One completion of `messages` (OpenAI chat format); `response_format` marks an answer request."""
        ...

    def run(self, coro: Awaitable[T]) -> T:
        """Run a coroutine on the client's event loop (its connection pool is bound to it)."""
        ...

    def identity(self) -> dict:
        """JSON-able identity: backend, base_url, model and sampling settings (for job fingerprints)."""
        ...
