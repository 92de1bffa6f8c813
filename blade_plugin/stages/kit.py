"""KIT data: the black-box LLM writes question-oriented knowledge from (question, gold answer), and a
consistency filter keeps only knowledge that lets the LLM answer correctly without seeing the gold.

A bounded streaming pipeline: each item chains its knowledge request and its answer request, and up to
twice the client's concurrency items are in flight at once, so the endpoint always has work queued (no
chunk waits for its slowest request). Each item is appended to a JobLog beside the output as it
finishes (any order), so a crash or Ctrl-C loses only the items in flight and a re-run asks the LLM nothing
it already answered. An item whose request fails after the client's retries is recorded as an error (not
kept) instead of cancelling the others; more than `max_errors` failed items stop the run.

For the knowledge-from-passages mode (retrieval/combine.py) a `query_retriever` puts the passages retrieved for
each question (BM25 on the question as at inference, not the oracle passages grounded KIT gives the LLM) into
the small model's query, so it is trained on what it will be given; every row records them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..runs.progress import tqdm

from ..qa.answers import answer_response_format, score_answer
from ..llm.budget import BudgetExceeded
from ..extras.errors import LLMError
from ..runs.fingerprint import JobFingerprint, job_fingerprint
from ..qa.answering import ErrorBudget, resolve_max_errors
from ..runs.atomic_io import atomic_write_jsonl
from ..runs.job_log import JobLog
from ..qa.prompts import PromptSet
from ..qa.data import QAItem

if TYPE_CHECKING:
    from ..llm.base import LLMClientProtocol
    from ..retrieval.combine import PassageRetriever

logger = logging.getLogger(__name__)

# Templates a KIT row depends on (small_model_query.j2 only shapes the final file, re-rendered every run).
KIT_TEMPLATES = ("knowledge_generation.j2", "answer.j2", "system.j2")


@dataclass
class KitStats:
    total: int = 0
    kept: int = 0
    dropped: int = 0  # knowledge that led to a wrong answer (errors not included)
    unparseable: int = 0  # consistency-check replies with no readable answer (their knowledge is dropped)
    errors: int = 0  # items whose LLM request failed after retries (not kept)
    resumed: int = 0  # items found finished in the progress file
    seconds: float = 0.0
    usage: dict = field(default_factory=dict)
    failed: list = field(default_factory=list)  # [{"id", "error"}] for each error

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def progress_path_for(out_path: Path) -> Path:
    return out_path.with_name(out_path.name + ".progress.jsonl")


def kit_fingerprint(items: list[QAItem], prompts: PromptSet, llm_identity: dict,
                    grounding: dict | None = None, query_passages: dict | None = None) -> JobFingerprint:
    """What a KIT progress row depends on: every field of every item, the templates, the LLM, for grounded
    KIT the corpus and the number of passages, and for passages in the small model's query their settings
    (PassageRetriever.settings)."""
    extra = {"corpus": grounding} if grounding else {}
    if query_passages:
        extra["query passages"] = query_passages
    return job_fingerprint(items=items, prompts=prompts, template_names=KIT_TEMPLATES, llm=llm_identity, **extra)


def grounding_query(item: QAItem) -> str:
    """What grounded KIT retrieves with: the question and the correct answer's text (the passages that
    support the correct answer, not every option's)."""
    if item.options and isinstance(item.answer, tuple):
        return " ".join([item.question, *(item.options[a] for a in item.answer)])
    return f"{item.question} {item.answer_display}"


async def kit_item(item: QAItem, prompts: PromptSet, client: LLMClientProtocol,
                   passages: list | None = None) -> dict:
    """One item's progress row: knowledge from (question, gold[, corpus passages]), then the LLM answering
    with it. `passages` are retrieval.Passage objects, recorded in the row."""
    knowledge = ""
    recorded = {"passages": [p.as_dict() for p in passages]} if passages is not None else {}
    try:
        knowledge = (await client.acomplete(prompts.knowledge_generation(
            item, [p.text for p in passages or ()]))).strip()
        raw = await client.acomplete(prompts.answer(item, knowledge), answer_response_format(item.options))
    except LLMError as err:
        return error_row(item, knowledge, str(err), recorded)
    return item_row(item, knowledge, raw, recorded)


def item_row(item: QAItem, knowledge: str, raw: str, recorded: dict | None = None) -> dict:
    """The progress row of an item whose knowledge and consistency-check answer are in (online or batch);
    `recorded`: what grounded KIT adds (its passages)."""
    recorded = recorded or {}
    score = score_answer(item, raw)
    parsed = list(score.parsed) if isinstance(score.parsed, tuple) else score.parsed
    return {"type": "item", "id": item.id, "knowledge": knowledge, "llm_answer": raw, "parsed": parsed,
            "unparseable": score.unparseable, "kept": bool(score.correct and knowledge), **recorded}


