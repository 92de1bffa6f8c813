"""Reading the LLM's answer: option letters for multiple choice (single or several), normalised text for
free-text answers.

Real LLMs explain before and after they answer ("答案：B。解析：选项A……", "Answer: C. Option D is a
distractor."), so the letters the model *commits to* are told apart from letters it merely *mentions*:

0. a JSON object with an `answer` (the reply format `--answer-format json` asks for), the last one;
1. explicit commitments ("Answer: X", "the answer is X", "Final answer: X", "答案：X", "正确答案是X", "故选X",
   `{"answer": ["A", "C"]}`, `\\boxed{B}`, "I'd go with C"); among them the last one wins, and one inside an
   "if ..." sentence only counts when no unconditional one exists (and all such agree);
2. a reply that is nothing but letters ("B", "(A)(D)", "ＡＢ") or whose first line starts with one ("B) ...");
3. per-option verdicts ("A is correct", "选项A和C正确"), all of them together;
4. bare mentions ("option D", "选项A") only when nothing above exists, and only if they all agree.

A hedge ("either A or B", "A or B", "答案：A或B", "I cannot determine", "无法确定") gives None, as does a
reply that commits to nothing. Full-width letters and punctuation are folded first (NFKC), and a letter only
counts when it stands alone, never inside a word ("Based", "a BAD choice").
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ..llm.structured import ResponseFormat

# --- text preparation -----------------------------------------------------------------------------
_LATEX_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{([^{}]*)\}")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")
_MARKDOWN = re.compile(r"\*+|`+|(?<![A-Za-z0-9])__|__(?![A-Za-z0-9])|^\s{0,3}#{1,6}\s*", re.MULTILINE)


def _prepare(text: str) -> str:
    """Fold full-width forms (NFKC: 'ＡＢ' -> 'AB', '（' -> '('), unwrap LaTeX boxes (a box is a commitment,
    as in 'The final answer is $\\boxed{B}$') and drop markdown emphasis, code marks and heading hashes."""
    text = unicodedata.normalize("NFKC", text)
    text = _LATEX_TEXT.sub(r"\1", text)
    text = _LATEX_BOX.sub(r" Answer: \1 ", text)
    text = text.replace("$", " ")
    return _MARKDOWN.sub("", text)


# --- letter runs: "B", "A, C", "(A) and (C)", "ACD", "B和D", "C项、D项", '["A", "C"]' ----------------------
# Before the first letter: spaces and line breaks ("the answer is:\n\nB"), brackets, quotes, a colon, a word
# naming the letter ("option B", "选项B").
_LEAD = re.compile(r"(?:[\s\"'“”‘’(\[{<（【:=\-–—•]|\b(?:options?|choices?|letters?|both|all\s+of)\b|选项)*",
                   re.IGNORECASE)
# Between letters on the same line: punctuation and "and"/"和"; "or"/"或" joins them too but makes a hedge.
_SEP = re.compile(r"(?:[ \t,，、;；&+\"'“”‘’()\[\]（）【】]|\band\b|以及|和|与|及|\bor\b|或者|或|/)*", re.IGNORECASE)
_HEDGE_SEP = re.compile(r"\bor\b|或|/", re.IGNORECASE)
_CN_LETTER_SUFFIX = re.compile(r"选项|项")  # "C项、D项均正确", "A选项正确"
_BULLET_LETTER = re.compile(r"[ \t.]*\n[ \t]*[-•+][ \t]*")  # the next line of "Answer:\n- A\n- C"


@dataclass(frozen=True)
class _Run:
    letters: tuple[str, ...]
    hedged: bool
    start: int
    end: int


def _letter_at(text: str, pos: int, valid: str) -> tuple[str, int] | None:
    """The option letter(s) standing alone at `pos` and the position after them, or None."""
    if pos >= len(text) or (pos > 0 and text[pos - 1].isascii() and text[pos - 1].isalnum()):
        return None
    m = re.match(r"[A-Za-z]+", text[pos:])
    if not m:
        return None
    word = m.group(0)
    after = pos + len(word)
    if after < len(text) and text[after].isascii() and text[after].isdigit():
        return None  # "B12", "A1c"
    if len(word) == 1:
        if word in valid:
            return word, after
        # A lower-case letter is a letter only where a word could not go on: "answer: b", "is c.", not
        # "is a reduction" or "(a BAD choice".
        if word.upper() in valid and re.match(r"[ \t]*(?:$|[\n,，、.。;:)\]\"'!?]|(?:and|or)\b)", text[after:]):
            return word.upper(), after
        return None
    # "AC", "ACD", "ABCD": only distinct option letters in increasing order ("BAD", "CAB", "DNA" are words)
    if word.isupper() and all(c in valid for c in word) and list(word) == sorted(set(word)):
        return word, after
    return None


def _run_at(text: str, pos: int, valid: str, lead: bool = True) -> _Run | None:
    """The letter run starting at `pos` (after skipping lead-in characters when `lead`)."""
    if lead:
        pos = _LEAD.match(text, pos).end()
    first = _letter_at(text, pos, valid)
    if first is None:
        return None
    start, letters, hedged = pos, list(first[0]), False
    pos = first[1]
    while True:
        suffix = _CN_LETTER_SUFFIX.match(text, pos)
        if suffix:
            pos = suffix.end()
        sep = _SEP.match(text, pos)
        nxt = _letter_at(text, sep.end(), valid) if sep.end() > pos else None
        if nxt is None:
            break
        hedged = hedged or bool(_HEDGE_SEP.search(text, pos, sep.end()))
        letters.extend(nxt[0])
        pos = nxt[1]
    # a bulleted list of letters, each alone on its line, continues the run
    while re.match(r"[ \t.]*(?:\n|$)", text[pos:]) and re.search(r"(?:^|\n)[ \t]*[-•+][ \t]*$", text[:start]):
        bullet = _BULLET_LETTER.match(text, pos)
        nxt = _letter_at(text, bullet.end(), valid) if bullet else None
        if nxt is None or not re.match(r"[ \t.]*(?:\n|$)", text[nxt[1]:]):
            break
        letters.extend(nxt[0])
        pos = nxt[1]
    if re.search(r"\beither\s*$", text[max(0, start - 12):start], re.IGNORECASE):
        hedged = True
    return _Run(tuple(sorted(set(letters))), hedged, start, pos)


# --- commitments ----------------------------------------------------------------------------------
_ADVERB = r"(?:\s+(?:therefore|thus|hence|clearly|then|definitely|probably|likely|most\s+likely))?"
_COMMITMENT = re.compile(
    # "Answer: B", "The answer is B", "Final answer - C", "answers are A and C", '"answer": ["A"]'
    r"(?<![A-Za-z])(?:final\s+|correct\s+|right\s+|best\s+|my\s+)?answers?(?:\s*\(s\))?"
    r"(?:\s+(?:here|to\s+(?:this|the)\s+question))?[\"']?"
    r"(?:\s*(?:is|are|would\s+be|will\s+be|should\s+be|must\s+be)\b" + _ADVERB + r"\s*[:=]?|\s*[:=\-–—])"
    # "correct option: C", "the correct choices are A and D", "correct statements: A and C"
    r"|\b(?:correct|right|best)\s+(?:options?|choices?|responses?|statements?|selections?)\s*(?:is|are|[:=\-])"
    # "Correct: B, D" / "正确：B" as a label at the start of a line (not "Incorrect: A, C", "... are correct: A")
    r"|(?m:^)[ \t]*(?:correct|正确)\s*:"
    # "the most likely diagnosis is B", "the most appropriate next step in management is (C)"
    r"|\b(?:most\s+(?:likely|appropriate|accurate|probable|correct)|best|correct)\s+(?:[a-z-]+\s+){0,4}?(?:is|are)\b"
    # "I'd go with C", "I would pick D", "Selecting B:", "my choice: D"
    r"|\b(?:pick|choose|select|selecting|go(?:ing)?\s+with|opt\s+for)\b\s*:?"
    r"|\bmy\s+(?:choice|pick|selection)\s*(?:is\b|:)"
    # "答案：B", "答案是B", "正确答案为A、C", "【答案】ACD", "答：C", "最终答案：D"
    r"|答案?\s*(?:应该|应当|应|就)?\s*(?:是|为|选)?\s*[:】\]]?"
    # "正确选项为ACD", "正确的答案是", "正确的是A和D" (not "不正确的是")
    r"|(?<!不)正确的?(?:(?:选项|答案)\s*(?:应该|应当|应)?\s*(?:是|为|有)?|\s*(?:是|为|有))\s*:?"
    # "故选C", "应选D", "该题选B", "选择D" (not "选项", "多选题", "不选")
    r"|(?<!不)选择?(?!项|题)\s*:?",
    re.IGNORECASE,
)
_SHORT_COMMITMENT = re.compile(r"\b(?:it|that)(?:'s|\s+is|\s+must\s+be|\s+should\s+be)\b", re.IGNORECASE)
_CONDITION = re.compile(r"\b(?:if|unless|suppose|assuming)\b|如果|若|假如|倘若|要是|假设", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?。！？;；\n](?=\s|$)|[。！？；\n]")


def _is_conditional(text: str, pos: int) -> bool:
    """Whether the sentence before `pos` is an "if" clause ('if it means severity, the answer is C')."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text, 0, pos)]
    return bool(_CONDITION.search(text, ends[-1] if ends else 0, pos))


