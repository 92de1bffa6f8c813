"""Structured answers (`--answer-format json`): the reply format an answer request asks for, as an OpenAI
`response_format` JSON schema where the endpoint accepts one, and as a plain instruction where it does not.

Only answer requests carry one; knowledge-writing requests stay free text. Whatever comes back is still read
by the text parser (`qa.answers`), which takes a JSON `answer` first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# Statuses an endpoint uses to refuse a request parameter: 400 (OpenAI, vLLM), 422 (FastAPI validation).
_REFUSAL_STATUS = {400, 422}
_REFUSAL_WORDS = ("response_format", "json_schema", "response format", "json schema")


@dataclass(frozen=True)
class ResponseFormat:
    """`schema`: the JSON schema of the reply object; `instruction`: what to append to the prompt instead."""

    schema: dict
    instruction: str
    name: str = "answer"

    def payload(self) -> dict:
        """The `response_format` request field (OpenAI structured outputs, also vLLM and SGLang)."""
        return {"type": "json_schema", "json_schema": {"name": self.name, "strict": True, "schema": self.schema}}


def with_instruction(messages: list[dict], instruction: str) -> list[dict]:
    """A copy of `messages` with `instruction` appended to the last user turn."""
    out = [dict(m) for m in messages]
    for message in reversed(out):
        if message.get("role") == "user":
            message["content"] = f"{message['content']}\n\n{instruction}"
            return out
    return out + [{"role": "user", "content": instruction}]


def is_structured_reply(text: str, response_format: ResponseFormat) -> bool:
    """Whether `text` is a JSON object with every field the schema requires (what structured outputs
    guarantee; a free-text reply means the endpoint ignored `response_format`)."""
    try:
        value = json.loads(text.strip())
    except (json.JSONDecodeError, ValueError):
        return False
    return isinstance(value, dict) and all(name in value for name in response_format.schema.get("required", []))


def rejects_response_format(err: BaseException) -> bool:
    """Whether `err` (or the HTTP error it was raised from) is the endpoint refusing `response_format`.

    The client turns HTTP errors into `LLMError` inside its `except` block, so the `openai.APIStatusError`
    stays reachable as `__cause__`/`__context__` even when raised `from None`.
    """
    import openai

    seen: set[int] = set()
    node: BaseException | None = err
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, openai.APIStatusError) and node.status_code in _REFUSAL_STATUS:
            text = f"{node.message} {node.body}".lower()
            return any(word in text for word in _REFUSAL_WORDS)
        node = node.__cause__ or node.__context__
    text = str(err).lower()  # an error that kept only its message: "... HTTP 400: ... response_format ..."
    return any(f"http {s}" in text for s in _REFUSAL_STATUS) and any(word in text for word in _REFUSAL_WORDS)
