"""The offline evidence reader: a deterministic stand-in for the black-box LLM that only reads.

What it measures: whether the knowledge in a prompt *carries the right facts*, not LLM reasoning. It answers a
multiple-choice question with the option(s) the knowledge in the prompt states (content-unit coverage, see
`blade_plugin.qa.knowledge_support`), so with it an accuracy is "how often the small LM's knowledge named the
correct option and no distractor". It cannot infer, combine facts, or use world knowledge; a real LLM can do
more (and may ignore the knowledge). Use it to see whether DP/KIT/BPO taught the small model the domain before
paying for an endpoint, never as an estimate of what a real LLM will score.

Rules, applied to the prompt text only (it never sees an item's gold answer unless the prompt itself is the
KIT prompt, which carries it by design):

- ANSWER prompt (templates/answer.j2 or the zh_legal / zh_medical variants): parse question, options and the
  background knowledge, with the retrieved passages when the prompt has that block (read as more knowledge). Every option whose support is at least `threshold` is answered (several for
  multi-answer questions) except one whose words are a fragment of another chosen option's; if none reaches
  it, the best-supported option; if the knowledge supports no option
  at all (or is absent), a guess: an option picked by a hash of the question and options, so an LLM-only run
  scores near chance (1/4 on single-answer A-D items, 0 on multi-answer ones) and the same prompt always
  gets the same reply. Replies like an LLM: one sentence of reasoning, then "Answer: B" ("答案：B" in Chinese).
- KIT prompt (templates/knowledge_generation.j2 and variants: question + "Correct answer: X"): state the
  correct option's text, e.g. "Relevant knowledge: Wyndoquel." (for "What is the antidote for Gorvaxin?").
  Grounded KIT (`knowledge --corpus`: the prompt lists corpus passages): restate the passage that states the
  correct option(s) best, earliest first ("Relevant knowledge: An overdose of Gorvaxin is reversed with
  Wyndoquel."); the bare option text only when no passage states it. It reads nothing but the prompt.
- anything else: "I don't know."

Use it in process (`--llm-backend reader`) or over real HTTP on loopback as an OpenAI-compatible endpoint:

    python -m blade_plugin.llm.reader --port 8000      # then --llm-base-url http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..extras.lexical import discriminative_units, option_support
from .local import LocalGeneration

logger = logging.getLogger(__name__)

READER_VERSION = "evidence-reader-3"  # part of the cache identity: bump when the rules change
DEFAULT_THRESHOLD = 0.75

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_OPTION_LINE = re.compile(r"^([A-Z])\.\s+(.*\S)\s*$")


@dataclass(frozen=True)
class ParsedPrompt:
    """What the reader understood of a prompt. `correct` is only set for the KIT prompt (it carries the gold)."""

    kind: str  # "answer" | "kit" | "unknown"
    question: str = ""
    options: Mapping[str, str] | None = None
    knowledge: str = ""
    correct: str = ""
    chinese: bool = False
    passages: tuple[str, ...] = ()  # grounded KIT prompts: the corpus passages listed in the prompt


# Headers of the bundled templates (English, zh_legal, zh_medical). The knowledge block runs to the LAST
# blank line before a question header, so knowledge that itself contains "Question:" is read whole.
# The answer prompt's passages block (passages+knowledge, retrieval/combine.py) follows the knowledge, or stands
# alone when the knowledge is empty: either header opens the evidence, and the passages header itself is not read.
_PASSAGES_HEADER = r"(?:Passages from the corpus \(retrieved for this question\):|语料摘录（为本题检索所得）：)"
_KNOWLEDGE = re.compile(r"(?:Background knowledge \(may be incomplete\):|参考\S{0,4}知识（可能不完整）：|"
                        + _PASSAGES_HEADER + r")[ \t]*\n(.*)\n[ \t]*\n(?=(?:Question:|题目：)[ \t]*\n)", re.DOTALL)
_PASSAGES_HEADER_LINE = re.compile(r"^[ \t]*" + _PASSAGES_HEADER + r"[ \t]*$", re.MULTILINE)
_QUESTION = re.compile(r"(?:^|\n)(?:Question:|题目：)[ \t]*\n?(.*?)"
                       r"(?=\n(?:Options:|选项：|Correct answer:|正确答案：)|\n[ \t]*\n|\Z)", re.DOTALL)
_OPTIONS = re.compile(r"\n(?:Options:|选项：)[ \t]*\n((?:[A-Z]\.[^\n]*(?:\n|\Z))+)")
_PASSAGES = re.compile(r"\n(?:Passages from the corpus[^\n]*:|语料摘录[^\n]*：)[ \t]*\n((?:- [^\n]*(?:\n|\Z))+)")
_CORRECT = re.compile(r"^(?:Correct answer:|正确答案：)[ \t]*(.+?)\s*$", re.MULTILINE)


def parse_prompt(text: str) -> ParsedPrompt:
    """Recognise a BLADE answer or KIT prompt rendered from the bundled templates."""
    knowledge_match = _KNOWLEDGE.search(text)
    knowledge = _PASSAGES_HEADER_LINE.sub("", knowledge_match.group(1)).strip() if knowledge_match else ""
    question_match = _QUESTION.search(text, knowledge_match.end() - 1 if knowledge_match else 0)
    if question_match is None:
        return ParsedPrompt("unknown")
    question = question_match.group(1).strip()
    options = None
    options_match = _OPTIONS.search(text, question_match.end() - 1)
    if options_match:
        options = {}
        for line in options_match.group(1).splitlines():
            m = _OPTION_LINE.match(line)
            if m:
                options[m.group(1)] = m.group(2)
    chinese = bool(_CJK.search(question))
    # only a prompt without a knowledge block can be the KIT prompt (knowledge may quote "Correct answer:")
    correct_match = None if knowledge_match else _CORRECT.search(text, question_match.end())
    if correct_match:
        passages_match = _PASSAGES.search(text, question_match.end() - 1, correct_match.start() + 1)
        passages = tuple(line[2:].strip() for line in passages_match.group(1).splitlines()
                         if line.startswith("- ")) if passages_match else ()
        return ParsedPrompt("kit", question, options, "", correct_match.group(1).strip(), chinese, passages)
    return ParsedPrompt("answer", question, options, knowledge, "", chinese)


def supporting_passages(passages: Sequence[str], answers: Sequence[str], question: str = "",
                        options: Mapping[str, str] | None = None, threshold: float = DEFAULT_THRESHOLD) -> list[str]:
    """The fewest passages (earliest first) that state every correct answer: a passage states an answer when
    it covers at least `threshold` of the answer's discriminative units (against the other options, if
    any). Empty when some answer is stated by no passage."""
    opts = dict(options) if options else {str(i): a for i, a in enumerate(answers)}
    letters = [next((k for k, v in opts.items() if v == a), None) for a in answers]
    if None in letters:  # a free-text answer: judge it against itself only
        opts, letters = {str(i): a for i, a in enumerate(answers)}, [str(i) for i in range(len(answers))]
    covers = [{letter for letter in letters if option_support(opts, passage, question)[letter] >= threshold}
              for passage in passages]
    chosen: list[str] = []
    left = set(letters)
    while left:
        best = max(range(len(passages)), key=lambda i: (len(covers[i] & left), -i), default=None)
        if best is None or not covers[best] & left:
            return []
        chosen.append(passages[best])
        left -= covers[best]
    return chosen


def write_knowledge(question: str, answers: Sequence[str], chinese: bool = False,
                    passages: Sequence[str] = ()) -> str:
    """The reader's KIT knowledge: the shortest text that carries the fact asked, the correct option text(s).

    (It used to restate the question first. A small model trained on that copies the unseen question's wording
    and then names an option at random: the demo's DP + KIT model stated the right fact less often that way than
    with this form (same model, data and budget) and wrote more tokens; figures in docs/benchmarks.md.)

    With `passages` (already chosen by `supporting_passages`): those passages, restated whole."""
    if passages:
        return f"相关知识：{''.join(passages)}" if chinese else f"Relevant knowledge: {' '.join(passages)}"
    if chinese:
        return f"相关知识：{'、'.join(answers)}。"
    return f"Relevant knowledge: {' and '.join(answers)}."


def _guess(question: str, options: Mapping[str, str]) -> str:
    """A fixed option per prompt, uniform over the letters across prompts (sha256 of question and options)."""
    letters = sorted(options)
    digest = hashlib.sha256("\x1f".join([question, *(options[k] for k in letters)]).encode()).digest()
    return letters[int.from_bytes(digest[:8], "big") % len(letters)]


class EvidenceReader:
    """Callable as a `StubOpenAIServer` responder, and `generate()`s like `LocalChatBackend` for LLMClient."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD):
        self.threshold = threshold

    # --- decisions ----------------------------------------------------------------------------------
    def choose(self, question: str, options: Mapping[str, str], knowledge: str) -> tuple[list[str], bool]:
        """(letters, supported): the options the knowledge supports, or a hash guess (supported=False)."""
        support = option_support(options, knowledge, question) if knowledge.strip() else {}
        best = max(support.values(), default=0.0)
        if best <= 0.0:
            return [_guess(question, options)], False
        chosen = [letter for letter in sorted(options) if support[letter] >= self.threshold]
        # an option whose words are part of another chosen option's is that option's fragment: knowledge stating
        # "three years, unless the law says otherwise" chooses that option, not also "three years"
        own, _ = discriminative_units(options, question)
        chosen = [c for c in chosen if not any(own[c] < own[o] for o in chosen if o != c)]
        if not chosen:
            tied = {letter: options[letter] for letter in options if support[letter] == best}
            chosen = [_guess(question, tied)]
        return chosen, True

    def reply(self, messages: list[dict]) -> str:
        user = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
        prompt = parse_prompt(str(user))
        if prompt.kind == "kit":
            return self._kit_reply(prompt)
        if prompt.kind == "answer":
            return self._answer_reply(prompt)
        return "I don't know."

    def _kit_reply(self, prompt: ParsedPrompt) -> str:
        if prompt.options:
            letters = [c for c in re.findall(r"[A-Z]", prompt.correct.upper()) if c in prompt.options]
            answers = [prompt.options[c] for c in dict.fromkeys(letters)] or [prompt.correct]
        else:
            answers = [prompt.correct]
        passages = supporting_passages(prompt.passages, answers, prompt.question, prompt.options, self.threshold) \
            if prompt.passages else []
        return write_knowledge(prompt.question, answers, prompt.chinese, passages)

    def _answer_reply(self, prompt: ParsedPrompt) -> str:
        if not prompt.options:  # free text: repeat the knowledge's first sentence, the only evidence it has
            first = re.split(r"(?<=[.!?。！？])\s*", prompt.knowledge, maxsplit=1)[0] if prompt.knowledge else ""
            if prompt.chinese:
                return f"答案：{first or '不知道'}"
            return f"Answer: {first or 'I do not know.'}"
        letters, supported = self.choose(prompt.question, prompt.options, prompt.knowledge)
        joined = ", ".join(letters)
        if prompt.chinese:
            why = (f"参考知识提到了“{'、'.join(prompt.options[c] for c in letters)}”。" if supported
                   else "参考知识无法确定答案，只能猜测。")
            return f"{why}\n答案：{joined}"
        why = (f"The background knowledge states {' and '.join(prompt.options[c] for c in letters)}." if supported
               else "The background knowledge does not settle this, so this is a guess.")
        return f"{why}\nAnswer: {joined}"

    # --- the two ways it is served --------------------------------------------------------------------
    def __call__(self, messages: list[dict], body: dict | None = None) -> str:
        return self.reply(messages)

    def generate(self, conversations: list[list[dict]], max_new_tokens: int | None = None) -> list[LocalGeneration]:
        """Replies in order, with whitespace token counts (as the stub server reports usage)."""
        out = []
        for messages in conversations:
            text = self.reply(messages)
            prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
            out.append(LocalGeneration(text, prompt_tokens, len(text.split())))
        return out


def serve_reader(port: int = 0, threshold: float = DEFAULT_THRESHOLD, latency: float = 0.0):
    """An OpenAI-compatible HTTP server on 127.0.0.1 answering with the reader (a context manager)."""
    from .reader_server import ReaderServer

    # Any key and any model name: a local tool endpoint, as a vLLM started without --api-key.
    return ReaderServer(EvidenceReader(threshold).reply, port=port, latency=latency)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the offline evidence reader on 127.0.0.1 (OpenAI API).")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with serve_reader(args.port, args.threshold) as server:
        logger.info("evidence reader at %s (model name: any; Ctrl-C to stop)", server.base_url)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