# --- verdicts, mentions, hedges -------------------------------------------------------------------
_VERDICT_AFTER = re.compile(
    r"\s*(?:的?(?:说法|表述|观点|内容))?\s*(?:是|均|都|皆|也)?\s*正确"
    r"|\s+(?:is|are)\s+(?:both\s+|all\s+|also\s+)?(?:the\s+)?(?:correct|right|true)\b"
    r"|\s+(?:is|are)\s+(?:the|my)\s+(?:(?:correct|right|best|final)\s+)?answers?\b"
    r"|\s+(?:is|are)\s+(?:the\s+)?(?:correct|right|best)\s+(?:options?|choices?)\b"
    r"|\s*[.:、]\s*(?:correct|true|正确)\b",
    re.IGNORECASE,
)
_NAMING_WORD = re.compile(r"(?:\b(?:options?|choices?|statements?)|选项)\s*$", re.IGNORECASE)
_HEDGE = re.compile(
    r"\beither\b|\bcannot\s+(?:be\s+)?determine|\bcan'?t\s+(?:be\s+)?determine|\bunable\s+to\s+determine|"
    r"\bnot\s+(?:be\s+)?sure\b|\bcan'?t\s+be\s+sure|\bcannot\s+be\s+sure|\bambiguous\b|"
    r"\b(?:insufficient|not\s+enough)\s+information\b|无法确定|无法判断|不能确定|不确定|信息不足",
    re.IGNORECASE,
)
_LABEL_LINE = re.compile(r"^\s*\(?([A-Z])[.)、:]", re.MULTILINE)
_LETTER = re.compile(r"(?<![A-Za-z0-9])[A-Z](?![A-Za-z0-9])")
_ONLY_TRAILING = re.compile(r"[\s.。!！)）\]】\"'”]*$")


