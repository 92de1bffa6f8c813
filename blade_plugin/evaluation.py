"""`blade-bpo evaluate`: LLM alone vs. LLM + small-LM knowledge vs. LLM + knowledge under the BPO soft
prompt, on the same test items, with resumable per-chunk progress and paired statistics."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .defaults import GENERATION_BATCH_SIZE
from .errors import LLMError
from .io_utils import atomic_write_json, atomic_write_jsonl, atomic_write_text
from .knowledge_answering import answer_items
from .qa.knowledge_support import support_summary
from .qa.metrics import accuracy_summary, paired_comparison
from .progress_log import ProgressLog
from .qa.prompts import PromptSet
from .qa.data import QAItem

logger = logging.getLogger(__name__)

MODES = ("llm", "knowledge", "blade")
MODE_TITLES = {"llm": "LLM alone", "knowledge": "LLM + small-LM knowledge", "blade": "LLM + BLADE (soft prompt)"}


@dataclass
class EvalConfig:
    out_dir: Path
    modes: tuple[str, ...]
    chunk_size: int = 32
    batch_size: int = GENERATION_BATCH_SIZE
    bootstrap: int = 2000
    seed: int = 0
    restart: bool = False
    fingerprint_extra: dict = field(default_factory=dict)  # small model, adapter, soft prompt digest, ...


def file_digest(path: str | Path | None) -> str | None:
    if path is None:
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _fingerprint(items: list[QAItem], prompts: PromptSet, config: EvalConfig, llm_identity: dict) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(json.dumps([item.id, item.question, item.answer], ensure_ascii=False, default=list).encode())
    h.update(json.dumps(prompts.answer(items[0], "K") if items else [], ensure_ascii=False).encode())
    h.update(json.dumps([config.fingerprint_extra, llm_identity], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def run_evaluation(
    items: list[QAItem],
    prompts: PromptSet,
    client,
    config: EvalConfig,
    generator=None,
    soft_prompt=None,
) -> dict:
    """Evaluate every mode, write predictions.jsonl, metrics.json and report.md; return the metrics."""
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    progress_path = out / "predictions.progress.jsonl"
    log = ProgressLog(progress_path, _fingerprint(items, prompts, config, client.identity()),
                      "its inputs (test set, model, soft prompt, templates or LLM) differ: "
                      "use a new --out or pass --restart", restart=config.restart)
    done = log.load(key=lambda row: (row["mode"], row["id"]))
    if done:
        logger.info("Resuming evaluation: %d predictions already saved in %s", len(done), progress_path)

    started = time.perf_counter()

    async def run_mode(mode: str, bar) -> None:
        todo = [item for item in items if (mode, item.id) not in done]
        mode_generator = None if mode == "llm" else generator
        mode_prompt = soft_prompt if mode == "blade" else None
        for start in range(0, len(todo), config.chunk_size):
            chunk = todo[start:start + config.chunk_size]
            try:
                records, _ = await answer_items(chunk, prompts, client, mode_generator, mode_prompt,
                                                batch_size=config.batch_size, progress=bar)
            except LLMError as err:
                raise LLMError(f"{err} -- finished predictions are saved in {progress_path}; "
                               "re-run the same command to resume") from err
            for record in records:
                row = {"type": "prediction", "mode": mode, **record.as_dict()}
                log.append(row)
                done[(mode, record.id)] = row

    async def run_all() -> None:
        for mode in config.modes:
            remaining = sum(1 for item in items if (mode, item.id) not in done)
            with tqdm(total=len(items), initial=len(items) - remaining, desc=f"evaluate [{mode}]", unit="q") as bar:
                await run_mode(mode, bar)

    client.run(run_all())

    predictions = [done[(mode, item.id)] for mode in config.modes for item in items]
    atomic_write_jsonl(out / "predictions.jsonl", [{k: v for k, v in row.items() if k != "type"}
                                                   for row in predictions])
    metrics = compute_metrics(items, predictions, config.modes, config.bootstrap, config.seed)
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    metrics["llm_usage"] = client.usage.as_dict()
    metrics["inputs"] = {**config.fingerprint_extra, "n_items": len(items)}
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "report.md", render_report(metrics))
    return metrics


def compute_metrics(items: list[QAItem], predictions: list[dict], modes, n_resamples: int = 2000,
                    seed: int = 0) -> dict:
    """Metrics implied by `predictions` alone (rows with mode, id, correct[, f1])."""
    by_key = {(row["mode"], row["id"]): row for row in predictions}
    metrics: dict = {"modes": {}, "paired": {}}
    for mode in modes:
        rows = [by_key[(mode, item.id)] for item in items]
        summary = accuracy_summary([r["correct"] for r in rows], n_resamples, seed)
        if any(item.is_multiple_choice for item in items):
            single = [r["correct"] for r, item in zip(rows, items) if item.is_multiple_choice and not item.is_multi_answer]
            multi = [r["correct"] for r, item in zip(rows, items) if item.is_multi_answer]
            if single and multi:
                summary["single_answer"] = accuracy_summary(single, n_resamples, seed)
                summary["multi_answer"] = accuracy_summary(multi, n_resamples, seed)
        types = sorted({item.meta.get("type") for item in items if item.meta.get("type") is not None}, key=str)
        if len(types) > 1:
            summary["by_type"] = {
                str(t): accuracy_summary([r["correct"] for r, item in zip(rows, items) if item.meta.get("type") == t],
                                         n_resamples, seed)
                for t in types
            }
        f1s = [r.get("f1") for r in rows if r.get("f1") is not None]
        if f1s:
            summary["mean_f1"] = round(sum(f1s) / len(f1s), 4)
        if any(r.get("knowledge") for r in rows):  # reader-independent: does the knowledge state the right option?
            summary["knowledge_support"] = support_summary(items, [r.get("knowledge") or "" for r in rows], False)
        metrics["modes"][mode] = summary
    if "llm" in modes:
        llm_correct = [by_key[("llm", item.id)]["correct"] for item in items]
        for mode in modes:
            if mode != "llm":
                mode_correct = [by_key[(mode, item.id)]["correct"] for item in items]
                metrics["paired"][f"{mode}_vs_llm"] = paired_comparison(mode_correct, llm_correct, n_resamples, seed)
    return metrics


def render_report(metrics: dict) -> str:
    lines = ["# BLADE evaluation", "", "| mode | n | accuracy | 95% CI |", "|---|---|---|---|"]
    for mode, m in metrics["modes"].items():
        lines.append(f"| {MODE_TITLES.get(mode, mode)} | {m['n']} | {m['accuracy']:.3f} | "
                     f"[{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}] |")
    extra = [(mode, m) for mode, m in metrics["modes"].items() if "single_answer" in m]
    if extra:
        lines += ["", "| mode | single-answer acc. | multi-answer acc. |", "|---|---|---|"]
        for mode, m in extra:
            lines.append(f"| {MODE_TITLES.get(mode, mode)} | {m['single_answer']['accuracy']:.3f} "
                         f"(n={m['single_answer']['n']}) | {m['multi_answer']['accuracy']:.3f} "
                         f"(n={m['multi_answer']['n']}) |")
    if metrics.get("paired"):
        lines += ["", "| comparison | accuracy diff | 95% CI | wins / losses | McNemar p |", "|---|---|---|---|---|"]
        for name, p in metrics["paired"].items():
            lines.append(f"| {name} | {p['accuracy_diff']:+.3f} | [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}] | "
                         f"{p['wins']} / {p['losses']} | {p['mcnemar_p']:.3g} |")
    usage = metrics.get("llm_usage") or {}
    if usage:
        lines += ["", f"LLM usage: {usage.get('calls', 0)} calls, {usage.get('cache_hits', 0)} cache hits, "
                      f"{usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} completion tokens."]
    return "\n".join(lines) + "\n"
