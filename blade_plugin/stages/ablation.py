"""`blade-bpo ablate`: the paper's ablation table on a test set, one row per configuration of the pipeline.

Rows (in order, each needing the checkpoints named; a row whose checkpoints are missing is skipped with a
note):

=========  ======================================  ==========================================
key        configuration                           needs
=========  ======================================  ==========================================
llm        LLM alone                               -
base       + base small LM (no DP, no KIT)         base model
dp         + DP only                               DP model
kit        + KIT only (KIT on the base model)      KIT-on-base adapter / model
dp_kit     + DP + KIT                              DP model and KIT adapter (or a full KIT model)
blade      + DP + KIT + BPO (full BLADE)           the above and a soft prompt
retrieval  LLM + retrieved passages (plain BM25)   a corpus (`--corpus`)
=========  ======================================  ==========================================

The retrieval row is the baseline a user asks about: no small LM, the top-k BM25 passages of the corpus for
the question (and its options, by default) are the knowledge. It comes after the BLADE rows, so "vs row above"
compares it with full BLADE (or the last BLADE row that ran). With `group_by` every row also reports its
metrics per group.

Three more rows combine retrieval with the small model's knowledge (retrieval/combine.py); they run only when
asked for (`keys`, `ablate --rows`), after the retrieval row, so "vs row above" starts from plain BM25:

=======================  ===============================================  ======================================
key                      configuration                                    needs
=======================  ===============================================  ======================================
passages+knowledge       BM25 passages + the DP + KIT knowledge           a corpus, the DP + KIT checkpoints
knowledge-from-passages  knowledge written from the question + passages   a corpus, KIT-with-passages on DP
knowledge-as-query       passages retrieved with question + knowledge     a corpus, the DP + KIT checkpoints
=======================  ===============================================  ======================================

The first and the last use full BLADE's writer (DP + KIT, under the soft prompt when one is given);
knowledge-from-passages uses `kit_passages` (KIT data from `knowledge --query-corpus`) under
`soft_prompt_passages`, if any. Every row reports the LLM prompt tokens per question beside its accuracy, and
ablation_tokens.png plots one against the other.

Every row is one `evaluation.run_evaluation` run in its own directory, named by a digest of exactly what
the row depends on (items, templates, model identities, soft prompt, LLM). Adding a checkpoint and
re-running therefore evaluates only the new row: finished rows are read back from their progress logs
without loading a model or calling the LLM.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..runs.atomic_io import atomic_write_json, atomic_write_text
from ..runs.fingerprint import digest_file, digest_items, digest_json, model_identity
from ..qa.data import QAItem
from ..qa.metrics import paired_comparison
from ..qa.prompts import PromptSet
from ..retrieval.combine import (COMBINED_MODES, COMBINED_TITLES, DEFAULT_K, DEFAULT_PASSAGE_CHARS, KNOWLEDGE_FROM_PASSAGES,
                                 PassageRetriever, evidence_text)

if TYPE_CHECKING:
    from ..llm.base import LLMClientProtocol
    from ..small_lm.base import KnowledgeWriter

logger = logging.getLogger(__name__)

ROW_KEYS = ("llm", "base", "dp", "kit", "dp_kit", "blade", "retrieval")
ROW_TITLES = {
    "llm": "LLM alone",
    "base": "+ base small LM (no DP/KIT)",
    "dp": "+ DP only",
    "kit": "+ KIT only (on base model)",
    "dp_kit": "+ DP + KIT",
    "blade": "+ DP + KIT + BPO (full BLADE)",
    "retrieval": "LLM + retrieved passages (BM25)",
    **COMBINED_TITLES,
}
COMBINED_ROW_KEYS = COMBINED_MODES  # a combined row runs the evaluation mode of the same name
ALL_ROW_KEYS = ROW_KEYS + COMBINED_ROW_KEYS  # the table's order; ROW_KEYS stays the default set


@dataclass
class AblationInputs:
    """The checkpoints to compare. `kit`/`kit_base` are LoRA adapters (trained on `dp` / `base_model`) or full
    HF model directories; `soft_prompt` is BPO's soft_prompt.safetensors tuned on the DP + KIT model."""

    base_model: str
    dp: str | None = None
    kit: str | None = None
    kit_base: str | None = None
    soft_prompt: str | None = None
    corpus: str | None = None  # {"text"} JSONL for the retrieval row and the combined rows
    kit_passages: str | None = None  # KIT trained with retrieved passages in the query (knowledge-from-passages)
    soft_prompt_passages: str | None = None  # BPO's soft prompt tuned on the kit_passages model

    @classmethod
    def from_workspace(cls, workspace: Path, base_model: str) -> AblationInputs:
        """The demo's layout: saves/dp, saves/kit_full|kit_lora, saves/kit_base_full|kit_base_lora,
        runs/bpo/selected_soft_prompt.safetensors or soft_prompt.safetensors (whatever of it exists)."""
        def first(*names: str) -> str | None:
            return next((str(workspace / n) for n in names if (workspace / n).exists()), None)

        return cls(base_model=base_model, dp=first("saves/dp"), kit=first("saves/kit_full", "saves/kit_lora"),
                   kit_base=first("saves/kit_base_full", "saves/kit_base_lora"),
                   # the demo's pick (BPO's soft prompt, or none when it did not beat no soft prompt) first
                   soft_prompt=first("runs/bpo/selected_soft_prompt.safetensors", "runs/bpo/soft_prompt.safetensors"),
                   kit_passages=first("saves/kit_passages_full", "saves/kit_passages_lora"),
                   soft_prompt_passages=first("runs/bpo_passages/selected_soft_prompt.safetensors",
                                              "runs/bpo_passages/soft_prompt.safetensors"))