def _named_alone(text: str, pos: int) -> bool:
    """A letter at the start of a clause or named as an option: 'A is correct', 'option B', 'B项',
    not 'Vitamin D' or 'type A'."""
    before = text[:pos].rstrip(" \t([（-–—•")
    if not before or not (before[-1].isascii() and before[-1].isalnum()):
        return True
    return bool(_NAMING_WORD.search(text[:pos]))


def _commitments(text: str, valid: str) -> list[tuple[_Run, bool]]:
    """(letter run, conditional?) for every commitment followed by letters, in text order."""
    found = []
    for m in _COMMITMENT.finditer(text):
        run = _run_at(text, m.end(), valid)
        if run is not None:
            found.append((m.start(), run, _is_conditional(text, m.start())))
    # "It's B." / "I believe it's C.": a commitment only when the letter ends the sentence
    for m in _SHORT_COMMITMENT.finditer(text):
        run = _run_at(text, m.end(), valid)
        if run is not None and re.match(r"[ \t]*(?:[.!。]|$|\n)", text[run.end:]):
            found.append((m.start(), run, _is_conditional(text, m.start())))
    return [(run, conditional) for _, run, conditional in sorted(found, key=lambda f: f[0])]


def _verdicts(text: str, valid: str) -> list[_Run]:
    runs, pos = [], 0
    for m in _LETTER.finditer(text):
        if m.start() < pos or m.group(0) not in valid or not _named_alone(text, m.start()):
            continue
        run = _run_at(text, m.start(), valid, lead=False)
        if run is not None:
            pos = run.end
            if _VERDICT_AFTER.match(text, run.end):
                runs.append(run)
    return runs


def _mentions(text: str, valid: str) -> list[_Run]:
    runs = []
    for m in _LETTER.finditer(text):
        named_before = _NAMING_WORD.search(text[:m.start()])
        named_after = _CN_LETTER_SUFFIX.match(text, m.end())
        if m.group(0) in valid and (named_before or named_after):
            run = _run_at(text, m.start(), valid, lead=False)
            if run is not None:
                runs.append(run)
    return runs


def _leading_answer(text: str, valid: str) -> _Run | None:
    """A reply that is only letters ('B', '(A)(D)', 'A and C'), or whose first line opens with a labelled
    letter ('B) Increased ICP', 'C\\n\\nExplanation: ...') -- unless the reply restates the option list."""
    body = text.strip()
    run = _run_at(body, 0, valid)
    if run is not None and _ONLY_TRAILING.match(body, run.end):
        return run
    if len({m.group(1) for m in _LABEL_LINE.finditer(body)}) >= 2:  # "A. aspirin\nB. warfarin\n..."
        return None
    first_line = body.splitlines()[0] if body else ""
    run = _run_at(first_line, 0, valid)
    if run is not None and re.match(r"\s*(?:$|[.)、:]|\s[-–—])", first_line[run.end:]):
        return run
    return None


def _decide(runs: list[_Run]) -> tuple[str, ...] | None:
    """The letters all these runs agree on, or None if they disagree or hedge."""
    if not runs or any(r.hedged for r in runs) or len({r.letters for r in runs}) > 1:
        return None
    return runs[0].letters


