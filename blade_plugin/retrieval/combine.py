"""Three ways to combine BM25 retrieval with the small model's knowledge (issue 29), and the retrieval settings
they share with the ablation's plain-retrieval row.

=========================  ========================================  =============================================
mode                       the small LM's query                      what the LLM sees
=========================  ========================================  =============================================
passages+knowledge         the question (as today)                   the top-k passages and the knowledge, each
                                                                     under its own label (answer.j2's two blocks)
knowledge-from-passages    the question and the top-k passages       the knowledge only
knowledge-as-query         the question (as today)                   the top-k passages retrieved with the question
                                                                     and the knowledge as the BM25 query, in the
                                                                     knowledge slot, as the plain BM25 row shows them
=========================  ========================================  =============================================

The passages of every mode are retrieved the same way (`PassageRetriever`): BM25 over the corpus with the
question (and, by default, its options' text) as the query, the top `k`, each cut to `max_chars` characters.
KIT for knowledge-from-passages (`stages.kit.generate_kit_data(query_retriever=...)`) must use the same
settings, so the small model is trained on the passages it will be given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..qa.combine_modes import (COMBINED_MODES, COMBINED_TITLES, KNOWLEDGE_AS_QUERY, KNOWLEDGE_FROM_PASSAGES,
                                 PASSAGES_AND_KNOWLEDGE, evidence_text)
from .bm25 import CorpusIndex, Passage

__all__ = ["COMBINED_MODES", "COMBINED_TITLES", "DEFAULT_K", "DEFAULT_PASSAGE_CHARS", "KNOWLEDGE_AS_QUERY",
           "KNOWLEDGE_FROM_PASSAGES", "PASSAGES_AND_KNOWLEDGE", "PassageRetriever", "check_templates", "evidence_text",
           "retrieval_query", "truncate_passage"]

if TYPE_CHECKING:
    from ..qa.data import QAItem

# BM25 passages the LLM sees: k = 1 scored best on both bundled dev_large splits with the evidence reader
# (docs/evidence.md: more passages name more of the distractors); a real LLM may prefer more, so choose on your dev.
DEFAULT_K = 1
# Long enough for a paragraph (the bundled corpora's lines are at most 105 characters, so it never cuts them),
# short enough that several passages fit the 135M model's query with room to spare.
DEFAULT_PASSAGE_CHARS = 600
ELLIPSIS = "…"


def truncate_passage(text: str, max_chars: int | None) -> str:
    """`text` cut to at most `max_chars` characters (None or 0: whole), ending in "…" when cut.

    The cut backs off to the last space in the final fifth, so a Latin word is not split; text without spaces
    (Chinese) is cut at the character."""
    if not max_chars or len(text) <= max_chars:
        return text
    cut = text[:max_chars - 1]
    space = cut.rfind(" ")
    if space >= 0.8 * len(cut):
        cut = cut[:space]
    return cut.rstrip() + ELLIPSIS


def retrieval_query(item: QAItem, with_options: bool = True, extra: str = "") -> str:
    """The BM25 query of an item: its question, (by default) the text of every option, and `extra` (the small
    model's knowledge in knowledge-as-query)."""
    parts = [item.question]
    if with_options and item.options:
        parts += list(item.options.values())
    if extra:
        parts.append(extra)
    return " ".join(parts)


@dataclass(frozen=True)
class PassageRetriever:
    """The top `k` BM25 passages of `index` for an item, each cut to `max_chars` characters."""

    index: CorpusIndex
    k: int = DEFAULT_K
    max_chars: int | None = DEFAULT_PASSAGE_CHARS
    with_options: bool = True

    @classmethod
    def from_jsonl(cls, corpus: str | Path, k: int = DEFAULT_K, max_chars: int | None = DEFAULT_PASSAGE_CHARS,
                   with_options: bool = True) -> PassageRetriever:
        return cls(CorpusIndex.from_jsonl(corpus), k, max_chars, with_options)

    def search(self, item: QAItem, extra: str = "") -> list[Passage]:
        """The passages for `item` (best first), their text truncated; `extra` joins the query."""
        hits = self.index.search(retrieval_query(item, self.with_options, extra), self.k)
        return [Passage(truncate_passage(hit.text, self.max_chars), hit.score, hit.line) for hit in hits]

    def texts(self, item: QAItem, extra: str = "") -> list[str]:
        return [p.text for p in self.search(item, extra)]

    def settings(self) -> dict:
        """What a prediction made with these passages depends on (for fingerprints and row directories).

        `max_chars` counts only when it cuts some passage of this corpus, so a cap that changes nothing does not
        change a fingerprint."""
        longest = max((len(t) for t in self.index.texts), default=0)
        cap = self.max_chars if self.max_chars and longest > self.max_chars else None
        return {"corpus": self.index.digest, "k": self.k, "options": self.with_options,
                **({"max_chars": cap} if cap else {})}


# The template each mode needs to render `passages` (knowledge-as-query shows them in the knowledge slot).
_NEEDS_PASSAGES = {PASSAGES_AND_KNOWLEDGE: "answer.j2", KNOWLEDGE_FROM_PASSAGES: "small_model_query.j2"}


def check_templates(prompts, modes: Sequence[str]) -> None:
    """BladeInputError if a mode's template does not render `passages`: an edited copy from before the combined
    modes existed would drop them silently and the mode would measure the knowledge alone."""
    from ..extras.errors import BladeInputError

    for mode in modes:
        name = _NEEDS_PASSAGES.get(mode)
        if name and not prompts.uses_variable(name, "passages"):
            raise BladeInputError(Path(prompts.directory) / name,
                                  f"mode {mode} needs this template to render `passages` (copy the "
                                  "`{% if passages %}` block of the bundled template)")

