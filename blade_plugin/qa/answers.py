"""Reading the LLM's answer: option letters for multiple choice (single or several), normalised text for
free-text answers. The reference code's regex `[ABCD]{1,4}` matched letters inside ordinary words; here a
letter only counts when it stands alone."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

# "Answer: B", "answer is (C)", "答案：B", "正确答案是A、C", "选项B和D", "the correct options are A and C"
_CLAUSE = re.compile(
    r"(?:correct\s+)?(?:answers?|options?|choices?)\s*(?:is|are|:|：|=)?\s*|答案(?:是|为|选)?\s*[:：]?\s*|"
    r"正确(?:答案|选项)?(?:是|为)?\s*[:：]?\s*|选择?(?:项)?\s*[:：]?\s*",
    re.IGNORECASE,
)


def _letter_run(text: str, letters: Sequence[str]) -> tuple[str, ...] | None:
    """Letters at the start of `text`: 'B', 'A, C', '(A)(C)', 'AC', 'B和D', 'A and C' (stops at the first word)."""
    valid = "".join(letters)
    found: list[str] = []
    pos = 0
    sep = re.compile(r"(?:\s|[,，、;；/&()\[\]（）*\"'“”:：]|和|与|及|\band\b|\bor\b)*", re.IGNORECASE)
    while True:
        m = sep.match(text, pos)
        pos = m.end()
        if pos >= len(text):
            break
        ch = text[pos]
        if ch.upper() in valid and ch.isascii() and ch.isalpha():
            nxt = text[pos + 1] if pos + 1 < len(text) else ""
            # A letter glued to more letters is a word ("Based", "Cell"), unless all are option letters ("AC").
            if nxt.isascii() and nxt.isalpha():
                run = re.match(r"[A-Za-z]+", text[pos:]).group(0)
                if run.isupper() and all(c in valid for c in run) and len(run) <= len(valid):
                    found.extend(run)
                    pos += len(run)
                    continue
                break
            found.append(ch.upper())
            pos += 1
            if nxt == ".":  # "B. because" -> the letter then an explanation
                break
            continue
        break
    return tuple(sorted(set(found))) if found else None


def parse_choices(text: str, letters: Sequence[str]) -> tuple[str, ...] | None:
    """The option letters `text` commits to, sorted and deduplicated, or None if it names none."""
    if not text:
        return None
    letters = [c.upper() for c in letters]
    cleaned = text.replace("**", "").replace("__", "")
    # 1. an explicit answer clause, the last one wins (models often restate the question's options first)
    for m in reversed(list(_CLAUSE.finditer(cleaned))):
        run = _letter_run(cleaned[m.end():], letters)
        if run:
            return run
    # 2. the first line's leading letters ("B", "A, C", "(C) because ...")
    first_line = cleaned.strip().splitlines()[0] if cleaned.strip() else ""
    run = _letter_run(first_line, letters)
    if run:
        return run
    # 3. standalone capital letters anywhere ("I'd go with C here"): the last one
    standalone = re.findall(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])", cleaned)
    standalone = [c for c in standalone if c in letters and c != "I"] or [c for c in standalone if c in letters]
    return (standalone[-1],) if standalone else None


_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_PUNCT = set(string.punctuation) | set("，。、；：？！“”‘’（）《》【】…—")


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and English articles, squeeze spaces (SQuAD-style)."""
    text = "".join(" " if ch in _PUNCT else ch for ch in text.lower())
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _tokens(text: str) -> list[str]:
    tokens = []
    for word in normalize_answer(text).split():
        if _CJK.search(word):  # Chinese has no spaces: score character by character
            tokens.extend(ch for ch in word if not ch.isspace())
        else:
            tokens.append(word)
    return tokens


def exact_match(prediction: str, gold: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(gold)


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = _tokens(prediction), _tokens(gold)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class Score:
    correct: bool
    parsed: tuple[str, ...] | str | None
    f1: float | None = None


_FREE_PREFIX = re.compile(r"^\s*(?:final\s+)?(?:answer|答案)\s*(?:is|:|：|是)?\s*", re.IGNORECASE)


def score_answer(item, raw: str) -> Score:
    """Multiple choice: exact set match of letters. Free text: normalised exact match (plus token F1)."""
    if item.options is not None:
        parsed = parse_choices(raw, sorted(item.options))
        return Score(correct=parsed is not None and parsed == tuple(item.answer), parsed=parsed)
    first = raw.strip().splitlines()[0] if raw.strip() else ""
    prediction = _FREE_PREFIX.sub("", first)
    gold = str(item.answer)
    return Score(correct=exact_match(prediction, gold), parsed=prediction, f1=round(token_f1(prediction, gold), 4))
