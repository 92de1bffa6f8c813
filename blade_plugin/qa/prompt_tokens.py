"""The LLM prompt tokens each evaluation mode / ablation row spends per question: the cost side of "accuracy
against tokens" (issue 29).

Counted offline (llm/tokens.py: tiktoken for an OpenAI model name, else the small model's tokenizer) on the
answer request re-rendered from a saved prediction (its knowledge and passages), so the figure does not depend on
the LLM cache, on a resumed run, or on whether the endpoint reports usage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from .data import QAItem
from .prompts import PromptSet

logger = logging.getLogger(__name__)


def counter_for(client) -> tuple[Callable[[list[dict]], int], str] | None:
    """(count(messages), what counts) for the client's model, or None when no counter loads."""
    from ..llm.tokens import token_counter

    model = getattr(client, "model", None) or (client.identity() or {}).get("model") or ""
    try:
        counter = token_counter(str(model))
    except Exception as err:  # a tokenizer that fails to load must not cost the run its results
        logger.warning("LLM prompt tokens not counted: %s", err)
        return None
    return counter.count, counter.name


def answer_prompt_tokens(items: Sequence[QAItem], rows: Sequence[dict], prompts: PromptSet,
                         count: Callable[[list[dict]], int]) -> list[int]:
    """Prompt tokens of each item's answer request, from its prediction row (`knowledge`, `passages`)."""
    return [count(prompts.answer(item, row.get("knowledge") or "", row.get("passages") or ()))
            for item, row in zip(items, rows)]


def token_summary(counts: Sequence[int], counted_with: str) -> dict:
    """{"mean": per question, "total", "n", "counter"}."""
    n = len(counts)
    return {"mean": round(sum(counts) / n, 1) if n else 0.0, "total": int(sum(counts)), "n": n,
            "counter": counted_with}
