"""A deterministic stand-in for the black-box LLM that understands BLADE's own prompts.

It recognises a request by rendering the project's templates itself (so edited templates keep working):
a knowledge-generation prompt is matched exactly; an answer prompt is matched on the text around the
knowledge slot, which yields the knowledge the caller sent. Its answers follow simple, documented rules,
so tests can predict every score and BPO has a real signal to optimise:

- knowledge generation: names the correct options' text (or, for ids in `misleading_ids`, a wrong one);
- answering without knowledge: correct for a fixed `baseline_accuracy` share of items (by id hash);
- answering with knowledge: correct when the knowledge covers at least `coverage_needed` of the content
  words of the correct options; else it picks the wrong option the knowledge overlaps most.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from blade_plugin.qa.prompts import PromptSet
from blade_plugin.qa.data import QAItem

_SLOT = "\u2063BLADE-KNOWLEDGE-SLOT\u2063"
_WORD = re.compile(r"[a-z0-9]+|[\u4e00-\u9fff]", re.IGNORECASE)
_STOP = {"the", "a", "an", "of", "and", "or", "to", "in", "is", "are", "for", "with", "by", "on", "at", "as", "be"}


def content_words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)} - _STOP


def _stable_fraction(*parts: str) -> float:
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class QAOracle:
    items: list[QAItem]
    prompts: PromptSet
    baseline_accuracy: float = 0.4
    coverage_needed: float = 0.5
    misleading_ids: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._by_kg_prompt = {self._key(self.prompts.knowledge_generation(i)): i for i in self.items}
        self._answer_frames = []
        for item in self.items:
            messages = self.prompts.answer(item, _SLOT)
            content = messages[-1]["content"]
            before, _, after = content.partition(_SLOT)
            self._answer_frames.append((item, self._key(messages[:-1]), before, after))
        self._by_baseline_prompt = {self._key(self.prompts.answer(i, "")): i for i in self.items}

    @staticmethod
    def _key(messages: list[dict]) -> str:
        return json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)

    # --- the rules -------------------------------------------------------------------------------
    def knowledge_for(self, item: QAItem) -> str:
        if item.options is None:
            return f"Relevant fact: the answer is {item.answer}."
        letters = item.answer if item.id not in self.misleading_ids else self._wrong_letters(item)[:1]
        facts = "; ".join(item.options[letter] for letter in letters)
        return f"Relevant knowledge: {facts}."

    def answer_for(self, item: QAItem, knowledge: str) -> str:
        if item.options is None:
            correct = item.answer.lower() in knowledge.lower() if knowledge else \
                _stable_fraction(item.id) < self.baseline_accuracy
            return str(item.answer) if correct else "I am not sure."
        if not knowledge:
            correct = _stable_fraction(item.id) < self.baseline_accuracy
        else:
            correct = self.coverage(item, knowledge) >= self.coverage_needed
        letters = item.answer if correct else self._best_wrong(item, knowledge)
        return "Answer: " + ", ".join(letters)

    def coverage(self, item: QAItem, knowledge: str) -> float:
        wanted = set().union(*(content_words(item.options[letter]) for letter in item.answer))
        if not wanted:
            return 0.0
        return len(wanted & content_words(knowledge)) / len(wanted)

    def _wrong_letters(self, item: QAItem) -> list[str]:
        return [letter for letter in sorted(item.options) if letter not in item.answer]

    def _best_wrong(self, item: QAItem, knowledge: str) -> tuple[str, ...]:
        wrong = self._wrong_letters(item) or sorted(item.options)
        have = content_words(knowledge)
        return (max(wrong, key=lambda letter: (len(content_words(item.options[letter]) & have), letter == wrong[0])),)

    # --- the responder protocol of StubOpenAIServer ---------------------------------------------
    def __call__(self, messages: list[dict], body: dict | None = None) -> str:
        key = self._key(messages)
        if key in self._by_kg_prompt:
            return self.knowledge_for(self._by_kg_prompt[key])
        if key in self._by_baseline_prompt:
            return self.answer_for(self._by_baseline_prompt[key], "")
        content = messages[-1]["content"] if messages else ""
        head = self._key(messages[:-1])
        for item, frame_head, before, after in self._answer_frames:  # heads pre-encoded: O(1) per frame
            if frame_head == head and content.startswith(before) and content.endswith(after) \
                    and len(content) >= len(before) + len(after):
                return self.answer_for(item, content[len(before):len(content) - len(after)].strip())
        return "I don't know."