@dataclass
class RowPlan:
    key: str
    model: str | None = None  # HF model dir of the knowledge writer (None: LLM alone)
    adapter: str | None = None
    soft_prompt: str | None = None
    skipped: str | None = None  # why the row cannot run
    corpus: str | None = None  # the retrieval row's and the combined rows' corpus


def _is_adapter(path: str | None) -> bool:
    return path is not None and (Path(path) / "adapter_config.json").is_file()


def _is_model(path: str | None) -> bool:
    return path is not None and (Path(path) / "config.json").is_file()


def _with_kit(kit: str | None, under: str | None, under_name: str, kit_name: str) -> tuple[str | None, str | None,
                                                                                          str | None]:
    """(model, adapter, reason-if-missing) for a KIT checkpoint that is a LoRA adapter on `under` or a full model."""
    if kit is None:
        return None, None, f"no {kit_name} checkpoint"
    if _is_adapter(kit):
        if not _is_model(under):
            return None, None, f"{kit_name} {kit} is a LoRA adapter but there is no {under_name} model to apply it to"
        return under, kit, None
    if _is_model(kit):
        return kit, None, None
    return None, None, f"{kit_name} {kit} is neither a LoRA adapter nor an HF model directory"


def plan_rows(inputs: AblationInputs, keys: tuple[str, ...] = ROW_KEYS) -> list[RowPlan]:
    """What each requested row runs, or why it is skipped (missing checkpoints are a note, not an error)."""
    plans = []
    for key in keys:
        plan = RowPlan(key)
        if key == "base":
            plan.model = inputs.base_model if _is_model(inputs.base_model) else None
            plan.skipped = None if plan.model else f"base model {inputs.base_model} is not an HF model directory"
        elif key == "dp":
            plan.model = inputs.dp if _is_model(inputs.dp) else None
            plan.skipped = None if plan.model else "no DP checkpoint" + (f" at {inputs.dp}" if inputs.dp else "")
        elif key == "kit":
            plan.model, plan.adapter, plan.skipped = _with_kit(inputs.kit_base, inputs.base_model, "base",
                                                               "KIT-on-base")
        elif key in ("dp_kit", "blade"):
            plan.model, plan.adapter, plan.skipped = _with_kit(inputs.kit, inputs.dp, "DP", "KIT")
            if key == "blade" and plan.skipped is None:
                if inputs.soft_prompt and Path(inputs.soft_prompt).is_file():
                    plan.soft_prompt = inputs.soft_prompt
                else:
                    plan.skipped = "no BPO soft prompt" + (f" at {inputs.soft_prompt}" if inputs.soft_prompt else "")
        elif key == "retrieval":
            plan.corpus = inputs.corpus
            plan.skipped = None if inputs.corpus and Path(inputs.corpus).is_file() else \
                "no --corpus for the retrieval baseline" + (f" ({inputs.corpus} is not a file)" if inputs.corpus else "")
        elif key in COMBINED_ROW_KEYS:
            _plan_combined(plan, inputs)
        elif key != "llm":
            raise ValueError(f"unknown ablation row {key!r} (choose from {', '.join(ALL_ROW_KEYS)})")
        plans.append(plan)
    return plans


