"""Which sampling parameters a chat-completions request carries (`--llm-param-style`).

Chat models take `temperature`, `max_tokens` (and `top_p`). OpenAI's reasoning models (o-series, gpt-5)
refuse `max_tokens` ("Use 'max_completion_tokens' instead"), `top_p` and any temperature but the default,
with a 400. `chat` and `reasoning` pick one set; `auto` starts with `chat` and switches to `reasoning` for the
rest of the run after the endpoint's first such refusal (the client probes with one request, as it does for
`response_format`).
"""

from __future__ import annotations

from typing import Literal

ParamStyle = Literal["auto", "chat", "reasoning"]
PARAM_STYLES: tuple[str, ...] = ("auto", "chat", "reasoning")

# What a reasoning model's 400 names: the parameter it refuses (OpenAI's `param`, or its message's wording).
_REFUSED_PARAMS = ("max_tokens", "temperature", "top_p")
_REFUSAL_CODES = ("unsupported_parameter", "unsupported_value")


def request_params(style: Literal["chat", "reasoning"], temperature: float, max_tokens: int,
                   top_p: float | None) -> dict:
    """The sampling fields of a request in `style` (reasoning: only the completion limit, by its new name)."""
    if style == "reasoning":
        return {"max_completion_tokens": max_tokens}
    params: dict = {"temperature": temperature, "max_tokens": max_tokens}
    if top_p is not None:
        params["top_p"] = top_p
    return params


def refuses_chat_params(err: BaseException) -> bool:
    """Whether `err` (or the HTTP error it was raised from) is a 400 refusing `max_tokens`, `temperature` or
    `top_p` as a reasoning model does."""
    import openai

    seen: set[int] = set()
    node: BaseException | None = err
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, openai.APIStatusError):
            if node.status_code != 400:
                return False
            body = node.body if isinstance(node.body, dict) else {}
            inner = body.get("error") if isinstance(body.get("error"), dict) else body
            param, code = inner.get("param"), inner.get("code")
            message = str(inner.get("message") or node.message)
            if param in _REFUSED_PARAMS and code in _REFUSAL_CODES:
                return True
            return "max_completion_tokens" in message or any(
                f"'{name}'" in message and ("nsupported" in message or "not support" in message)
                for name in _REFUSED_PARAMS)
        node = node.__cause__ or node.__context__
    return False