def error_row(item: QAItem, knowledge: str, error: str, recorded: dict | None = None) -> dict:
    return {"type": "item", "id": item.id, "knowledge": knowledge, "llm_answer": "", "parsed": None,
            "kept": False, "error": error, **(recorded or {})}


def generate_kit_data(
    items: list[QAItem],
    prompts: PromptSet,
    client: LLMClientProtocol,
    out_path: Path,
    chunk_size: int | None = None,
    restart: bool = False,
    progress_bar: bool = True,
    max_errors: int | float | None = None,
    corpus=None,
    corpus_k: int = 3,
    query_retriever: PassageRetriever | None = None,
) -> KitStats:
    """Write alpaca rows (instruction = small-model query, output = kept knowledge) to `out_path`.

    With `corpus` (a retrieval.CorpusIndex) KIT is grounded: the top `corpus_k` BM25 passages for the
    question and its correct answer go into the knowledge-generation prompt, and each row records them
    (`passages`: the progress rows with score and corpus line, the alpaca rows their text).
    With `query_retriever` (knowledge-from-passages) each item's instruction is the small-model query with the
    passages it retrieves for the item (`query_passages` in the progress rows with score and corpus line, and in
    the alpaca rows their text and corpus lines); the LLM's prompts do not change.
    `chunk_size` is accepted for old callers and ignored: progress is saved per item.
    """
    started = time.perf_counter()
    if query_retriever is not None:
        from ..retrieval.combine import KNOWLEDGE_FROM_PASSAGES, check_templates

        check_templates(prompts, [KNOWLEDGE_FROM_PASSAGES])
    out_path = Path(out_path)
    progress_path = progress_path_for(out_path)
    grounding = {"digest": corpus.digest, "k": corpus_k} if corpus is not None else None
    query_settings = query_retriever.settings() if query_retriever is not None else None
    log = JobLog(progress_path, kit_fingerprint(items, prompts, client.identity(), grounding, query_settings),
                 restart=restart)
    done = log.load(key=lambda row: row["id"])
    finished = {key for key, row in done.items() if not row.get("error")}

    stats = KitStats(total=len(items), resumed=sum(1 for item in items if item.id in finished))
    if done:
        retried = sum(1 for item in items if item.id in done and item.id not in finished)
        logger.info("Resuming: %d of %d items already done (%s)%s", stats.resumed, len(items), progress_path,
                    f"; retrying {retried} that failed" if retried else "")
    todo = [item for item in items if item.id not in finished]
    budget = ErrorBudget(resolve_max_errors(max_errors, len(items)), len(items))
    bar = tqdm(total=len(items), initial=stats.resumed, desc="KIT knowledge", unit="q",
               disable=None if progress_bar else True)
    window = asyncio.Semaphore(max(1, 2 * getattr(client.config, "concurrency", 8)))

    async def one(item: QAItem) -> None:
        async with window:
            passages = corpus.search(grounding_query(item), corpus_k) if corpus is not None else None
            try:
                row = await kit_item(item, prompts, client, passages)
            except BudgetExceeded:
                return  # no new request starts; those in flight finish and are saved
        if query_retriever is not None:
            row["query_passages"] = [p.as_dict() for p in query_retriever.search(item)]
        log.append(row)
        done[row["id"]] = row
        bar.update(1)
        if row.get("error"):
            budget.charge(row["error"])

    async def run_all() -> None:
        # One event loop for the whole job: the async HTTP client's connection pool is bound to it.
        tasks = [asyncio.create_task(one(item)) for item in todo]
        try:
            await asyncio.gather(*tasks)
        except BaseException as err:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if isinstance(err, LLMError):
                saved = sum(1 for row in done.values() if not row.get("error"))
                raise LLMError(f"{err} -- {saved} of {len(items)} items are saved in {progress_path}; "
                               "re-run the same command to resume") from err
            raise

    try:
        client.run(run_all())
    except KeyboardInterrupt:
        saved = sum(1 for row in done.values() if not row.get("error"))
        logger.warning("Interrupted: %d of %d items are saved in %s; re-run the same command to resume",
                       saved, len(items), progress_path)
        raise
    finally:
        bar.close()
    if getattr(client, "budget", None) is not None and client.budget.closed is not None:
        raise BudgetExceeded(client.budget.stop_message(str(progress_path)))

    return write_kit_outputs(items, prompts, done, out_path, stats, client, started)