def _plan_combined(plan: RowPlan, inputs: AblationInputs) -> None:
    """A combined row's writer (see the module docstring) and corpus, or why it is skipped."""
    from_passages = plan.key == KNOWLEDGE_FROM_PASSAGES
    if from_passages:
        plan.model, plan.adapter, plan.skipped = _with_kit(inputs.kit_passages, inputs.dp, "DP", "KIT-with-passages")
        soft = inputs.soft_prompt_passages
    else:
        plan.model, plan.adapter, plan.skipped = _with_kit(inputs.kit, inputs.dp, "DP", "KIT")
        soft = inputs.soft_prompt
    if plan.skipped and from_passages and inputs.kit_passages is None:
        plan.skipped += " (KIT data with the retrieved passages in the query: `knowledge --query-corpus`)"
    plan.soft_prompt = soft if soft and Path(soft).is_file() else None
    plan.corpus = inputs.corpus
    if not (inputs.corpus and Path(inputs.corpus).is_file()):
        plan.skipped = "no --corpus to retrieve from" + (f" ({inputs.corpus} is not a file)" if inputs.corpus else "")


class LazyWriter:
    """A KnowledgeWriter built on first use, so rows whose predictions are all saved never load a model.

    It remembers the knowledge it wrote without a soft prompt: rows that share a model and differ only in a
    soft prompt BPO did not keep (full BLADE then equals DP + KIT) get the same greedy knowledge without
    generating it again."""

    def __init__(self, factory):
        self._factory = factory
        self._writer = None
        self._memo: dict[tuple[str, int | None], str] = {}
        self.model_calls = 0  # generate calls that ran the model (not answered from memory)

    def _get(self):
        if self._writer is None:
            self._writer = self._factory()
        return self._writer

    def generate(self, texts, soft_prompt=None, max_new_tokens=None, progress=False):
        if soft_prompt is not None:
            self.model_calls += 1
            return self._get().generate(texts, soft_prompt, max_new_tokens, progress)
        missing = [text for text in texts if (text, max_new_tokens) not in self._memo]
        if missing:
            self.model_calls += 1
            for text, knowledge in zip(missing, self._get().generate(missing, None, max_new_tokens, progress)):
                self._memo[(text, max_new_tokens)] = knowledge
        return [self._memo[(text, max_new_tokens)] for text in texts]

    def release(self) -> None:
        self._writer = None  # one small model in memory at a time


@dataclass
class AblationConfig:
    out_dir: Path
    template: str = "blade_chatml"
    max_new_tokens: int = 128
    batch_size: int = 32
    bootstrap: int = 2000
    seed: int = 0
    writer_factory: Callable[[str, str | None], KnowledgeWriter] | None = None  # default: small_lm.backend
    extra: dict = field(default_factory=dict)
    group_by: str | None = None  # an item field: each row's metrics per group too
    retrieval_k: int = DEFAULT_K  # passages per question in the rows that retrieve
    retrieval_options: bool = True  # the retrieval query is the question and its options (False: question only)
    # each retrieved passage cut to this many characters (None: whole); in every row that retrieves
    passage_chars: int | None = DEFAULT_PASSAGE_CHARS


def _default_writer_factory(config: AblationConfig):
    from ..small_lm.backend import SmallBackendConfig, load_knowledge_writer

    def build(model: str, adapter: str | None):
        return load_knowledge_writer(SmallBackendConfig(model, adapter, config.template, config.max_new_tokens,
                                                        config.batch_size))

    return build


