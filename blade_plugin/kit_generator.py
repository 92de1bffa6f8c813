"""KIT data: the black-box LLM writes question-oriented knowledge from (question, gold answer), and a
consistency filter keeps only knowledge that lets the LLM answer correctly without seeing the gold.

Progress is a ProgressLog beside the output, one row per finished item, so a crash or Ctrl-C loses at
most the chunk in flight and a re-run asks the LLM nothing it already answered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from .progress_bar import tqdm

from .qa.answers import answer_response_format, score_answer
from .errors import LLMError
from .io_utils import atomic_write_json, atomic_write_jsonl
from .progress_log import ProgressLog
from .qa.prompts import PromptSet
from .qa.data import QAItem

logger = logging.getLogger(__name__)


@dataclass
class KitStats:
    total: int = 0
    kept: int = 0
    dropped: int = 0
    unparseable: int = 0  # consistency-check replies with no readable answer (their knowledge is dropped)
    resumed: int = 0  # items found finished in the progress file
    seconds: float = 0.0
    usage: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def progress_path_for(out_path: Path) -> Path:
    return out_path.with_name(out_path.name + ".progress.jsonl")


def run_fingerprint(items: list[QAItem], prompts: PromptSet, llm_identity: dict) -> str:
    """Identifies what a progress file was made from, so a resume never mixes two different jobs."""
    h = hashlib.sha256()
    for item in items:
        h.update(json.dumps([item.id, item.question], ensure_ascii=False).encode())
    h.update(json.dumps(prompts.knowledge_generation(items[0]) if items else [], ensure_ascii=False).encode())
    h.update(json.dumps(llm_identity, sort_keys=True).encode())
    return h.hexdigest()[:16]


async def _process_chunk(chunk: list[QAItem], prompts: PromptSet, client) -> list[dict]:
    knowledge = await client.acomplete_many([prompts.knowledge_generation(item) for item in chunk])
    answers = await client.acomplete_many([prompts.answer(item, k) for item, k in zip(chunk, knowledge)],
                                          response_formats=[answer_response_format(item.options) for item in chunk])
    rows = []
    for item, k, raw in zip(chunk, knowledge, answers):
        score = score_answer(item, raw)
        parsed = list(score.parsed) if isinstance(score.parsed, tuple) else score.parsed
        rows.append({"type": "item", "id": item.id, "knowledge": k.strip(), "llm_answer": raw,
                     "parsed": parsed, "unparseable": score.unparseable, "kept": bool(score.correct and k.strip())})
    return rows


def generate_kit_data(
    items: list[QAItem],
    prompts: PromptSet,
    client,
    out_path: Path,
    chunk_size: int = 32,
    restart: bool = False,
    progress_bar: bool = True,
) -> KitStats:
    """Write alpaca rows (instruction = small-model query, output = kept knowledge) to `out_path`."""
    started = time.perf_counter()
    out_path = Path(out_path)
    progress_path = progress_path_for(out_path)
    log = ProgressLog(progress_path, run_fingerprint(items, prompts, client.identity()),
                      "it was made from another input, template or LLM: delete it or pass --restart",
                      restart=restart)
    done = log.load(key=lambda row: row["id"])

    stats = KitStats(total=len(items), resumed=sum(1 for item in items if item.id in done))
    if stats.resumed:
        logger.info("Resuming: %d of %d items already done (%s)", stats.resumed, len(items), progress_path)
    todo = [item for item in items if item.id not in done]
    bar = tqdm(total=len(items), initial=stats.resumed, desc="KIT knowledge", unit="q", disable=not progress_bar)

    async def run_all() -> None:
        # One event loop for the whole job: the async HTTP client's connection pool is bound to it.
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            try:
                rows = await _process_chunk(chunk, prompts, client)
            except LLMError as err:
                raise LLMError(f"{err} -- {len(done)} of {len(items)} items are saved in {progress_path}; "
                               "re-run the same command to resume") from err
            for row in rows:
                log.append(row)
                done[row["id"]] = row
            bar.update(len(chunk))
            bar.set_postfix(kept=sum(1 for r in done.values() if r["kept"]))

    try:
        client.run(run_all())
    finally:
        bar.close()

    kept_rows = []
    for item in items:
        row = done[item.id]
        if row["kept"]:
            kept_rows.append({"instruction": prompts.small_model_query(item), "input": "", "output": row["knowledge"]})
    atomic_write_jsonl(out_path, kept_rows)
    stats.kept = len(kept_rows)
    stats.dropped = len(items) - stats.kept
    stats.unparseable = sum(1 for item in items
                            if done[item.id].get("unparseable", done[item.id].get("parsed") in (None, "")))
    stats.seconds = round(time.perf_counter() - started, 3)
    stats.usage = client.usage.as_dict()
    atomic_write_json(out_path.with_name(out_path.name + ".stats.json"), stats.as_dict())
    return stats
