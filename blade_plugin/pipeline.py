"""The main job: DP -> KIT data -> KIT training -> BPO -> evaluate, end to end, resumable stage by stage.

Every stage writes into one work directory and is skipped when its output is already complete, so an
interrupted demo picks up where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BladeError
from .io_utils import atomic_write_json

logger = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    workdir: Path
    dp_steps: int = 20
    kit_steps: int = 30
    bpo_init: int = 3
    bpo_iterations: int = 3
    n_tokens: int = 5
    d: int = 10
    max_new_tokens: int = 64
    limit_train: int | None = None
    limit_dev: int | None = None
    limit_test: int | None = None
    seed: int = 0
    small_backend: str = "hf"  # "vllm": BPO and evaluation on vLLM servers of the merged KIT model
    small_backend_urls: tuple[str, ...] = ()
    stage_times: dict = field(default_factory=dict)


def _llamafactory_cli() -> str:
    candidate = Path(sys.executable).parent / "llamafactory-cli"
    return str(candidate) if candidate.exists() else "llamafactory-cli"


def run_llamafactory_train(recipe: Path, overrides: dict, cwd: Path, log_path: Path, desc: str = "train") -> None:
    """`llamafactory-cli train recipe key=value ...`, logged to a file, with a progress bar fed from the
    trainer_log.jsonl LLaMA-Factory writes; a failure names the log and quotes its last line."""
    from .progress_bar import tqdm

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


def _done(path: Path) -> bool:
    return path.is_file()


def _add_previous_times(summary_file: Path, times: dict) -> dict:
    try:
        previous = json.loads(summary_file.read_text(encoding="utf-8")).get("stage_seconds", {})
    except (OSError, ValueError, AttributeError):
        previous = {}
    return {key: round(value + float(previous.get(key, 0) or 0), 1) for key, value in times.items()}


def _mark(path: Path, info: dict) -> None:
    atomic_write_json(path, info)


def run_demo(config: DemoConfig, llm_config, local_scores_warning: bool) -> dict:
    """Run all stages and return a summary naming every artifact."""
    from .lf.dataset_info import register_dataset
    from .small_lm.default_model import materialize_default_model
    from .evaluation import EvalConfig, run_evaluation
    from .kit_generator import generate_kit_data
    from .llm.client import LLMClient
    from .qa.prompts import load_prompts
    from .qa.data import load_qa
    from .workspace import init_workspace

    work = config.workdir.resolve()
    timer = time.perf_counter
    t_all = timer()
    base_model = materialize_default_model()
    if not (work / "recipes").is_dir():
        init_workspace(work)
    prompts = load_prompts(work / "templates")
    data = work / "data"
    saves = work / "saves"
    logs = work / "logs"

    # 1. DP
    t = timer()
    dp_dir = saves / "dp"
    if not _done(dp_dir / "blade_stage.json"):
        logger.info("[1/5] DP: continued pre-training on data/demo_corpus.jsonl (%d steps)", config.dp_steps)
        run_llamafactory_train(work / "recipes" / "blade_dp_full.yaml",
                               {"model_name_or_path": base_model, "dataset": "blade_demo_corpus",
                                "max_steps": config.dp_steps, "output_dir": dp_dir, "save_steps": 100000,
                                "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                                "cutoff_len": 256, "logging_steps": 1},
                               work, logs / "dp.log", desc="DP")
        _mark(dp_dir / "blade_stage.json", {"stage": "dp", "steps": config.dp_steps})
    config.stage_times["dp_s"] = round(timer() - t, 1)

    # 2. KIT data (the LLM writes knowledge; consistency filter)
    t = timer()
    kit_file = data / "kit_knowledge.jsonl"
    with LLMClient(llm_config) as client:
        logger.info("[2/5] KIT data: LLM writes knowledge for data/demo_qa_train.jsonl and filters it")
        train = load_qa(data / "demo_qa_train.jsonl", limit=config.limit_train)
        stats = generate_kit_data(train, prompts, client, kit_file)
        register_dataset("blade_kit_generated", kit_file, data, formatting="alpaca")
    config.stage_times["kit_data_s"] = round(timer() - t, 1)
    # A weak local LLM may keep almost nothing; the bundled demo KIT set keeps the training stage meaningful.
    kit_datasets = "blade_kit_generated,blade_demo_kit" if stats.kept else "blade_demo_kit"

    # 3. KIT training (LoRA on the DP model)
    t = timer()
    kit_dir = saves / "kit_lora"
    if not _done(kit_dir / "blade_stage.json"):
        logger.info("[3/5] KIT training: LoRA on %s (%d steps)", kit_datasets, config.kit_steps)
        run_llamafactory_train(work / "recipes" / "blade_kit_lora.yaml",
                               {"model_name_or_path": dp_dir, "dataset": kit_datasets, "max_steps": config.kit_steps,
                                "output_dir": kit_dir, "save_strategy": "steps", "save_steps": 100000, "per_device_train_batch_size": 2,
                                "gradient_accumulation_steps": 1, "cutoff_len": 384, "logging_steps": 1},
                               work, logs / "kit.log", desc="KIT")
        _mark(kit_dir / "blade_stage.json", {"stage": "kit", "steps": config.kit_steps, "datasets": kit_datasets})
    config.stage_times["kit_train_s"] = round(timer() - t, 1)

    # 4. BPO
    from .bpo.objective import KnowledgeObjective
    from .bpo.run import BPORunConfig, run_bpo
    from .small_lm.backend import SmallBackendConfig, load_knowledge_writer
    from .small_lm.soft_prompt import SoftPromptSpace

    t = timer()
    writer_dir, writer_adapter = str(dp_dir), str(kit_dir)
    if config.small_backend == "vllm":  # prompt embeddings need the adapter merged into the weights
        from .small_lm.merge import merge_adapter

        writer_dir, writer_adapter = str(saves / "kit_merged"), None
        if not Path(writer_dir).is_dir():
            merge_adapter(str(dp_dir), str(kit_dir), writer_dir, template="blade_chatml", dtype="float32")
        if not config.small_backend_urls:
            raise BladeError(f"KIT model merged into {writer_dir}; serve it with `vllm serve {writer_dir} "
                             f"--enable-prompt-embeds` and re-run with --small-backend-url (finished stages are kept)")
    generator = load_knowledge_writer(SmallBackendConfig(
        writer_dir, writer_adapter, template="blade_chatml", max_new_tokens=config.max_new_tokens,
        backend=config.small_backend, urls=tuple(config.small_backend_urls)))
    space = SoftPromptSpace.for_generator(generator, n_tokens=config.n_tokens, d=config.d, seed=config.seed)
    bpo_dir = work / "runs" / "bpo"
    dev = load_qa(data / "demo_qa_dev.jsonl", limit=config.limit_dev)
    bpo_config = BPORunConfig(out_dir=bpo_dir, d=config.d, n_tokens=config.n_tokens, n_init=config.bpo_init,
                              iterations=config.bpo_iterations, seed=config.seed,
                              resume=(bpo_dir / "trials.jsonl").exists())
    with LLMClient(llm_config) as client:
        logger.info("[4/5] BPO: %d Sobol + %d BO evaluations on %d dev questions",
                    config.bpo_init, config.bpo_iterations, len(dev))
        objective = KnowledgeObjective(dev, prompts, client, generator, space)
        summary = run_bpo(bpo_config, objective, space.to_soft_prompt,
                          {**generator.model_fingerprint, "template": "blade_chatml",
                           "max_new_tokens": config.max_new_tokens})
    config.stage_times["bpo_s"] = round(timer() - t, 1)

    # 5. Evaluate
    from .small_lm.soft_prompt import load_soft_prompt

    t = timer()
    soft_prompt, _ = load_soft_prompt(bpo_dir / "soft_prompt.safetensors", expected_hidden=generator.hidden_size)
    test = load_qa(data / "demo_qa_test.jsonl", limit=config.limit_test)
    eval_dir = work / "runs" / "eval"
    with LLMClient(llm_config) as client:
        logger.info("[5/5] Evaluate on %d test questions: llm, knowledge, blade", len(test))
        metrics = run_evaluation(test, prompts, client,
                                 EvalConfig(out_dir=eval_dir, modes=("llm", "knowledge", "blade"),
                                            fingerprint_extra={"soft_prompt": summary.best_score}),
                                 generator, soft_prompt)
    config.stage_times["evaluate_s"] = round(timer() - t, 1)
    config.stage_times["total_s"] = round(timer() - t_all, 1)

    result = {
        "workdir": str(work),
        "llm": llm_config.describe() if hasattr(llm_config, "describe") else str(llm_config.model),
        "scores_meaningful": not local_scores_warning,
        "kit": {"kept": stats.kept, "total": stats.total, "file": str(kit_file)},
        "bpo": {"best_dev_accuracy": summary.best_score, "evaluations": summary.n_evaluations},
        "test_accuracy": {m: v["accuracy"] for m, v in metrics["modes"].items()},
        "artifacts": {
            "dp_model": str(dp_dir), "kit_adapter": str(kit_dir), "kit_data": str(kit_file),
            "soft_prompt": str(bpo_dir / "soft_prompt.safetensors"), "bpo_trials": str(bpo_dir / "trials.jsonl"),
            "convergence_plot": str(bpo_dir / "convergence.png"), "predictions": str(eval_dir / "predictions.jsonl"),
            "metrics": str(eval_dir / "metrics.json"), "report": str(eval_dir / "report.md"),
            "logs": str(logs),
        },
        # Summed over resumed runs, so a re-run that skips finished stages does not erase their cost.
        "stage_seconds": _add_previous_times(work / "demo_summary.json", config.stage_times),
        "this_run_seconds": config.stage_times["total_s"],
    }
    atomic_write_json(work / "demo_summary.json", result)
    return result
