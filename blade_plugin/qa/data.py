"""Task data: QA items from generic JSONL or the raw JEC-QA / MLEC-QA formats, with file:line:field errors."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..extras.errors import BladeInputError
from ..runs.atomic_io import jsonl_records, read_text_file

Format = Literal["auto", "generic", "jecqa", "mlecqa"]


@dataclass(frozen=True)
class QAItem:
    """One question. Multiple choice: `options` maps letters to text and `answer` is a sorted tuple of
    letters (empty when unknown, e.g. ad-hoc questions). Free text: `options` is None, `answer` a str."""

    id: str
    question: str
    options: dict[str, str] | None
    answer: tuple[str, ...] | str
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_multiple_choice(self) -> bool:
        return self.options is not None

    @property
    def is_multi_answer(self) -> bool:
        return self.is_multiple_choice and len(self.answer) > 1

    @property
    def answer_display(self) -> str:
        return ", ".join(self.answer) if isinstance(self.answer, tuple) else str(self.answer)


class QAItems(list):
    """The items of a file (a plain list of QAItem) plus the records `skip_invalid` left out, each as
    "file:line: reason"."""

    def __init__(self, items=(), skipped: list[str] | None = None):
        super().__init__(items)
        self.skipped: list[str] = list(skipped or [])


SKIP_HINT = "pass --skip-invalid to skip such records and list them in the stats"


EMPTY_LETTERS = "empty answer (no option letter given)"  # one wording for every reader


def _fail(path, line, message, field_name=None, index_note=False):
    raise BladeInputError(path, message + (" (JSON array element)" if index_note else ""), line=line,
                          field=field_name)


def _options(raw: Any, path, line, key: str) -> dict[str, str]:
    if isinstance(raw, list):  # ["A. text", ...] or ["text", ...]
        raw = {chr(ord("A") + i): str(v) for i, v in enumerate(raw)}
    if not isinstance(raw, dict) or not raw:
        _fail(path, line, "expected a non-empty object of options like {\"A\": \"...\"}", key)
    options = {}
    for letter, text in raw.items():
        letter_s = unicodedata.normalize("NFKC", str(letter)).strip().upper()  # "Ａ" (full-width) -> "A"
        if len(letter_s) != 1 or not letter_s.isalpha():
            _fail(path, line, f"option key {letter!r} is not a single letter", key)
        if not isinstance(text, (str, int, float)) or not str(text).strip():
            _fail(path, line, f"option {letter_s} is empty", key)
        options[letter_s] = str(text).strip()
    return dict(sorted(options.items()))


# Between letters of one answer: spaces, commas, semicolons, slashes (after NFKC, so full-width ones too).
_SEPARATORS = re.compile(r"[\s,;/|、]+")


def _letters(raw: Any, options: dict[str, str], path, line, key: str) -> tuple[str, ...]:
    """Answer letters from "B", "AB", "A, C", ["A", "C"] or full-width "ＡＢ"; anything else (a word such as
    "Paris", a letter that is not an option) is refused with the answer quoted as given."""
    if isinstance(raw, str):
        parts = [raw]
    elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        parts = raw
    else:
        _fail(path, line, "expected an option letter or a list of letters", key)
    span = f"{next(iter(options))}-{next(reversed(options))}" if len(options) > 1 else next(iter(options))
    letters: list[str] = []
    for part in parts:
        text = unicodedata.normalize("NFKC", part).strip()
        for token in _SEPARATORS.split(text):
            token = token.strip(".()[]")
            if not token:
                continue
            # "AB" is two answers; a lone "b" is one; "Paris" or "Ab" is not letters at all.
            valid = token.isascii() and token.isalpha() and (token.isupper() or len(token) == 1) \
                and all(c in options for c in token.upper())
            if not valid:
                _fail(path, line, f"answer {part.strip()!r} is not an option letter ({span})", key)
            letters.extend(token.upper())
    if not letters:
        _fail(path, line, EMPTY_LETTERS, key)
    return tuple(sorted(set(letters)))


def _text(record: dict, key: str, path, line) -> str:
    value = record.get(key)
    if value is None:
        _fail(path, line, "missing", key)
    if not isinstance(value, str) or not value.strip():
        _fail(path, line, "expected a non-empty string", key)
    return value.strip()


def _extra_fields(record: dict, used: set[str]) -> dict:
    return {k: v for k, v in record.items() if k not in used}


def item_from_record(record: dict, path, line: int, fmt: str = "generic", require_answer: bool = True) -> QAItem:
    """Build a QAItem from one parsed record of the given format."""
    if fmt == "jecqa":
        question = _text(record, "statement", path, line)
        options = _options(record.get("option_list"), path, line, "option_list")
        answer = _letters(record.get("answer"), options, path, line, "answer")
        # every other raw field is kept (`--group-by` may name any of them; `type` is always present)
        meta = {**_extra_fields(record, {"id", "statement", "option_list", "answer"}), "type": record.get("type"),
                "source": "jecqa"}
        return QAItem(str(record.get("id", f"line{line}")), question, options, answer, meta)
    if fmt == "mlecqa":
        question = _text(record, "qtext", path, line)
        options = _options(record.get("options"), path, line, "options")
        answer = _letters(record.get("answer"), options, path, line, "answer")
        meta = {**_extra_fields(record, {"qid", "qtext", "options", "answer"}), "qtype": record.get("qtype"),
                "source": "mlecqa"}
        return QAItem(str(record.get("qid", f"line{line}")), question, options, answer, meta)

    question = _text(record, "question", path, line)
    raw_options = record.get("options")
    options = _options(raw_options, path, line, "options") if raw_options is not None else None
    raw_answer = record.get("answer")
    if raw_answer is None or raw_answer == "" or raw_answer == []:
        if require_answer:
            # An empty list is what raw JEC-QA records carry: say "empty", as the jecqa reader does, not "missing".
            _fail(path, line, "missing" if raw_answer is None else EMPTY_LETTERS if options else "empty answer",
                  "answer")
        answer: tuple[str, ...] | str = () if options else ""
    elif options is not None:
        answer = _letters(raw_answer, options, path, line, "answer")
    elif isinstance(raw_answer, str):
        answer = raw_answer.strip()
    else:
        _fail(path, line, "expected a string for a free-text answer (no options given)", "answer")
    item_id = record.get("id", f"line{line}")
    if not isinstance(item_id, (str, int)):
        _fail(path, line, "expected a string or integer", "id")
    meta = _extra_fields(record, {"id", "question", "options", "answer"})
    return QAItem(str(item_id), question, options, answer, meta)


def detect_format(record: dict) -> str:
    if "statement" in record and "option_list" in record:
        return "jecqa"
    if "qtext" in record:
        return "mlecqa"
    return "generic"


def _records(path: Path) -> list[tuple[int, dict, bool]]:
    """(line or element number, record, is_array_element) for a JSONL file or a JSON array file, read as
    UTF-8 (BOM or not) or GB18030 (`io_utils.decode_text`)."""
    text = read_text_file(path)
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise BladeInputError(path, f"invalid JSON ({err.msg} at column {err.colno})", line=err.lineno) from None
        rows = []
        for index, record in enumerate(data, start=1):
            if not isinstance(record, dict):
                _fail(path, index, f"expected a JSON object, got {type(record).__name__}", None, True)
            rows.append((index, record, True))
        return rows
    return [(number, record, False) for number, record in jsonl_records(path, text)]


def load_qa(path: str | Path, fmt: Format = "auto", limit: int | None = None,
            skip_invalid: bool = False) -> QAItems:
    """Load QA items; every problem is a BladeInputError naming the file, line (or array element) and field.

    Public datasets hold a few unusable records (raw JEC-QA has some with an empty answer list): with
    `skip_invalid` such records are left out and listed in the result's `skipped`; without it the first one
    stops the load with a message naming the flag. `limit` counts the items kept.
    """
    path = Path(path)
    if not path.is_file():
        raise BladeInputError(path, "file not found")
    records = _records(path)
    if not records:
        raise BladeInputError(path, "no QA items in file")
    file_fmt = detect_format(records[0][1]) if fmt == "auto" else fmt
    items = QAItems()
    seen: dict[str, int] = {}
    for line, record, in_array in records:
        if limit and len(items) >= limit:
            break
        try:
            try:
                item = item_from_record(record, path, line, file_fmt)
            except BladeInputError as err:
                if in_array:
                    raise BladeInputError(path, f"{str(err).split(': ', 1)[1]} (JSON array element {line})") from None
                raise
            if item.id in seen:
                _fail(path, line, f"duplicate id {item.id!r} (first on line {seen[item.id]})", "id", in_array)
        except BladeInputError as err:
            if not skip_invalid:
                err.args = (f"{err.args[0]}; {SKIP_HINT}",)
                raise
            items.skipped.append(str(err))
            continue
        seen[item.id] = line
        items.append(item)
    if not items:
        raise BladeInputError(path, f"no valid QA items ({len(items.skipped)} invalid records skipped)")
    return items
