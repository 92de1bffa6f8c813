"""`serve`'s startup for `--combine` and `--corpus`: the mode (given, or the workspace ablation's choice), the
checks that it can run here (one line each, before the model loads), and the BM25 retriever."""

from __future__ import annotations

import logging
from pathlib import Path

from ..extras.errors import BladeInputError
from ..qa.prompts import PromptSet
from ..retrieval.combine import PassageRetriever, check_templates
from .modes import (
    COMBINED,
    KNOWLEDGE,
    RETRIEVING,
    SHOWING_PASSAGES,
    ServeInputs,
    check_mode,
    default_mode,
    reads_passages,
)

logger = logging.getLogger(__name__)


def choose_mode(combine: str | None, workspace: str | None, corpus: str | None, small_model: str | None,
                adapter: str | None, soft_prompt: str | None, reads_passages_flag: bool, prompts: PromptSet,
                chat_prompts: PromptSet) -> str:
    """The mode this server runs: `combine`, or the default rule (modes.default_mode), logged with its reason;
    BladeError if it cannot run here (no corpus, a model not trained for it, a template without passages)."""
    inputs = ServeInputs(corpus=bool(corpus), soft_prompt=bool(soft_prompt),
                         reads_passages=reads_passages_flag or reads_passages(small_model, adapter))
    if combine is None:
        choice = default_mode(Path(workspace) if workspace else None, inputs)
        logger.info("--combine not given: %s", choice.reason)
        mode = choice.mode
    else:
        mode = combine
        if workspace:
            logger.info("--combine %s given: the --workspace ablation does not choose", mode)
    check_mode(mode, inputs)
    if mode in COMBINED:
        check_templates(prompts, [mode])
    if mode in SHOWING_PASSAGES and not chat_prompts.uses_variable("chat_system.j2", "passages"):
        raise BladeInputError(Path(chat_prompts.directory) / "chat_system.j2",
                              f"--combine {mode} needs this template to render `passages` for free chat (copy the "
                              "`{% if passages %}` block of the bundled template)")
    if corpus and mode == KNOWLEDGE:
        logger.info("--combine knowledge: --corpus %s is not used (the LLM sees the small model's knowledge alone)",
                    corpus)
    return mode


def load_retriever(mode: str, corpus: str | None, k: int, passage_chars: int, retrieval_query: str
                   ) -> PassageRetriever | None:
    """The BM25 retriever of a mode that retrieves (a bad corpus line fails here, naming it), else None."""
    if mode not in RETRIEVING:
        return None
    retriever = PassageRetriever.from_jsonl(corpus, k, passage_chars or None, retrieval_query == "question+options")
    logger.info("BM25 over %s: %d passages, top %d per question, each cut to %s characters, query: %s", corpus,
                len(retriever.index.texts), k, passage_chars or "no", retrieval_query)
    return retriever
