"""`blade-bpo evaluate`: LLM alone vs. LLM + small-LM knowledge vs. LLM + knowledge under the BPO soft
prompt, on the same test items, with paired statistics.

Progress is saved per prediction as it arrives (`predictions.progress.jsonl`, any order); a resume skips
finished predictions, retries failed ones, and refuses progress made from other inputs (items, templates,
small model, adapter, soft prompt, LLM) with one line naming them. A failed LLM request marks its prediction
as an error (scored wrong, listed in the report); only more than `max_errors` per mode stop the run.

With a retriever on the answerer, the combined modes of retrieval/combine.py (passages+knowledge,
knowledge-from-passages, knowledge-as-query) run like the others. Every mode reports the LLM prompt tokens per
question beside its accuracy (qa/prompt_tokens.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..runs.progress import tqdm

from ..llm.budget import BudgetExceeded
from ..extras.errors import LLMError
from ..runs.fingerprint import JobFingerprint, job_fingerprint
from ..qa.answering import KnowledgeAnswerer, resolve_max_errors
from ..qa.knowledge_support import support_summary
from ..qa.metrics import accuracy_summary, paired_comparison
from ..runs.job_log import JobLog
from ..qa.prompts import PromptSet
from ..qa.data import QAItem
from ..retrieval.combine import COMBINED_MODES, COMBINED_TITLES, check_templates, evidence_text

if TYPE_CHECKING:
    from .evaluation_batch import BatchSettings

logger = logging.getLogger(__name__)

MODES = ("llm", "knowledge", "blade")
ALL_MODES = MODES + COMBINED_MODES  # the combined modes need a corpus (the answerer's retriever)
MODE_TITLES = {"llm": "LLM alone", "knowledge": "LLM + small-LM knowledge", "blade": "LLM + BLADE (soft prompt)",
               **COMBINED_TITLES}


@dataclass
class EvalConfig:
    out_dir: Path
    modes: tuple[str, ...]
    bootstrap: int = 2000
    seed: int = 0
    restart: bool = False
    fingerprint_extra: dict = field(default_factory=dict)  # small model, adapter, soft prompt digest, ...
    max_errors: int | float | None = None  # per mode; see qa.answering.resolve_max_errors
    group_by: str | None = None  # an item field: metrics per group as well (qa/groups.py)
    batch: BatchSettings | None = None  # answer through the OpenAI Batch API (stages/evaluation_batch.py)
    count_prompt_tokens: bool = True  # each mode's LLM prompt tokens per question (qa/prompt_tokens.py)


# Templates a prediction depends on: the small LM's query and the LLM's answer prompt (+ system message).
EVAL_TEMPLATES = ("answer.j2", "small_model_query.j2", "system.j2")


def eval_fingerprint(items: list[QAItem], prompts: PromptSet, config: EvalConfig, llm_identity: dict) -> JobFingerprint:
    """Everything a prediction depends on, as named parts; `config.fingerprint_extra` adds one part per key
    (small model, adapter, soft prompt, ...), named with spaces ("small model") as saved files have them."""
    return job_fingerprint(items=items, prompts=prompts, template_names=EVAL_TEMPLATES, llm=llm_identity,
                           **{name.replace("_", " "): value for name, value in config.fingerprint_extra.items()})


def run_evaluation(items: list[QAItem], answerer: KnowledgeAnswerer, config: EvalConfig) -> dict:
    """Evaluate every mode, write predictions.jsonl, metrics.json and report.md; return the metrics.

    Modes: "llm" asks `answerer.llm_only()`, "knowledge" the answerer without its soft prompt, "blade" the
    answerer as given (with its soft prompt); the combined modes (retrieval/combine.py) the answerer as given,
    with its retriever, in that mode."""
    prompts, client = answerer.prompts, answerer.client
    answerer = answerer.combined(None) if answerer.combine is not None else answerer
    by_mode = {"llm": answerer.llm_only(), "knowledge": answerer.with_soft_prompt(None), "blade": answerer}
    combined = [mode for mode in config.modes if mode in COMBINED_MODES]
    if combined and answerer.retriever is None:
        raise ValueError(f"mode(s) {', '.join(combined)} need a retriever (a corpus) on the answerer")
    if combined and config.batch is not None:
        raise ValueError(f"--batch does not run the combined mode(s) {', '.join(combined)} yet (run them online)")
    by_mode.update({mode: answerer.combined(mode) for mode in combined})
    check_templates(prompts, combined)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    progress_path = out / "predictions.progress.jsonl"
    log = JobLog(progress_path, eval_fingerprint(items, prompts, config, client.identity()), restart=config.restart)
    done = log.load(key=lambda row: (row["mode"], row["id"]))
    # Batch rows (`evaluate --batch`, keyed ("batch", <row id>)) sit beside the predictions: not predictions.
    def answered() -> int:
        return sum(1 for row in done.values() if not row.get("error") and row.get("type") != "batch")

    finished = {key for key, row in done.items() if not row.get("error") and row.get("type") != "batch"}
    saved = sum(1 for row in done.values() if row.get("type") != "batch")
    if saved:
        logger.info("Resuming evaluation: %d predictions already saved in %s%s", len(finished), progress_path,
                    f"; retrying {saved - len(finished)} that failed" if saved > len(finished) else "")
    max_errors = resolve_max_errors(config.max_errors, len(items))

    started = time.perf_counter()

    def save(mode: str):
        def on_record(record) -> None:
            row = {"type": "prediction", "mode": mode, **record.as_dict()}
            log.append(row)
            done[(mode, record.id)] = row
        return on_record

    async def run_all() -> None:
        for mode in config.modes:
            todo = [item for item in items if (mode, item.id) not in finished]
            with tqdm(total=len(items), initial=len(items) - len(todo), desc=f"evaluate [{mode}]", unit="q",
                      disable=None) as bar:
                try:
                    await by_mode[mode].answer(todo, progress=bar, max_errors=max_errors, on_record=save(mode))
                except BudgetExceeded as err:
                    budget = getattr(getattr(by_mode[mode], "client", None), "budget", None)
                    raise BudgetExceeded(budget.stop_message(str(progress_path)) if budget is not None else
                                         f"{err}; progress is saved in {progress_path}; re-run the same command "
                                         "to resume") from None
                except LLMError as err:
                    saved = answered()
                    raise LLMError(f"{err} -- {saved} finished predictions are saved in {progress_path}; "
                                   "re-run the same command to resume") from err

    try:
        if config.batch is not None:
            from .evaluation_batch import answer_modes_batch

            answer_modes_batch(items, by_mode, config.modes, finished, done, log, save, max_errors, config.batch,
                               str(progress_path))
        else:
            client.run(run_all())
    except KeyboardInterrupt:
        logger.warning("Interrupted: %d finished predictions are saved in %s; re-run the same command to resume",
                       answered(),
                       progress_path)
        raise

    predictions = [done[(mode, item.id)] for mode in config.modes for item in items]
    log.publish(out / "predictions.jsonl", [{k: v for k, v in row.items() if k != "type"} for row in predictions])
    metrics = compute_metrics(items, predictions, config.modes, config.bootstrap, config.seed, config.group_by)
    if config.count_prompt_tokens:
        add_prompt_tokens(metrics, items, predictions, config.modes, prompts, client)
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    metrics["llm_usage"] = client.usage.as_dict()
    metrics["inputs"] = {**config.fingerprint_extra, "n_items": len(items)}
    log.publish(out / "metrics.json", metrics)
    log.publish(out / "report.md", render_report(metrics))
    return metrics


def add_prompt_tokens(metrics: dict, items: list[QAItem], predictions: list[dict], modes, prompts: PromptSet,
                      client) -> None:
    """metrics["modes"][mode]["llm_prompt_tokens"] = {mean, total, n, counter} (qa/prompt_tokens.py)."""
    from ..qa.prompt_tokens import answer_prompt_tokens, counter_for, token_summary

    counter = counter_for(client)
    if counter is None:
        return
    count, name = counter
    by_key = {(row["mode"], row["id"]): row for row in predictions}
    for mode in modes:
        rows = [by_key[(mode, item.id)] for item in items]
        metrics["modes"][mode]["llm_prompt_tokens"] = token_summary(answer_prompt_tokens(items, rows, prompts, count),
                                                                    name)


def compute_metrics(items: list[QAItem], predictions: list[dict], modes, n_resamples: int = 2000,
                    seed: int = 0, group_by: str | None = None) -> dict:
    """Metrics implied by `predictions` alone (rows with mode, id, correct[, f1]); with `group_by` also
    `metrics["groups"] = {"field": F, "values": {group: {mode: {n, accuracy, ci95, vs_llm, knowledge_support}}}}`."""
    by_key = {(row["mode"], row["id"]): row for row in predictions}
    metrics: dict = {"modes": {}, "paired": {}}
    for mode in modes:
        rows = [by_key[(mode, item.id)] for item in items]
        summary = accuracy_summary([r["correct"] for r in rows], n_resamples, seed, [_unparseable(r) for r in rows])
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
        summary["errors"] = sum(1 for r in rows if r.get("error"))
        f1s = [r.get("f1") for r in rows if r.get("f1") is not None]
        if f1s:
            summary["mean_f1"] = round(sum(f1s) / len(f1s), 4)
        if any(r.get("knowledge") or r.get("passages") for r in rows):
            # reader-independent: does what the LLM was shown (knowledge, and passages if any) state the right option?
            summary["knowledge_support"] = support_summary(items, [_evidence(r) for r in rows], False)
        metrics["modes"][mode] = summary
    if "llm" in modes:
        llm_correct = [by_key[("llm", item.id)]["correct"] for item in items]
        for mode in modes:
            if mode != "llm":
                mode_correct = [by_key[(mode, item.id)]["correct"] for item in items]
                metrics["paired"][f"{mode}_vs_llm"] = paired_comparison(mode_correct, llm_correct, n_resamples, seed)
    metrics["errors"] = [{"mode": mode, "id": item.id, "error": by_key[(mode, item.id)]["error"]}
                         for mode in modes for item in items if by_key[(mode, item.id)].get("error")]
    if group_by:
        from ..qa.groups import group_metrics

        llm = [bool(by_key[("llm", item.id)]["correct"]) for item in items] if "llm" in modes else None
        per_mode = {mode: group_metrics(items, group_by, [bool(by_key[(mode, item.id)]["correct"]) for item in items],
                                        [_evidence(by_key[(mode, item.id)]) for item in items],
                                        llm if mode != "llm" else None, n_resamples, seed)
                    for mode in modes}
        values = {group: {mode: per_mode[mode][group] for mode in modes} for group in per_mode[modes[0]]}
        metrics["groups"] = {"field": group_by, "values": values}
    return metrics


def _evidence(row: dict) -> str:
    return evidence_text(row.get("knowledge") or "", row.get("passages"))


def _unparseable(row: dict) -> bool:
    """Rows saved before the flag existed: no parsed answer means unparseable."""
    return bool(row.get("unparseable", row.get("parsed") in (None, "")))


def format_vs(p: dict | None) -> str:
    return "-" if not p else f"{p['accuracy_diff']:+.3f} (p={p['mcnemar_p']:.2g})"


def format_tokens(tokens: dict | None) -> str:
    return "-" if not tokens else f"{tokens['mean']:.1f}"


def format_support(support: dict | None) -> str:
    if not support or support.get("supports_correct") is None:
        return "-"
    return f"{support['supports_correct']:.3f} / {support['names_wrong']:.3f}"


def render_report(metrics: dict) -> str:
    lines = ["# BLADE evaluation", "",
             "| mode | n | accuracy | 95% CI | unparseable | LLM prompt tokens / question |", "|---|---|---|---|---|---|"]
    for mode, m in metrics["modes"].items():
        lines.append(f"| {MODE_TITLES.get(mode, mode)} | {m['n']} | {m['accuracy']:.3f} | "
                     f"[{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}] | {m.get('unparseable', 0)} | "
                     f"{format_tokens(m.get('llm_prompt_tokens'))} |")
    counters = sorted({m["llm_prompt_tokens"]["counter"] for m in metrics["modes"].values() if m.get("llm_prompt_tokens")})
    if counters:
        lines += ["", f"LLM prompt tokens / question: the mean answer request, counted offline with {'; '.join(counters)}."]
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
    if metrics.get("groups"):
        lines += ["", f"## By {metrics['groups']['field']}", "",
                  "| group | mode | n | accuracy | 95% CI | vs LLM alone (McNemar p) | knowledge supports correct / names wrong |",
                  "|---|---|---|---|---|---|---|"]
        for group, by_mode in metrics["groups"]["values"].items():
            for mode, g in by_mode.items():
                lines.append(f"| {group} | {MODE_TITLES.get(mode, mode)} | {g['n']} | {g['accuracy']:.3f} | "
                             f"[{g['ci95'][0]:.3f}, {g['ci95'][1]:.3f}] | {format_vs(g.get('vs_llm'))} | "
                             f"{format_support(g.get('knowledge_support'))} |")
    failed = metrics.get("errors") or []
    if failed:
        lines += ["", f"## Errors ({len(failed)} predictions scored wrong: the LLM request failed after retries)", "",
                  "| mode | id | error |", "|---|---|---|"]
        for row in failed:
            lines.append(f"| {row['mode']} | {row['id']} | {' '.join(str(row['error']).split()).replace('|', '/')} |")
    usage = metrics.get("llm_usage") or {}
    if usage:
        lines += ["", f"LLM usage: {usage.get('calls', 0)} calls, {usage.get('cache_hits', 0)} cache hits, "
                      f"{usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} completion tokens, "
                      f"{usage.get('retries', 0)} retries, {usage.get('failures', 0)} failed requests, "
                      f"{usage.get('truncated', 0)} truncated, {usage.get('filtered', 0)} filtered, "
                      f"{usage.get('empty', 0)} empty."]
    return "\n".join(lines) + "\n"
