"""How long the small model's input may be: its context minus the knowledge it writes and the soft prompt, or a
smaller limit the operator sets. Past it, a generation costs seconds to minutes and gigabytes on CPU and the
model reads past what it was trained on, so the server refuses the request with a 400 instead."""

from __future__ import annotations

from collections.abc import Callable


def model_context(writer: object) -> int | None:
    """The writer's context length in tokens, when it can tell (hf: the model config; vllm: the servers')."""
    length = getattr(writer, "max_model_len", None)
    if isinstance(length, int) and length > 0:
        return length
    config = getattr(getattr(writer, "model", None), "config", None)
    length = getattr(config, "max_position_embeddings", None)
    return length if isinstance(length, int) and length > 0 else None


def input_limit(writer: object, soft_tokens: int, configured: int) -> tuple[int, str]:
    """(the limit in tokens, where it comes from, for the 400's message)."""
    context = model_context(writer)
    if context is None:
        return configured, "--max-input-tokens"
    room = context - int(getattr(writer, "max_new_tokens", 0)) - soft_tokens
    if room < configured:
        soft = f", {soft_tokens} soft-prompt tokens" if soft_tokens else ""
        return max(room, 1), (f"the small model's context of {context} tokens minus "
                              f"{writer.max_new_tokens} for the knowledge{soft}")
    return configured, "--max-input-tokens"


def token_counter(writer: object, soft_tokens: int) -> Callable[[str], int] | None:
    """text -> the small model's prompt length for it (the chat template included, the soft prompt added);
    None for a writer that cannot encode here."""
    encode = getattr(writer, "encode", None)
    if encode is None:
        return None

    def count(text: str) -> int:
        return len(encode([text])[0]) + soft_tokens

    return count
