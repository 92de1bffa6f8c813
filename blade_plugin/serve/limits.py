"""What `blade-bpo serve` refuses before any work: bodies that are not plain JSON (NaN, Infinity, integers of
thousands of digits, nesting thousands deep, unpaired UTF-16 surrogates) and asks beyond the server's caps
(`n`, the number of messages, `max_tokens`, one message's length). Each refusal is an OpenAI-style 400 (413 for
sizes) naming the offending field, so a client's mistake never becomes a 500.

Everything here is linear in the body's size and runs off the event loop (see `app.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .protocol import ApiError
from .question import message_text

MAX_DEPTH = 64  # JSON nesting a chat request needs: tools' JSON schemas nest a few levels, never dozens
MAX_INT_DIGITS = 20  # beyond any count or seed an API takes (2**64 has 20 digits)
COMPLETION_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")


@dataclass(frozen=True)
class RequestCaps:
    max_message_chars: int = 32_000
    max_messages: int = 512
    max_n: int = 8
    max_completion_tokens: int | None = None  # None: the upstream's own limit applies


def _reject_constant(name: str) -> float:
    raise ApiError(400, f"the request body is not valid JSON: {name} is not a JSON number")


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ApiError(400, f"the request body has an integer of {len(text.lstrip('-'))} digits; at most "
                            f"{MAX_INT_DIGITS} are accepted")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e999 parses to infinity, which JSON cannot carry onwards
        raise ApiError(400, f"the request body has the number {text[:40]}, beyond the range of a double")
    return value


def decode_body(raw: bytes) -> object:
    """The JSON value of `raw`; an OpenAI-style 400 for anything a strict JSON parser refuses, for nesting
    deeper than MAX_DEPTH and for strings with unpaired surrogates (which cannot be re-encoded as UTF-8)."""
    try:
        body = json.loads(raw, parse_constant=_reject_constant, parse_int=_parse_int, parse_float=_parse_float)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ApiError(400, f"the request body is not valid JSON ({err})") from None
    except RecursionError:  # the C parser counts its depth and stops at the interpreter's recursion limit
        raise ApiError(400, f"the request body nests JSON deeper than {MAX_DEPTH} levels") from None
    _check_values(body)
    return body


def _check_values(body: object) -> None:
    """Depth and string checks in one iterative walk (no recursion: the input decides the depth)."""
    stack: list[tuple[object, int, str]] = [(body, 1, "")]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise ApiError(400, f"the request body nests JSON deeper than {MAX_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    _check_string(key, path, what="a key")  # before the key can enter a `param` path
                stack.append((item, depth + 1, f"{path}.{key}" if path else str(key)))
        elif isinstance(value, str):
            _check_string(value, path)


def _check_string(text: str, path: str, what: str = "the text") -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ApiError(400, f"invalid request: {path or 'body'}: {what} contains an unpaired UTF-16 surrogate "
                            f"(\\u{ord(text[err.start]):04x} at character {err.start})", param=path or None) from None


def check_caps(body: dict, caps: RequestCaps) -> None:
    """400 for asks beyond the caps (before anything reaches the small model or the upstream); 413 for a
    message longer than max_message_chars."""
    messages = body.get("messages")
    if isinstance(messages, list) and len(messages) > caps.max_messages:
        raise ApiError(400, f"invalid request: messages: {len(messages)} messages; this server accepts at most "
                            f"{caps.max_messages} (--max-messages)", param="messages", code="too_many_messages")
    n = body.get("n")
    if n is not None:
        if not _is_int(n) or n < 1:
            raise ApiError(400, "invalid request: n: must be a positive integer", param="n")
        if n > caps.max_n:
            raise ApiError(400, f"invalid request: n: {n} choices asked; this server allows at most {caps.max_n} "
                                f"(--max-n)", param="n", code="n_too_large")
    for name in COMPLETION_LIMIT_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if not _is_int(value) or value < 1:
            raise ApiError(400, f"invalid request: {name}: must be a positive integer", param=name)
        if caps.max_completion_tokens is not None and value > caps.max_completion_tokens:
            raise ApiError(400, f"invalid request: {name}: {value} tokens asked; this server allows at most "
                                f"{caps.max_completion_tokens} (--max-completion-tokens)", param=name,
                           code="max_tokens_too_large")
    for index, message in enumerate(messages if isinstance(messages, list) else ()):
        if not isinstance(message, dict):
            continue  # the schema check names it
        length = len(message_text(message.get("content")))
        if length > caps.max_message_chars:
            raise ApiError(413, f"messages.{index}.content has {length} characters; the limit is "
                                f"{caps.max_message_chars}", param=f"messages.{index}.content",
                           code="message_too_large", kind="too_large")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
