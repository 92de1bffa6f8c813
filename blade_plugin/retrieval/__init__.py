"""Corpus retrieval (BM25): grounding KIT knowledge in the user's corpus and the ablation's plain-retrieval row."""

from .bm25 import CorpusIndex, Passage, tokens

__all__ = ["CorpusIndex", "Passage", "tokens"]
