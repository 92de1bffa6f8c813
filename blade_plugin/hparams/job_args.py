"""Arguments of the three resumable jobs: `knowledge` (KIT data), `optimize` (BPO) and `evaluate`.

Metadata keys as in `llm_args.LLMArguments`, plus: option (the flag, when it differs from the field name),
required, exists (a path that must exist), kind ("max_errors": a count or a fraction), hidden, metavar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

QA_FORMAT_CHOICES = ("auto", "generic", "jecqa", "mlecqa")


def _max_errors() -> Any:
    return field(default=None, metadata={
        "kind": "max_errors",
        "help": "Items whose LLM request fails after all retries are marked as errors (scored wrong, listed in the "
                "outputs); the run stops once more than this many failed: a count, or a fraction of the items like "
                "0.1 (default: 5% of the items, at least 1)."})


def _skip_invalid() -> Any:
    return field(default=False, metadata={
        "flag": True,
        "help": "Skip records that cannot be used (e.g. an empty answer list in raw JEC-QA) instead of stopping; "
                "they are counted and listed (file:line: reason) in the stats/metrics JSON."})


def _format(help_text: str | None = None) -> Any:
    return field(default="auto", metadata={"option": "--format", "choices": QA_FORMAT_CHOICES, "show_default": True,
                                           "help": help_text or "QA file format: auto (detected from the first record), generic JSONL, raw JEC-QA (jecqa) or raw MLEC-QA (mlecqa)."})


def _group_by() -> Any:
    return field(default=None, metadata={
        "envvar": "BLADE_GROUP_BY", "metavar": "FIELD",
        "help": "Also report accuracy, 95% CI, McNemar vs LLM alone and knowledge support per value of this item "
                "field (e.g. the demo's `kind`, raw JEC-QA's `type`; any field beyond id/question/options/answer)."})


def _corpus(help_text: str) -> Any:
    return field(default=None, metadata={"path": "file", "exists": True, "envvar": "BLADE_CORPUS", "help": help_text})


def _corpus_k(default: int | None, help_text: str = "Passages retrieved per question.") -> Any:
    if default is None:  # the retrieving rows' default (retrieval/combine.py)
        from ..retrieval.combine import DEFAULT_K

        default = DEFAULT_K
    return field(default=default, metadata={"min": 1, "show_default": True, "envvar": "BLADE_CORPUS_K",
                                            "help": help_text})


def _passage_chars() -> Any:
    from ..retrieval.combine import DEFAULT_PASSAGE_CHARS

    return field(default=DEFAULT_PASSAGE_CHARS, metadata={
        "min": 0, "show_default": True, "envvar": "BLADE_PASSAGE_CHARS", "metavar": "N",
        "help": "Cut each retrieved passage to N characters (0: whole passages), wherever passages are shown to "
                "the LLM or the small model."})


def _retrieval_query() -> Any:
    return field(default="question+options", metadata={
        "choices": ("question+options", "question"), "show_default": True, "envvar": "BLADE_RETRIEVAL_QUERY",
        "help": "What the BM25 query of the retrieved passages is made of (knowledge-as-query adds the small "
                "model's knowledge)."})


def _limit(what: str = "items") -> Any:
    return field(default=None, metadata={"min": 1, "help": f"Use only the first N {what}."})


@dataclass
class KnowledgeArguments:
    train_path: str = field(metadata={"option": "--train", "required": True, "path": "file",
                                      "help": "QA items with gold answers (generic JSONL, JEC-QA or MLEC-QA raw)."})
    fmt: str = _format("Input format.")
    out_path: str = field(default=None, metadata={
        "option": "--out", "required": True, "path": "file",
        "help": "Alpaca JSONL to write (instruction = small-model query, output = knowledge)."})
    dataset_dir: str | None = field(default=None, metadata={
        "path": "dir", "help": "Register the output in this directory's dataset_info.json (for the KIT recipe)."})
    dataset_name: str | None = field(default=None, metadata={
        "help": "Name of the dataset entry (default: the output file stem)."})
    limit: int | None = _limit()
    chunk_size: int | None = field(default=None, metadata={
        "min": 1, "hidden": True, "help": "Ignored (progress is now saved per item); kept so old scripts keep working."})
    restart: bool = field(default=False, metadata={"flag": True, "help": "Discard saved progress and start over (resuming is the default; the LLM cache still applies)."})
    corpus: str | None = _corpus(
        "{\"text\"} JSONL corpus (the DP corpus): ground KIT in it. The BM25 passages that support the correct "
        "answer (question + answer text as the query) go into the knowledge-generation prompt and are recorded "
        "in every row.")
    corpus_k: int = _corpus_k(3)
    query_corpus: str | None = field(default=None, metadata={
        "path": "file", "exists": True,
        "help": "{\"text\"} JSONL corpus: KIT for the knowledge-from-passages mode. Each item's small-model query "
                "gets the top --corpus-k BM25 passages retrieved for its question (--retrieval-query), as at "
                "inference, not the passages that support the answer; every row records them. May be the --corpus "
                "file; the two are independent."})
    passage_chars: int = _passage_chars()
    retrieval_query: str = _retrieval_query()
    max_errors: int | float | None = _max_errors()
    skip_invalid: bool = _skip_invalid()


@dataclass
class EvaluateArguments:
    test_path: str = field(metadata={"option": "--test", "required": True, "path": "file", "help": "Test QA items."})
    fmt: str = _format()
    out_dir: str = field(default=None, metadata={
        "option": "--out", "required": True, "path": "dir",
        "help": "Directory for predictions.jsonl, metrics.json, report.md."})
    soft_prompt: str | None = field(default=None, metadata={
        "path": "file", "exists": True,
        "help": "soft_prompt.safetensors from `blade-bpo optimize` (enables the blade mode)."})
    modes: str | None = field(default=None, metadata={
        "help": "Comma-separated subset of llm,knowledge,blade and the modes that combine retrieval with the "
                "knowledge (need --corpus): passages+knowledge, knowledge-from-passages, knowledge-as-query "
                "(default: llm,knowledge and blade with --soft-prompt)."})
    limit: int | None = _limit()
    bootstrap: int = field(default=2000, metadata={"min": 1, "show_default": True,
                                                   "help": "Bootstrap resamples for the CIs."})
    seed: int = field(default=0, metadata={"min": 0, "show_default": True,
                                           "help": "Seed of the bootstrap resampling (the CIs)."})
    restart: bool = field(default=False, metadata={
        "flag": True, "help": "Discard saved progress in --out and start over (resuming is the default; the LLM "
                              "cache still applies)."})
    group_by: str | None = _group_by()
    corpus: str | None = _corpus("{\"text\"} JSONL corpus (the DP corpus) the combined modes retrieve from (BM25).")
    corpus_k: int = _corpus_k(None, "Passages retrieved per question (the default was chosen on both bundled "
                                          "dev_large splits, docs/evidence.md; choose yours on your dev set).")
    passage_chars: int = _passage_chars()
    retrieval_query: str = _retrieval_query()
    max_errors: int | float | None = _max_errors()
    skip_invalid: bool = _skip_invalid()


@dataclass
class OptimizeArguments:
    dev_path: str = field(metadata={
        "option": "--dev", "required": True, "path": "file",
        "help": "Dev QA items the objective scores (accuracy of the LLM with the small LM's knowledge)."})
    fmt: str = _format()
    out_dir: str = field(default=None, metadata={
        "option": "--out", "required": True, "path": "dir",
        "help": "Run directory: trials.jsonl, soft_prompt.safetensors, summary.json, convergence.png."})
    n_tokens: int = field(default=5, metadata={"min": 1, "show_default": True,
                                               "help": "Soft tokens prepended to the input."})
    dim: int = field(default=10, metadata={"option": "--d", "min": 1, "show_default": True,
                                           "help": "Dimension of the search space z."})
    n_init: int = field(default=5, metadata={"min": 1, "show_default": True, "help": "Scrambled Sobol initial points."})
    q: int = field(default=1, metadata={"min": 1, "show_default": True,
                                        "help": "Proposals per BO round (qLogEI when > 1)."})
    iterations: int = field(default=10, metadata={"min": 0, "show_default": True,
                                                  "help": "BO rounds after the initial points."})
    max_evaluations: int | None = field(default=None, metadata={
        "min": 1, "help": "Stop after this many search evaluations (the baseline and re-scoring come on top)."})
    init_mode: str = field(default="random", metadata={
        "option": "--init", "choices": ("random", "vocab"), "show_default": True,
        "help": "Search around the origin (random) or around real token embeddings (vocab)."})
    seed: int = field(default=0, metadata={"min": 0, "show_default": True,
                                           "help": "Seeds the projection A and the optimiser."})
    limit: int | None = _limit("dev items")
    restart: bool = field(default=False, metadata={
        "flag": True,
        "help": "Start over in --out (removes its trials, soft prompt and summary); by default a run resumes."})
    resume: bool = field(default=False, metadata={
        "flag": True, "hidden": True, "help": "Accepted for one release and ignored: resuming is the default now."})
    rescore_path: str | None = field(default=None, metadata={
        "option": "--rescore-dev", "path": "file",
        "help": "Second dev set: the top candidates and the baseline are re-scored on it before choosing."})
    holdout: float | None = field(default=None, metadata={
        "min": 0.0, "max": 0.8,
        "help": "Without --rescore-dev: the fraction of --dev held out of the search to re-score the top candidates "
                "on (default 0.25; 0 chooses on the search scores alone)."})
    top_k: int = field(default=3, metadata={
        "min": 1, "show_default": True,
        "help": "Search candidates re-scored (plus the baseline) before the soft prompt is chosen."})
    selection_guard: bool = field(default=False, metadata={
        "flag": True,
        "help": "Also write selected_soft_prompt.safetensors: BPO's soft prompt only if it beats the baseline on dev "
                "by more than the selection optimism BPO estimates (split-half), else none (the demo's guard; "
                "`ablate --workspace` prefers this file)."})
    skip_invalid: bool = _skip_invalid()
