"""Lexical content units of a text, and how much of each option's discriminative units a text states.

Shared by the reader-independent knowledge-support metric (`qa.knowledge_support`, which documents the
measure) and the offline evidence reader (`llm.reader`), which answers by the same overlap; it lives here,
below both packages, so neither imports the other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_LATIN = re.compile(r"[a-z0-9]+")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
STOPWORDS = frozenset(
    "a an the of and or to in on at by for with from as is are was were be been being it its this that these "
    "those which what who whom whose how why when where does do did has have had should would could can must "
    "may might shall will not no".split())


def units(text: str) -> set[str]:
    """Content units of `text`: English words minus stopwords, plus Chinese character bigrams."""
    text = text.lower()
    found = {w for w in _LATIN.findall(text) if w not in STOPWORDS}
    for run in _CJK.findall(text):
        found.update([run] if len(run) == 1 else (run[i:i + 2] for i in range(len(run) - 1)))
    return found


def discriminative_units(options: Mapping[str, str], question: str) -> tuple[dict[str, set[str]], set[str]]:
    """Each option's units minus those in the question or in every option; and that ignored set."""
    ignored = units(question)
    per_option = {letter: units(text) for letter, text in options.items()}
    if len(per_option) > 1:
        ignored |= set.intersection(*per_option.values())
    return {letter: own - ignored for letter, own in per_option.items()}, ignored


def option_support(options: Mapping[str, str], knowledge: str, question: str = "") -> dict[str, float]:
    """Support of each option (letter -> share of its discriminative units the knowledge states, 0..1)."""
    per_option, ignored = discriminative_units(options, question)
    stated = units(knowledge) - ignored
    return {letter: len(own & stated) / len(own) if own else 0.0 for letter, own in per_option.items()}