def _json_letters(text: str, valid: str) -> tuple[str, ...] | None:
    """Letters from a JSON `answer` ("B", "A, C", ["A", "C"], ["C. Heparin"]), or None if there is none."""
    value = json_answer(text)
    values = value if isinstance(value, list) else [value] if isinstance(value, str) else []
    runs = [_run_at(_prepare(v), 0, valid) for v in values if isinstance(v, str)]
    runs = [r for r in runs if r is not None]
    if not runs or any(r.hedged for r in runs):
        return None
    return tuple(sorted({c for r in runs for c in r.letters}))


def parse_choices(text: str, letters: Sequence[str]) -> tuple[str, ...] | None:
    """The option letters `text` commits to, sorted and deduplicated, or None if it commits to none or
    hedges (see the module docstring for the order of evidence)."""
    if not text or not text.strip():
        return None
    valid = "".join(sorted({str(c).upper() for c in letters}))
    from_json = _json_letters(text, valid)
    if from_json is not None:
        return from_json
    prepared = _prepare(text)
    commitments = _commitments(prepared, valid)
    firm = [run for run, conditional in commitments if not conditional]
    if firm:
        return None if firm[-1].hedged else firm[-1].letters
    if commitments:  # only "if ..., the answer is X": believe it when every such clause says the same
        return _decide([run for run, _ in commitments])
    if _HEDGE.search(prepared):
        return None
    leading = _leading_answer(prepared, valid)
    if leading is not None:
        return None if leading.hedged else leading.letters
    verdicts = _verdicts(prepared, valid)
    if verdicts:
        if any(r.hedged for r in verdicts):
            return None
        return tuple(sorted({c for r in verdicts for c in r.letters}))
    return _decide(_mentions(prepared, valid))


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
    unparseable: bool = False  # the reply committed to no answer (or hedged): scored wrong, counted apart


_FREE_PREFIX = re.compile(r"^\s*(?:final\s+)?(?:answer|答案)\s*(?:is|:|：|是|为)?\s*", re.IGNORECASE)
_FREE_LINE = re.compile(r"^\s*(?:final\s+)?(?:answer|答案)\s*(?:is\b|[:：]|是|为)", re.IGNORECASE | re.MULTILINE)
_JSON_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)


def json_answer(text: str) -> str | list | None:
    """The `answer` value of the last JSON object in `text` that has one (bare or in a ```json fence)."""
    for blob in reversed(_JSON_OBJECT.findall(text or "")):
        try:
            value = json.loads(blob)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            for key in ("answer", "final_answer", "answers", "答案"):
                if key in value:
                    return value[key]
    return None


def answer_response_format(letters: Sequence[str] | None) -> ResponseFormat:
    """The JSON reply an answer request asks for in `--answer-format json`: `{"answer": ["B"]}` (letters
    restricted to the item's options) for multiple choice, `{"answer": "..."}` for free text."""
    if letters:
        letters = sorted(str(c).upper() for c in letters)
        answer = {"type": "array", "items": {"type": "string", "enum": letters}}
        instruction = ('Reply with JSON only: {"answer": ["B"]}, listing every correct option letter '
                       f"({', '.join(letters)}).")
    else:
        answer = {"type": "string"}
        instruction = 'Reply with JSON only: {"answer": "..."}, with a short answer.'
    schema = {"type": "object", "properties": {"answer": answer}, "required": ["answer"],
              "additionalProperties": False}
    return ResponseFormat(schema=schema, instruction=instruction)


def free_text_answer(text: str) -> str:
    """The free-text answer in a reply: a JSON `answer`, else the last "Answer: ..." line, else the first line."""
    value = json_answer(text)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if value is not None:
        return str(value).strip()
    stripped = unicodedata.normalize("NFKC", text or "").replace("**", "").strip()
    lines = [m for m in _FREE_LINE.finditer(stripped)]
    if lines:
        line = stripped[lines[-1].start():].splitlines()[0]
    else:
        line = stripped.splitlines()[0] if stripped else ""
    return _FREE_PREFIX.sub("", line).strip()


def score_answer(item, raw: str) -> Score:
    """Multiple choice: exact set match of letters. Free text: normalised exact match (plus token F1).
    A reply with no readable answer is wrong and flagged `unparseable`."""
    if item.options is not None:
        parsed = parse_choices(raw, sorted(item.options))
        return Score(correct=parsed is not None and parsed == tuple(item.answer), parsed=parsed,
                     unparseable=parsed is None)
    prediction = free_text_answer(raw)
    gold = str(item.answer)
    return Score(correct=exact_match(prediction, gold), parsed=prediction, f1=round(token_f1(prediction, gold), 4),
                 unparseable=not normalize_answer(prediction))
