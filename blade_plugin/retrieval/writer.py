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


def retrieval_query(item: QAItem, with_options: bool = True) -> str:
    """The BM25 query of an item: its question, and (by default) the text of every option."""
    if with_options and item.options:
        return " ".join([item.question, *item.options.values()])
    return item.question


class RetrievalWriter:
    """Maps each item's rendered small-model query to the passages retrieved for it.

    Two items whose small-model queries render identically (a question-only template, the same question with
    different options) get the passages of the first of them."""

    template_name = "bm25"

    def __init__(self, index: CorpusIndex, queries: dict[str, str], k: int = 3):
        self.index, self.queries, self.k = index, queries, k

    @classmethod
    def for_items(cls, items: Sequence[QAItem], prompts: PromptSet, corpus: str | Path, k: int = 3,
                  with_options: bool = True) -> RetrievalWriter:
        queries: dict[str, str] = {}
        for item in items:
            queries.setdefault(prompts.small_model_query(item), retrieval_query(item, with_options))
        return cls(CorpusIndex.from_jsonl(corpus), queries, k)

    def passages(self, query: str) -> list[str]:
        return [p.text for p in self.index.search(self.queries.get(query, query), self.k)]

    def generate(self, texts: Sequence[str], soft_prompt=None, max_new_tokens=None, progress=False) -> list[str]:
        return ["\n".join(self.passages(text)) for text in texts]
