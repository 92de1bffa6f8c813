"""Putting the small LM's knowledge into a chat request, through the same Jinja templates as every command.

A multiple-choice question (the last user message lists options) is rewritten with `answer.j2`, exactly as
BPO and evaluation ask it; free chat keeps the user's words and gets the knowledge as a system message from
`chat_system.j2`. The small LM always sees `small_model_query.j2`, as in KIT training.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from ..qa.data import QAItem
from ..qa.prompts import PromptSet
from .question import ChatQuestion, message_text, parse_question


def last_user_index(messages: list[dict]) -> int | None:
    """Index of the message that carries the question: the last one, if it is the user's."""
    if messages and messages[-1].get("role") == "user":
        return len(messages) - 1
    return None  # e.g. a tool result turn: the question was asked (and augmented) earlier


def question_of(messages: list[dict]) -> ChatQuestion | None:
    index = last_user_index(messages)
    if index is None:
        return None
    text = message_text(messages[index].get("content"))
    return parse_question(text) if text.strip() else None


def item_of(question: ChatQuestion) -> QAItem:
    """The question as the QA item the templates and the retriever take."""
    return QAItem(id="request", question=question.question, options=question.options, answer=(), meta={})


def small_model_text(prompts: PromptSet, question: ChatQuestion) -> str:
    """The small LM's input for `question` (also the knowledge cache key)."""
    return prompts.small_model_query(item_of(question))


def with_knowledge(messages: list[dict], question: ChatQuestion, knowledge: str, prompts: PromptSet,
                   chat_system: PromptSet) -> list[dict]:
    """A copy of `messages` carrying `knowledge` (the caller's list is not modified).

    chat_system: the PromptSet whose `chat_system.j2` frames knowledge for free chat (the bundled one when
    the user's templates directory predates that file).
    """
    return with_evidence(messages, question, knowledge, (), prompts, chat_system)


def with_evidence(messages: list[dict], question: ChatQuestion, knowledge: str, passages: Sequence[str],
                  prompts: PromptSet, chat_system: PromptSet, passages_as_knowledge: bool = False) -> list[dict]:
    """A copy of `messages` carrying `knowledge` and the corpus `passages`, each under its own label.

    A multiple-choice question is re-asked through `answer.j2` exactly as the ablation row of the same mode
    asked it: `passages_as_knowledge` (the passages and knowledge-as-query modes) puts the passages, one per
    line, in the knowledge slot, as the BM25 row does; otherwise they go in answer.j2's passages block. Free
    chat gets one system message from `chat_system.j2` with a block per source.
    """
    passages = [p for p in passages if p.strip()]
    knowledge = knowledge if knowledge.strip() else ""
    if passages_as_knowledge:
        knowledge = "\n".join(passages) if question.options else ""
        passages = [] if question.options else passages
    if not knowledge.strip() and not passages:
        return messages
    out = copy.deepcopy(messages)
    if question.options:
        out[-1]["content"] = prompts.answer(item_of(question), knowledge, passages)[-1]["content"]
        return out
    system = chat_system.chat_system(knowledge, passages)
    if out[0].get("role") in ("system", "developer") and isinstance(out[0].get("content"), str):
        # One system turn, not two: several chat templates (LLaMA-Factory's among them) accept only one.
        out[0]["content"] = f"{out[0]['content']}\n\n{system}" if out[0]["content"].strip() else system
    else:
        out.insert(0, {"role": "system", "content": system})
    return out
