"""The question inside a chat request: the last user message, split into a question and lettered options
when it lists them ("A. ...", "B) ...", "(C) ...", "Ｄ．..." one per line), free text otherwise."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# A line that starts an option: an optional bracket, one capital letter (full-width ones are normalised
# first), a closing bracket or separator, then the option text. "A" alone or "A word" is not an option.
# Possessive quantifiers (`*+`): a line of thousands of spaces must fail in one pass, not by backtracking one
# `\s*` into the next (quadratic in the line's length).
_OPTION_LINE = re.compile(r"^\s*+[(\[（【]?\s*+([A-Z])\s*+(?:[)\]）】]\s*+[.:、．：]?|[.:、．：])\s*+(.*)$")
MIN_OPTIONS = 2


@dataclass(frozen=True)
class ChatQuestion:
    """question: the text the small LM and the templates see; options: letter -> text, or None (free chat)."""

    question: str
    options: dict[str, str] | None


def message_text(content: object) -> str:
    """The text of a chat message's `content`: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content
                         if isinstance(part, dict) and part.get("type") == "text")
    return ""


def parse_question(text: str) -> ChatQuestion:
    """Split `text` into a question and options A, B, C... in order (at least two); else free text.

    Lines between two options continue the earlier option; text after the last option (an instruction such
    as "Answer with the letter") is kept at the end of the question, so nothing the user wrote is lost.
    Linear in the text's length: each line is matched once (a server parses whatever a caller sends).
    """
    lines = text.strip().splitlines()
    # (letter, option text) per line that reads as an option, None for any other line.
    found = [_option(unicodedata.normalize("NFKC", line)) for line in lines]
    start = next((i for i, option in enumerate(found) if option is not None and option[0] == "A"), None)
    if start is None:
        return ChatQuestion(text.strip(), None)
    last_line_of: dict[str, int] = {}  # letter -> the last line that offers it (a wrapped line needs one later)
    for i, option in enumerate(found):
        if option is not None:
            last_line_of[option[0]] = i
    options: dict[str, str] = {}
    last_option_line = start
    expected = "A"
    for i in range(start, len(lines)):
        option = found[i]
        if option is not None and option[0] == expected:
            options[expected] = option[1]
            last_option_line = i
            expected = chr(ord(expected) + 1)
        elif lines[i].strip() and options and option is None:
            if last_line_of.get(expected, -1) > i:
                options[chr(ord(expected) - 1)] += " " + lines[i].strip()  # a wrapped option line
                last_option_line = i
            else:
                break
        elif lines[i].strip():
            break  # an out-of-order letter: this is not an option list after all
    if len(options) < MIN_OPTIONS:
        return ChatQuestion(text.strip(), None)
    question = "\n".join(lines[:start]).strip()
    trailing = "\n".join(lines[last_option_line + 1:]).strip()
    if trailing:
        question = f"{question}\n{trailing}" if question else trailing
    if not question:
        return ChatQuestion(text.strip(), None)
    return ChatQuestion(question, {letter: body.strip() for letter, body in options.items()})


def _option(line: str) -> tuple[str, str] | None:
    """(letter, text) when the NFKC-normalised `line` starts an option with some text; None otherwise."""
    match = _OPTION_LINE.match(line)
    if match is None or not match.group(2).strip():
        return None
    return match.group(1), match.group(2)