def _row_dir(out: Path, plan: RowPlan, items: list[QAItem], prompts: PromptSet, config: AblationConfig,
             llm_identity: dict) -> Path:
    """rows/<key>-<digest of everything the row's predictions depend on>."""
    parts = {"items": digest_items(items), "answer_prompt": prompts.answer(items[0], "K") if items else None,
             "query_prompt": prompts.small_model_query(items[0]) if items and plan.model else None,
             "model": model_identity(plan.model), "adapter": model_identity(plan.adapter),
             "soft_prompt": digest_file(plan.soft_prompt), "llm": llm_identity,
             "generation": [config.template, config.max_new_tokens] if plan.model else None}
    if plan.key == "retrieval":
        parts["retrieval"] = {"corpus": digest_file(plan.corpus), "k": config.retrieval_k,
                              "options": config.retrieval_options, "query_prompt": parts["query_prompt"]
                              or (prompts.small_model_query(items[0]) if items else None)}
        cap = _retriever(plan.corpus, config).settings().get("max_chars")
        if cap:  # only a cap that cuts some passage changes the row (older rows had none)
            parts["retrieval"]["max_chars"] = cap
    elif plan.key in COMBINED_ROW_KEYS:
        parts["combine"] = {"mode": plan.key, **_retriever(plan.corpus, config).settings(),
                            "corpus file": digest_file(plan.corpus),
                            "answer_prompt": prompts.answer(items[0], "K", ["P"]) if items else None,
                            "query_prompt": prompts.small_model_query(items[0], ["P"]) if items else None}
    return out / "rows" / f"{plan.key}-{digest_json(parts)}"


def _retriever(corpus: str, config: AblationConfig) -> PassageRetriever:
    """The passages every retrieving row uses (one index per corpus file and content)."""
    return PassageRetriever(_index(str(corpus), digest_file(corpus)), config.retrieval_k, config.passage_chars,
                            config.retrieval_options)


@functools.lru_cache(maxsize=4)
def _index(corpus: str, digest: str | None):
    from ..retrieval import CorpusIndex

    return CorpusIndex.from_jsonl(corpus)


def _knowledge_support(items: list[QAItem], knowledge: list[str]) -> dict:
    """The reader-independent metric (qa/knowledge_support.py), without the per-item detail."""
    from ..qa.knowledge_support import support_summary

    return support_summary(items, knowledge, with_items=False)


