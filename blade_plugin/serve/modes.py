"""What the LLM behind `blade-bpo serve` sees (`--combine`), and the default: the mode the workspace's ablation
measured best among those this server can run.

=======================  ======================  ==========================================================
mode                     its ablation row        needs
=======================  ======================  ==========================================================
knowledge                blade (with a soft      - (today's behaviour: the small model's knowledge alone)
                         prompt) or dp_kit
passages                 retrieval (plain BM25)  --corpus (the small model writes nothing)
passages+knowledge       passages+knowledge      --corpus
knowledge-as-query       knowledge-as-query      --corpus
knowledge-from-passages  knowledge-from-passages --corpus and a small model trained with passages in its query
=======================  ======================  ==========================================================
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..extras.errors import BladeError
from ..qa.combine_modes import (
    KNOWLEDGE_AS_QUERY,
    KNOWLEDGE_FROM_PASSAGES,
    PASSAGES_AND_KNOWLEDGE,
)
from ..runs.marker import MARKER

logger = logging.getLogger(__name__)

KNOWLEDGE = "knowledge"
PASSAGES = "passages"
SERVE_MODES = (KNOWLEDGE, PASSAGES, PASSAGES_AND_KNOWLEDGE, KNOWLEDGE_AS_QUERY, KNOWLEDGE_FROM_PASSAGES)
COMBINED = frozenset({PASSAGES_AND_KNOWLEDGE, KNOWLEDGE_AS_QUERY, KNOWLEDGE_FROM_PASSAGES})  # evaluate's modes
RETRIEVING = frozenset(SERVE_MODES) - {KNOWLEDGE}  # modes that need --corpus
WRITING = frozenset(SERVE_MODES) - {PASSAGES}  # modes in which the small model writes knowledge
# modes whose passages reach the LLM (in a multiple-choice prompt as the ablation row put them, see augment.py)
SHOWING_PASSAGES = frozenset({PASSAGES, PASSAGES_AND_KNOWLEDGE, KNOWLEDGE_AS_QUERY})
# the ablation files a workspace may hold, in the order they are preferred: dev chooses settings (issue 29)
ABLATION_FILES = ("runs/ablation_dev/ablation.json", "runs/ablation/ablation.json", "report.json")


def row_key(mode: str, soft_prompt: bool) -> str:
    """The ablation row that measured `mode` as this server runs it."""
    if mode == KNOWLEDGE:
        return "blade" if soft_prompt else "dp_kit"
    return "retrieval" if mode == PASSAGES else mode


@dataclass(frozen=True)
class ServeInputs:
    """What the server was started with, as far as the choice of a mode is concerned."""

    corpus: bool  # --corpus given
    reads_passages: bool  # the small model was trained with retrieved passages in its query
    soft_prompt: bool  # a soft prompt of at least one token


def why_not(mode: str, inputs: ServeInputs) -> str | None:
    """Why this server cannot run `mode`, or None."""
    if mode in RETRIEVING and not inputs.corpus:
        return f"--combine {mode} retrieves passages: give --corpus FILE (the {{\"text\"}} JSONL corpus)"
    if mode == KNOWLEDGE_FROM_PASSAGES and not inputs.reads_passages:
        return ("--combine knowledge-from-passages needs a small model trained with retrieved passages in its query "
                "(KIT data from `knowledge --query-corpus`, a workspace's saves/kit_passages_*); this one was not "
                "(--small-model-reads-passages if it was trained so by hand)")
    return None


def check_mode(mode: str, inputs: ServeInputs) -> None:
    """BladeError (one line) if this server cannot run `mode`."""
    reason = why_not(mode, inputs)
    if reason is not None:
        raise BladeError(reason)


def reads_passages(small_model: str | None, adapter: str | None) -> bool:
    """Whether the served small model was trained for knowledge-from-passages: `blade-bpo run` marks its model
    directory (blade_stage.json, stage kit_passages); `ablate --workspace` finds it as saves/kit_passages_*."""
    path = adapter or small_model
    if not path:
        return False  # the embedded model
    directory = Path(path)
    if directory.resolve().name.startswith("kit_passages"):
        return True
    try:
        marker = json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("stage") == "kit_passages"


@dataclass(frozen=True)
class Choice:
    mode: str
    reason: str  # one log line: where the mode came from


def _ablation_rows(path: Path) -> dict[str, dict]:
    """{row key: row} of the rows that ran in an ablation.json or a `blade-bpo run` report.json."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise BladeError(f"{path}: cannot read the ablation result ({err})") from None
    rows = (data.get("rows") if path.name == "ablation.json" else data.get("ablation")) if isinstance(data, dict) \
        else None
    if not isinstance(rows, list):
        return {}
    return {row["key"]: row for row in rows if isinstance(row, dict) and isinstance(row.get("key"), str)
            and "skipped" not in row and isinstance(row.get("accuracy"), (int, float))}


def ablation_file(workspace: Path) -> Path | None:
    """The first of ABLATION_FILES in `workspace` that holds ablation rows."""
    for name in ABLATION_FILES:
        path = workspace / name
        if path.is_file() and _ablation_rows(path):
            return path
    return None


def default_mode(workspace: Path | None, inputs: ServeInputs) -> Choice:
    """The mode whose ablation row had the best accuracy among those this server can run (ties: fewer LLM
    prompt tokens per question, then the order of SERVE_MODES); without an ablation, knowledge, or with
    --corpus passages+knowledge (both sources, each labelled)."""
    path = ablation_file(workspace) if workspace is not None else None
    if path is not None:
        rows = _ablation_rows(path)
        measured = {mode: rows[row_key(mode, inputs.soft_prompt)] for mode in SERVE_MODES
                    if row_key(mode, inputs.soft_prompt) in rows}
        runnable = {mode: row for mode, row in measured.items() if why_not(mode, inputs) is None}
        if runnable:
            def rank(mode: str) -> tuple:
                tokens = runnable[mode].get("llm_prompt_tokens_per_question")
                return (-runnable[mode]["accuracy"], tokens if isinstance(tokens, (int, float)) else float("inf"),
                        SERVE_MODES.index(mode))

            order = sorted(runnable, key=rank)
            others = ", ".join(f"{mode} {runnable[mode]['accuracy']:.3f}" for mode in order[1:])
            left_out = [f"{mode} {row['accuracy']:.3f} (not runnable here: {why_not(mode, inputs)})"
                        for mode, row in measured.items() if mode not in runnable]
            reason = (f"ablation {path} chose {order[0]}: accuracy {runnable[order[0]]['accuracy']:.3f}"
                      + (f" vs {others}" if others else "") + ("; left out: " + "; ".join(left_out) if left_out else ""))
            return Choice(order[0], reason)
        missing = f"ablation {path} measured none of the modes this server can run"
    elif workspace is not None:
        missing = f"no ablation result in {workspace} ({', '.join(ABLATION_FILES)})"
    else:
        missing = "no --workspace, so no ablation result"
    if inputs.corpus:
        return Choice(PASSAGES_AND_KNOWLEDGE, f"{missing}: --corpus given, so passages+knowledge (the passages and "
                                              "the knowledge, each labelled); --combine chooses another")
    return Choice(KNOWLEDGE, f"{missing} and no --corpus: knowledge (the small model's knowledge alone)")
