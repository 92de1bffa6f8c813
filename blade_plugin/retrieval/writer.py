"""A KnowledgeWriter that retrieves instead of generating: the ablation's "LLM + retrieved passages" row.

It answers `generate(queries)` like the small LM does (one knowledge text per small-model query), so the
evaluation pipeline runs it unchanged; the knowledge is the top-k BM25 passages for the question (and its
options), one per line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..qa.data import QAItem
from ..qa.prompts import PromptSet
from .bm25 import CorpusIndex
from .combine import retrieval_query, truncate_passage

__all__ = ["RetrievalWriter", "retrieval_query"]


class RetrievalWriter:
    """Maps each item's rendered small-model query to the passages retrieved for it.

    Two items whose small-model queries render identically (a question-only template, the same question with
    different options) get the passages of the first of them."""

    template_name = "bm25"

    def __init__(self, index: CorpusIndex, queries: dict[str, str], k: int = 3, max_chars: int | None = None):
        self.index, self.queries, self.k, self.max_chars = index, queries, k, max_chars

    @classmethod
    def for_items(cls, items: Sequence[QAItem], prompts: PromptSet, corpus: str | Path | CorpusIndex, k: int = 3,
                  with_options: bool = True, max_chars: int | None = None) -> RetrievalWriter:
        """`corpus`: a JSONL path or an index already built; `max_chars` cuts each passage (None: whole)."""
        queries: dict[str, str] = {}
        for item in items:
            queries.setdefault(prompts.small_model_query(item), retrieval_query(item, with_options))
        index = corpus if isinstance(corpus, CorpusIndex) else CorpusIndex.from_jsonl(corpus)
        return cls(index, queries, k, max_chars)

    def passages(self, query: str) -> list[str]:
        return [truncate_passage(p.text, self.max_chars)
                for p in self.index.search(self.queries.get(query, query), self.k)]

    def generate(self, texts: Sequence[str], soft_prompt=None, max_new_tokens=None, progress=False) -> list[str]:
        return ["\n".join(self.passages(text)) for text in texts]