def run_ablation(items: list[QAItem], prompts: PromptSet, client: LLMClientProtocol, inputs: AblationInputs, config: AblationConfig,
                 keys: tuple[str, ...] = ROW_KEYS) -> dict:
    """Evaluate every runnable row; write ablation.json, ablation.md, ablation.png; return the table."""
    from .evaluation import EvalConfig, run_evaluation
    from ..qa.answering import KnowledgeAnswerer
    from ..small_lm.soft_prompt import load_soft_prompt

    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    factory = config.writer_factory or _default_writer_factory(config)
    rows: list[dict] = []
    correct_by_row: dict[str, list[bool]] = {}
    knowledge_by_row: dict[str, list[str]] = {}
    writers: dict[tuple[str, str | None], LazyWriter] = {}
    for plan in plan_rows(inputs, keys):
        row: dict = {"key": plan.key, "title": ROW_TITLES[plan.key], "model": plan.model, "adapter": plan.adapter,
                     "soft_prompt": plan.soft_prompt}
        if plan.skipped:
            logger.info("ablation row %r skipped: %s", plan.key, plan.skipped)
            rows.append({**row, "skipped": plan.skipped})
            continue
        row_dir = _row_dir(out, plan, items, prompts, config, client.identity())
        mode = "llm" if plan.key == "llm" else ("blade" if plan.soft_prompt else "knowledge")
        mode = plan.key if plan.key in COMBINED_ROW_KEYS else mode
        writer = None
        if plan.model is not None:  # rows on the same model (DP + KIT, full BLADE) share one loaded writer
            for other_key, other in writers.items():
                if other_key != (plan.model, plan.adapter):
                    other.release()
            writer = writers.setdefault((plan.model, plan.adapter),
                                        LazyWriter(lambda p=plan: factory(p.model, p.adapter)))
        if plan.key == "retrieval":
            writer = LazyWriter(lambda p=plan: _retrieval_writer(items, prompts, p.corpus, config))
        soft = load_soft_prompt(plan.soft_prompt)[0] if plan.soft_prompt else None
        if soft is not None and soft.shape[0] == 0:
            soft = None  # zero soft tokens (BPO did not beat its baseline): the same as no soft prompt
        calls_before, usage_before = client.usage.calls, dict(client.usage.as_dict())
        model_calls_before = writer.model_calls if writer is not None else 0
        started = time.perf_counter()
        logger.info("ablation row %r: %s", plan.key, ROW_TITLES[plan.key])
        retriever = _retriever(plan.corpus, config) if plan.key in COMBINED_ROW_KEYS else None
        answerer = KnowledgeAnswerer(prompts, client, writer, soft, batch_size=config.batch_size, retriever=retriever)
        metrics = run_evaluation(items, answerer,
                                 EvalConfig(out_dir=row_dir, modes=(mode,), bootstrap=config.bootstrap, seed=config.seed,
                                            fingerprint_extra={"ablation_row": plan.key, "dir": row_dir.name}))
        usage_after = client.usage.as_dict()
        predictions = [json.loads(line) for line in (row_dir / "predictions.jsonl").read_text("utf-8").splitlines()]
        by_id = {p["id"]: p for p in predictions}
        correct = [bool(by_id[item.id]["correct"]) for item in items]
        correct_by_row[plan.key] = correct
        knowledge_by_row[plan.key] = [evidence_text(by_id[item.id].get("knowledge") or "", by_id[item.id].get("passages"))
                                      for item in items]
        summary = metrics["modes"][mode]
        row.update({
            "dir": str(row_dir),
            "n": summary["n"], "correct": summary["correct"], "accuracy": summary["accuracy"], "ci95": summary["ci95"],
            "single_answer": summary.get("single_answer"), "multi_answer": summary.get("multi_answer"),
            "unparseable": sum(1 for item in items if by_id[item.id]["parsed"] in (None, [], "")),
            # evaluate's metrics carry it (qa/knowledge_support.py); recomputed from the predictions otherwise
            "knowledge_support": (summary.get("knowledge_support")
                                  or _knowledge_support(items, knowledge_by_row[plan.key])
                                  if writer is not None else None),
            "llm_calls": usage_after["calls"] - calls_before,
            "llm_cache_hits": usage_after.get("cache_hits", 0) - usage_before.get("cache_hits", 0),
            "prompt_tokens": usage_after.get("prompt_tokens", 0) - usage_before.get("prompt_tokens", 0),
            "completion_tokens": usage_after.get("completion_tokens", 0) - usage_before.get("completion_tokens", 0),
            "cost": (None if usage_after.get("cost") is None
                     else round(usage_after["cost"] - (usage_before.get("cost") or 0.0), 6)),
            "seconds": round(time.perf_counter() - started, 2),
            # offline count of each answer request (qa/prompt_tokens.py), whether or not the LLM cache answered it
            "llm_prompt_tokens_per_question": (summary.get("llm_prompt_tokens") or {}).get("mean"),
            "llm_prompt_tokens_counter": (summary.get("llm_prompt_tokens") or {}).get("counter"),
            "model_loaded": bool(writer is not None and writer.model_calls > model_calls_before),
        })
        rows.append(row)
    for writer in writers.values():
        writer.release()

    _add_paired(rows, correct_by_row, config)
    if config.group_by:
        _add_groups(rows, items, correct_by_row, knowledge_by_row, config)
    table = {"n_items": len(items), "rows": rows, "group_by": config.group_by, "inputs": {**inputs.__dict__, **config.extra},
             "llm": client.identity()}
    atomic_write_json(out / "ablation.json", table)
    atomic_write_text(out / "ablation.md", render_markdown(table))
    plot_ablation(table, out / "ablation.png")
    plot_accuracy_vs_tokens(table, out / "ablation_tokens.png")
    return table