def write_kit_outputs(items: list[QAItem], prompts: PromptSet, done: dict, out_path: Path, stats: KitStats, client,
                      started: float) -> KitStats:
    """kit.jsonl and its stats from the finished progress rows (`done`, by id): the same for every path."""
    kept_rows = []
    for item in items:
        row = done[item.id]
        if row["kept"]:
            query_passages = [p["text"] for p in row.get("query_passages") or ()]
            kept = {"instruction": prompts.small_model_query(item, query_passages), "input": "",
                    "output": row["knowledge"]}
            if "passages" in row:  # LLaMA-Factory reads only the columns dataset_info maps; this one is for people
                kept["passages"] = [p["text"] for p in row["passages"]]
            if "query_passages" in row:  # the passages in `instruction`, with their corpus lines
                kept["query_passages"] = query_passages
                kept["query_passage_lines"] = [p["line"] for p in row["query_passages"]]
            kept_rows.append(kept)
    JobLog.publish(out_path, kept_rows)
    stats.kept = len(kept_rows)
    stats.failed = [{"id": item.id, "error": done[item.id]["error"]} for item in items if done[item.id].get("error")]
    stats.errors = len(stats.failed)
    stats.dropped = len(items) - stats.kept - stats.errors
    stats.unparseable = sum(1 for item in items if not done[item.id].get("error")
                            and done[item.id].get("unparseable", done[item.id].get("parsed") in (None, "")))
    stats.seconds = round(time.perf_counter() - started, 3)
    stats.usage = client.usage.as_dict()
    JobLog.publish(out_path.with_name(out_path.name + ".stats.json"), stats.as_dict())
    return stats


# The knowledge length when max_new_tokens is not given: the 90th percentile of the KIT training
# knowledge's length in small-model tokens, within these bounds. A fixed 24 fitted the English knowledge
# (90% of it is at most 22 tokens) but cut every statute knowledge before its fact: SmolLM2's tokenizer
# spends about three tokens on a Chinese character (docs/evidence.md). Training data only: no dev or test
# item is looked at. The floor keeps English as it was; the cap bounds the cost of a rambling writer.
KNOWLEDGE_BUDGET_RANGE = (24, 64)


def knowledge_budget(kit_file: Path, model_dir: str | os.PathLike, quantile: float = 0.9) -> int:
    """Tokens of knowledge to generate: the `quantile` of the KIT outputs' token lengths (the small model's
    tokenizer, numpy's linear interpolation, rounded up), clipped to KNOWLEDGE_BUDGET_RANGE; the floor when
    there is no KIT data."""
    import math

    import numpy as np
    from transformers import AutoTokenizer

    low, high = KNOWLEDGE_BUDGET_RANGE
    from ..runs.atomic_io import jsonl_records

    outputs = [row["output"] for _, row in jsonl_records(kit_file)] if Path(kit_file).is_file() else []
    if not outputs:
        return low
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    lengths = [len(ids) for ids in tokenizer(outputs, add_special_tokens=False)["input_ids"]]
    return max(low, min(high, math.ceil(float(np.quantile(lengths, quantile)))))


def write_corpus_replay(corpus: Path, kit_file: Path, prompts, n: int, seed: int, out: Path) -> int:
    """`n` corpus documents as KIT rows: the query on the document's first half, the whole document (after
    the KIT knowledge's own lead-in, e.g. "Relevant knowledge:") as the answer. KIT alone rewrites the DP
    model towards the facts its questions ask; these rows keep it stating corpus facts it was not asked about,
    in the same chat turn it answers questions in."""
    from ..qa.data import QAItem

    docs = [json.loads(line)["text"] for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    outputs = [json.loads(line)["output"] for line in kit_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    lead = os.path.commonprefix(outputs) if outputs else ""
    lead = lead[:max(lead.rfind(":"), lead.rfind("："), -1) + 1]
    lead += " " if lead.endswith(":") else ""
    rows = []
    for i, doc in enumerate(random.Random(seed).sample(docs, min(n, len(docs)))):
        words = doc.split()  # English: the first half of the words; Chinese (no spaces): of the characters
        cue = " ".join(words[:(len(words) + 1) // 2]) if len(words) > 1 else doc[:(len(doc) + 1) // 2]
        item = QAItem(id=f"replay-{i}", question=cue, options=None, answer="")
        rows.append({"instruction": prompts.small_model_query(item), "input": "", "output": lead + doc})
    atomic_write_jsonl(out, rows)
    return len(rows)
