"""Task data: QA items from generic JSONL or the raw JEC-QA / MLEC-QA formats, with file:line:field errors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import BladeInputError
from ..io_utils import iter_jsonl

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
        letter_s = str(letter).strip().upper()
        if len(letter_s) != 1 or not letter_s.isalpha():
            _fail(path, line, f"option key {letter!r} is not a single letter", key)
        if not isinstance(text, (str, int, float)) or not str(text).strip():
            _fail(path, line, f"option {letter_s} is empty", key)
        options[letter_s] = str(text).strip()
    return dict(sorted(options.items()))


def _letters(raw: Any, options: dict[str, str], path, line, key: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        letters = [c for c in raw.upper() if c.isalpha()]
    elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        letters = [c for x in raw for c in x.upper() if c.isalpha()]
    else:
        _fail(path, line, "expected an option letter or a list of letters", key)
    if not letters:
        _fail(path, line, "no answer letter given", key)
    unknown = sorted(set(letters) - set(options))
    if unknown:
        _fail(path, line, f"answer {', '.join(unknown)} is not among the options {', '.join(options)}", key)
    return tuple(sorted(set(letters)))


def _text(record: dict, key: str, path, line) -> str:
    value = record.get(key)
    if value is None:
        _fail(path, line, "missing", key)
    if not isinstance(value, str) or not value.strip():
        _fail(path, line, "expected a non-empty string", key)
    return value.strip()


def item_from_record(record: dict, path, line: int, fmt: str = "generic", require_answer: bool = True) -> QAItem:
    """Build a QAItem from one parsed record of the given format."""
    if fmt == "jecqa":
        question = _text(record, "statement", path, line)
        options = _options(record.get("option_list"), path, line, "option_list")
        answer = _letters(record.get("answer"), options, path, line, "answer")
        meta = {"type": record.get("type"), "source": "jecqa"}
        return QAItem(str(record.get("id", f"line{line}")), question, options, answer, meta)
    if fmt == "mlecqa":
        question = _text(record, "qtext", path, line)
        options = _options(record.get("options"), path, line, "options")
        answer = _letters(record.get("answer"), options, path, line, "answer")
        meta = {"qtype": record.get("qtype"), "source": "mlecqa"}
        return QAItem(str(record.get("qid", f"line{line}")), question, options, answer, meta)

    question = _text(record, "question", path, line)
    raw_options = record.get("options")
    options = _options(raw_options, path, line, "options") if raw_options is not None else None
    raw_answer = record.get("answer")
    if raw_answer is None or raw_answer == "" or raw_answer == []:
        if require_answer:
            _fail(path, line, "missing", "answer")
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
    meta = {k: v for k, v in record.items() if k not in {"id", "question", "options", "answer"}}
    return QAItem(str(item_id), question, options, answer, meta)


def detect_format(record: dict) -> str:
    if "statement" in record and "option_list" in record:
        return "jecqa"
    if "qtext" in record:
        return "mlecqa"
    return "generic"


def _records(path: Path) -> list[tuple[int, dict, bool]]:
    """(line or element number, record, is_array_element) for a JSONL file or a JSON array file."""
    with open(path, encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    if head.startswith("["):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise BladeInputError(path, f"invalid JSON ({err.msg} at column {err.colno})", line=err.lineno) from None
        rows = []
        for index, record in enumerate(data, start=1):
            if not isinstance(record, dict):
                _fail(path, index, f"expected a JSON object, got {type(record).__name__}", None, True)
            rows.append((index, record, True))
        return rows
    return [(line, record, False) for line, record in iter_jsonl(path)]


def load_qa(path: str | Path, fmt: Format = "auto", limit: int | None = None) -> list[QAItem]:
    """Load QA items; every problem is a BladeInputError naming the file, line (or array element) and field."""
    path = Path(path)
    if not path.is_file():
        raise BladeInputError(path, "file not found")
    records = _records(path)
    if not records:
        raise BladeInputError(path, "no QA items in file")
    file_fmt = detect_format(records[0][1]) if fmt == "auto" else fmt
    items: list[QAItem] = []
    seen: dict[str, int] = {}
    for line, record, in_array in records[: limit if limit else None]:
        try:
            item = item_from_record(record, path, line, file_fmt)
        except BladeInputError as err:
            if in_array:
                raise BladeInputError(path, f"{str(err).split(': ', 1)[1]} (JSON array element {line})") from None
            raise
        if item.id in seen:
            _fail(path, line, f"duplicate id {item.id!r} (first on line {seen[item.id]})", "id", in_array)
        seen[item.id] = line
        items.append(item)
    return items