def _retrieval_writer(items: list[QAItem], prompts: PromptSet, corpus: str, config: AblationConfig):
    from ..retrieval.writer import RetrievalWriter

    return RetrievalWriter.for_items(items, prompts, _index(str(corpus), digest_file(corpus)), config.retrieval_k,
                                     config.retrieval_options, config.passage_chars)


def _add_groups(rows: list[dict], items: list[QAItem], correct_by_row: dict[str, list[bool]],
                knowledge_by_row: dict[str, list[str]], config: AblationConfig) -> None:
    """row["groups"] = {group: {n, accuracy, ci95, vs_llm, knowledge_support}} (qa/groups.py)."""
    from ..qa.groups import group_metrics

    llm = correct_by_row.get("llm")
    for row in rows:
        if "skipped" in row:
            continue
        key = row["key"]
        row["groups"] = group_metrics(items, config.group_by, correct_by_row[key],
                                      knowledge_by_row[key] if key != "llm" else None,
                                      llm if key != "llm" else None, config.bootstrap, config.seed)


def _add_paired(rows: list[dict], correct_by_row: dict[str, list[bool]], config: AblationConfig) -> None:
    """McNemar + bootstrap CI of the difference vs LLM alone and vs the previous evaluated row."""
    previous: str | None = None
    for row in rows:
        if "skipped" in row:
            continue
        key = row["key"]
        if key != "llm" and "llm" in correct_by_row:
            row["vs_llm"] = paired_comparison(correct_by_row[key], correct_by_row["llm"], config.bootstrap, config.seed)
        if previous is not None:
            row["vs_previous"] = {"row": previous, **paired_comparison(correct_by_row[key], correct_by_row[previous],
                                                                       config.bootstrap, config.seed)}
        previous = key


def _fmt_pair(p: dict | None) -> str:
    if not p:
        return "-"
    return f"{p['accuracy_diff']:+.3f} (p={p['mcnemar_p']:.2g})"


