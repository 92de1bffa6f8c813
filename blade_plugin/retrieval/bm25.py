"""BM25 over a `{"text": ...}` JSONL corpus (the DP corpus), with the `bm25s` library.

Tokens are language-aware and need no downloaded tokenizer: lower-cased Latin words minus the stopwords of
`qa.knowledge_support`, and Chinese character bigrams (a one-character run counts as itself), so "合同无效"
is [合同, 同无, 无效]. bm25s scores with its default Lucene BM25 (k1 1.5, b 0.75):

    score(d, q) = sum over query tokens t of  idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

Ties are broken by corpus order, and passages that share no token with the query are never returned, so a
ranking is a pure function of the corpus and the query.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..extras.errors import BladeInputError
from ..extras.lexical import STOPWORDS
from ..runs.atomic_io import jsonl_records

_TOKEN = re.compile(r"[a-z0-9]+|[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


def tokens(text: str) -> list[str]:
    """BM25 terms of `text`, in order, repeats kept (term frequency matters to BM25)."""
    out: list[str] = []
    for run in _TOKEN.findall(text.lower()):
        if run.isascii():
            if run not in STOPWORDS:
                out.append(run)
        elif len(run) == 1:
            out.append(run)
        else:
            out.extend(run[i:i + 2] for i in range(len(run) - 1))
    return out


@dataclass(frozen=True)
class Passage:
    text: str
    score: float
    line: int  # 1-based line of the corpus file (0 for an in-memory corpus: the index + 1 is its position)

    def as_dict(self) -> dict:
        return {"text": self.text, "score": round(self.score, 4), "line": self.line}


class CorpusIndex:
    """A BM25 index over passages; `search(query, k)` returns the top-k passages sharing a token with it."""

    def __init__(self, texts: list[str], lines: list[int] | None = None, source: str = "<memory>"):
        import bm25s

        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            # bm25s sets its own logger to DEBUG when imported: "Building index from tokens" on every index
            logging.getLogger("bm25s").setLevel(logging.WARNING)

        if not texts:
            raise BladeInputError(source, "no passages to index")
        self.texts = list(texts)
        self.lines = list(lines) if lines is not None else [0] * len(texts)
        self.source = source
        self.digest = hashlib.sha256("\x1e".join(self.texts).encode("utf-8")).hexdigest()[:16]
        self._bm25 = bm25s.BM25()
        # every passage needs one token for bm25s's vocabulary; a passage of stopwords only gets a placeholder
        self._bm25.index([tokens(t) or ["\x00"] for t in self.texts], show_progress=False)

    @classmethod
    def from_jsonl(cls, path: str | Path, field: str = "text") -> CorpusIndex:
        """One passage per line of a JSONL file (`{"text": ...}`, LLaMA-Factory's pt format); a bad line is
        an error naming the file, line and field."""
        path = Path(path)
        if not path.is_file():
            raise BladeInputError(path, "corpus file not found")
        texts, lines = [], []
        for number, record in jsonl_records(path):
            value = record.get(field)
            if not isinstance(value, str) or not value.strip():
                raise BladeInputError(path, "expected a non-empty string", line=number, field=field)
            texts.append(value.strip())
            lines.append(number)
        if not texts:
            raise BladeInputError(path, "no passages in corpus file")
        return cls(texts, lines, str(path))

    def scores(self, query: str) -> list[float]:
        """BM25 score of every passage for `query` (corpus order)."""
        terms = tokens(query)
        if not terms:
            return [0.0] * len(self.texts)
        return [float(s) for s in self._bm25.get_scores(terms)]

    def search(self, query: str, k: int = 3) -> list[Passage]:
        """The `k` best passages for `query`, best first (ties: corpus order); none scoring 0."""
        scored = self.scores(query)
        order = sorted(range(len(scored)), key=lambda i: (-scored[i], i))
        return [Passage(self.texts[i], scored[i], self.lines[i]) for i in order[:k] if scored[i] > 0]
