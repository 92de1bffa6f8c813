"""The request schema `blade-bpo serve` checks before any work, and OpenAI-style error bodies.

Only what the server itself relies on is validated (a model name, a non-empty list of messages with known
roles, the `blade` extension); every other field is the upstream's business and passes through untouched.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

ROLES = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ApiError(Exception):
    """An error answered as OpenAI does: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | int | None = None, headers: dict[str, str] | None = None, kind: str = "invalid"):
        super().__init__(message)
        self.status, self.headers, self.kind = status, headers or {}, kind
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: ROLES
    content: str | list[dict] | None = None


class BladeOptions(BaseModel):
    """The request's `blade` extension object (`extra_body={"blade": {...}}` in the openai SDK)."""

    model_config = ConfigDict(extra="forbid")

    knowledge: StrictBool = Field(True, description="false: send the request upstream without small-LM knowledge")


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool = False
    blade: BladeOptions = Field(default_factory=BladeOptions)


def parse_chat_request(body: object) -> ChatRequest:
    """The validated request; an OpenAI-style 400 naming the first offending field otherwise."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise ApiError(400, f"invalid request: {param}: {first['msg']}" if param else first["msg"],
                       param=param) from None