def render_markdown(table: dict) -> str:
    lines = [f"# BLADE ablation ({table['n_items']} questions)", "",
             "| configuration | accuracy | 95% CI | single / multi | unparseable | vs LLM alone | vs row above "
             "| knowledge supports correct / names wrong | LLM calls | tokens | LLM prompt tokens / question |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for row in table["rows"]:
        if "skipped" in row:
            notes.append(f"- {row['title']}: skipped ({row['skipped']})")
            continue
        sm = "-"
        if row.get("single_answer") and row.get("multi_answer"):
            sm = f"{row['single_answer']['accuracy']:.3f} / {row['multi_answer']['accuracy']:.3f}"
        support = row.get("knowledge_support") or {}
        support_text = "-"
        if support.get("supports_correct") is not None:
            support_text = f"{support['supports_correct']:.3f} / {support['names_wrong']:.3f}"
        lines.append(f"| {row['title']} | {row['accuracy']:.3f} | [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}] | {sm} "
                     f"| {row['unparseable']} | {_fmt_pair(row.get('vs_llm'))} | {_fmt_pair(row.get('vs_previous'))} "
                     f"| {support_text} | {row['llm_calls']} | {row['prompt_tokens'] + row['completion_tokens']} "
                     f"| {_fmt_tokens(row.get('llm_prompt_tokens_per_question'))} |")
    lines += ["", "Paired differences: accuracy of the row minus the other, exact McNemar p on the discordant "
              "questions. \"vs row above\" compares with the nearest evaluated row above. LLM calls "
              "count requests made in this run (cached answers cost none). Knowledge support (reader-independent, "
              "qa/knowledge_support.py): share of questions whose knowledge supports the correct option(s) more than "
              "every distractor / names a wrong option. \"tokens\" are what this run's requests used (cache hits "
              "cost none); \"LLM prompt tokens / question\" is the mean size of a row's answer request, counted "
              "offline" + _counter_note(table) + "."]
    if table.get("group_by"):
        lines += _group_table(table)
    if notes:
        lines += ["", "Skipped:", *notes]
    return "\n".join(lines) + "\n"


def _fmt_tokens(mean: float | None) -> str:
    return "-" if mean is None else f"{mean:.1f}"


def _counter_note(table: dict) -> str:
    names = sorted({r["llm_prompt_tokens_counter"] for r in table["rows"] if r.get("llm_prompt_tokens_counter")})
    return f" with {'; '.join(names)}" if names else ""


def _group_table(table: dict) -> list[str]:
    """One column per group: accuracy, the difference from LLM alone with its McNemar p, knowledge support."""
    evaluated = [r for r in table["rows"] if "skipped" not in r and r.get("groups")]
    if not evaluated:
        return []
    groups = list(evaluated[0]["groups"])
    head = " | ".join(f"{g} (n={evaluated[0]['groups'][g]['n']})" for g in groups)
    lines = ["", f"By {table['group_by']}: accuracy, vs LLM alone (McNemar p), knowledge supports correct / "
                 "names wrong", "", f"| configuration | {head} |", "|---|" + "---|" * len(groups)]
    for row in evaluated:
        cells = []
        for g in groups:
            m = row["groups"].get(g)
            if m is None:
                cells.append("-")
                continue
            support = m.get("knowledge_support") or {}
            text = f"{m['accuracy']:.3f}"
            if m.get("vs_llm"):
                text += f" {_fmt_pair(m['vs_llm'])}"
            if support.get("supports_correct") is not None:
                text += f"; {support['supports_correct']:.2f} / {support['names_wrong']:.2f}"
            cells.append(text)
        lines.append(f"| {row['title']} | " + " | ".join(cells) + " |")
    return lines


def plot_ablation(table: dict, path: Path) -> None:
    """Bar chart of accuracy per evaluated row with 95% CI error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table["rows"] if "skipped" not in r]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(rows) + 1), 3.8), dpi=100)
    xs = list(range(len(rows)))
    acc = [r["accuracy"] for r in rows]
    err = [[max(0.0, r["accuracy"] - r["ci95"][0]) for r in rows], [max(0.0, r["ci95"][1] - r["accuracy"]) for r in rows]]
    colors = ["tab:gray" if r["key"] == "llm" else ("tab:red" if r["key"] == "blade" else "tab:blue") for r in rows]
    ax.bar(xs, acc, yerr=err, capsize=4, color=colors)
    ax.set_xticks(xs, [r["title"].replace(" (", "\n(") for r in rows], fontsize=7, rotation=0)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test accuracy (95% CI)")
    ax.set_title(f"BLADE ablation, {table['n_items']} questions")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def plot_accuracy_vs_tokens(table: dict, path: Path) -> None:
    """Scatter of accuracy (95% CI) against LLM prompt tokens per question, one labelled point per evaluated
    row: the cost of each choice beside what it buys. Nothing is written when no row has a token count."""
    rows = [r for r in table["rows"] if "skipped" not in r and r.get("llm_prompt_tokens_per_question") is not None]
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.4), dpi=100)
    right = max(r["llm_prompt_tokens_per_question"] for r in rows) * 1.6 + 1
    placed: list[tuple[float, float]] = []  # label anchors so far, in axes fractions
    for row in rows:
        x, y = row["llm_prompt_tokens_per_question"], row["accuracy"]
        color = "tab:gray" if row["key"] == "llm" else ("tab:green" if row["key"] in COMBINED_ROW_KEYS or
                                                        row["key"] == "retrieval" else "tab:blue")
        ax.errorbar([x], [y], yerr=[[max(0.0, y - row["ci95"][0])], [max(0.0, row["ci95"][1] - y)]], fmt="o",
                    color=color, capsize=3)
        # rows of about the same cost and accuracy would print their labels over each other: step them down
        fx, fy = x / right, y / 1.05
        clashes = sum(1 for px, py in placed if abs(px - fx) < 0.25 and abs(py - fy) < 0.04)
        placed.append((fx, fy - 0.035 * clashes))
        ax.annotate(row["title"], (x, y), textcoords="offset points", xytext=(5, 4 - 11 * clashes), fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_xlim(left=0, right=right)
    ax.set_xlabel("LLM prompt tokens per question (mean)")
    ax.set_ylabel("test accuracy (95% CI)")
    ax.set_title(f"Accuracy against prompt tokens, {table['n_items']} questions")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
