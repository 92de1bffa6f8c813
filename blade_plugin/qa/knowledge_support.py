"""Does a piece of knowledge support the correct option? A reader-independent measure of the small LM.

For one multiple-choice item and the knowledge the small LM wrote for it, each option gets a *support*
score: the share of the option's discriminative content units that the knowledge states. Units are
language-aware and need no segmenter: lower-cased words (minus a small stopword list) for Latin script,
character bigrams for Chinese (a one-character run counts as itself), so "合同无效" is {合同, 同无, 无效}.
Discriminative means: units that also occur in the question, or in every option, are left out on both sides,
because they cannot tell the options apart (knowledge that merely repeats the question supports nothing).

    support(option) = |units(option) & units(knowledge)| / |units(option)|   (discriminative units only)

An item's knowledge *supports the correct answer* when every correct option scores strictly higher than
every distractor, and it *names a wrong option* when some distractor scores at least NAMED_AT (0.75), unless
that distractor's units all belong to a correct option too (then stating the right answer would count; such a
distractor may also tie with the correct option without spoiling its support).

`support_summary` aggregates this over items; `blade-bpo evaluate` reports it per mode with knowledge, so a
user sees whether the small model learned the domain even when the LLM ignores the knowledge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..extras.lexical import discriminative_units, option_support
from .data import QAItem

NAMED_AT = 0.75

def item_support(options: Mapping[str, str], correct: Sequence[str], knowledge: str, question: str = "",
                 named_at: float = NAMED_AT) -> dict:
    """{"supports_correct": bool, "names_wrong": bool, "support": {letter: score}} for one item."""
    per_option, _ = discriminative_units(options, question)
    support = option_support(options, knowledge, question)
    wrong = [letter for letter in options if letter not in correct]
    correct_units = set().union(*(per_option[c] for c in correct)) if correct else set()
    # a distractor made only of correct-option units ("three years" vs "three years, unless the law says
    # otherwise") is necessarily stated along with the correct option: a tie with it still counts as support
    inside = {w for w in wrong if per_option[w] <= correct_units}
    supports = bool(correct) and all(support[c] > 0 and (support[c] > support[w] or
                                                         (w in inside and support[c] >= support[w]))
                                     for c in correct for w in wrong)
    names_wrong = any(support[w] >= named_at and w not in inside for w in wrong)
    return {"supports_correct": supports, "names_wrong": names_wrong,
            "support": {letter: round(score, 4) for letter, score in support.items()}}


def support_summary(items: Sequence[QAItem], knowledge_texts: Sequence[str], with_items: bool = True) -> dict:
    """Rates over the multiple-choice items with non-empty knowledge.

    Returns {"supports_correct": rate, "names_wrong": rate, "n": count, "items": [per-item detail]} ("items"
    only `with_items`); the rates are None when no item qualifies (free-text items, the LLM-only mode).
    """
    if len(items) != len(knowledge_texts):
        raise ValueError(f"{len(items)} items but {len(knowledge_texts)} knowledge texts")
    details = []
    for item, knowledge in zip(items, knowledge_texts):
        if not item.is_multiple_choice or not item.answer or not (knowledge or "").strip():
            continue
        details.append({"id": item.id, **item_support(item.options, item.answer, knowledge, item.question)})
    n = len(details)
    return {
        "supports_correct": round(sum(d["supports_correct"] for d in details) / n, 4) if n else None,
        "names_wrong": round(sum(d["names_wrong"] for d in details) / n, 4) if n else None,
        "n": n,
        **({"items": details} if with_items else {}),
    }
