"""The names of the three modes that combine BM25 passages with the small model's knowledge (issue 29), and what
a passages source must offer the answering step. The retrieval itself lives in retrieval/combine.py, which
depends on qa/ (items, prompts): the names live here so qa/answering.py does not depend back on it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .data import QAItem

PASSAGES_AND_KNOWLEDGE = "passages+knowledge"
KNOWLEDGE_FROM_PASSAGES = "knowledge-from-passages"
KNOWLEDGE_AS_QUERY = "knowledge-as-query"
COMBINED_MODES = (PASSAGES_AND_KNOWLEDGE, KNOWLEDGE_FROM_PASSAGES, KNOWLEDGE_AS_QUERY)
COMBINED_TITLES = {
    PASSAGES_AND_KNOWLEDGE: "LLM + BM25 passages + small-LM knowledge",
    KNOWLEDGE_FROM_PASSAGES: "LLM + small-LM knowledge from BM25 passages",
    KNOWLEDGE_AS_QUERY: "LLM + BM25 passages (knowledge-expanded query)",
}


class PassageSource(Protocol):
    """retrieval.combine.PassageRetriever as the answering step uses it."""

    def texts(self, item: QAItem, extra: str = "") -> list[str]:
        """The passages' text for `item`, best first; `extra` joins the query (knowledge-as-query)."""
        ...


def evidence_text(knowledge: str, passages: Sequence[str] | None) -> str:
    """Everything the LLM was shown as evidence: the knowledge and the passages block (for knowledge support)."""
    return "\n".join([knowledge, *passages]) if passages else knowledge
