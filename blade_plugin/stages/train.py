"""`llamafactory-cli train` as a pipeline stage: the DP and KIT trainings' shared runner and settings."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..extras.errors import BladeError

logger = logging.getLogger(__name__)


def llamafactory_cli() -> str:
    """The `llamafactory-cli` of this interpreter's environment (else the one on PATH)."""
    candidate = Path(sys.executable).parent / "llamafactory-cli"
    return str(candidate) if candidate.exists() else "llamafactory-cli"


def run_llamafactory_train(recipe: Path, overrides: dict, cwd: Path, log_path: Path, desc: str = "train") -> None:
    """`llamafactory-cli train recipe key=value ...`, logged to a file, with a progress bar fed from the
    trainer_log.jsonl LLaMA-Factory writes; a failure names the log and quotes its last line."""
    from ..runs.progress import tqdm

    args = [llamafactory_cli(), "train", str(recipe), *[f"{k}={v}" for k, v in overrides.items()]]
    logger.info("$ %s", " ".join(args))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    trainer_log = Path(cwd) / str(overrides.get("output_dir", "")) / "trainer_log.jsonl"
    # The log file is for reading afterwards: keep LLaMA-Factory's full INFO output there.
    env = {**os.environ, "LLAMAFACTORY_VERBOSITY": "INFO", "TRANSFORMERS_VERBOSITY": "info"}
    with open(log_path, "w", encoding="utf-8") as log, tqdm(total=overrides.get("max_steps"), desc=desc,
                                                             unit="step") as bar:
        proc = subprocess.Popen(args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            while proc.poll() is None:
                time.sleep(1.0)
                _update_bar(bar, trainer_log)
        except BaseException:  # Ctrl-C or a kill of this process: do not leave the trainer running
            proc.terminate()
            proc.wait(timeout=30)
            raise
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


def train_overrides(config, stage: str) -> dict[str, Any]:
    """The LLaMA-Factory keys of one training ("dp" or "kit") from a PipelineConfig: the pipeline's stage keys,
    then the plain LLaMA-Factory keys of blade.yaml, then its `dp_`/`kit_` ones (the later wins)."""
    a = config.args
    overrides: dict[str, Any] = {
        "finetuning_type": a.finetuning_type,
        "num_train_epochs": getattr(a, f"{stage}_num_train_epochs"),
        "learning_rate": getattr(a, f"{stage}_learning_rate"),
        "per_device_train_batch_size": getattr(a, f"{stage}_per_device_train_batch_size"),
        "gradient_accumulation_steps": a.gradient_accumulation_steps, "logging_steps": 1, "save_strategy": "no",
        "seed": a.seed,
        # a 135M model's activations fit in memory many times over: recomputing them only costs time
        "disable_gradient_checkpointing": a.disable_gradient_checkpointing,
    }
    if a.finetuning_type == "freeze":
        overrides["freeze_trainable_layers"] = a.freeze_trainable_layers
    # the order of the demo's command lines (logs and markers of earlier runs read the same)
    overrides = {k: overrides[k] for k in ("finetuning_type", "freeze_trainable_layers", "num_train_epochs",
                                           "learning_rate", "per_device_train_batch_size",
                                           "gradient_accumulation_steps", "logging_steps", "save_strategy", "seed",
                                           "disable_gradient_checkpointing") if k in overrides}
    steps = getattr(a, f"{stage}_max_steps")
    if steps:
        overrides["max_steps"] = steps
    if stage == "dp":
        # documents packed into dp_cutoff_len-token blocks: no padding
        overrides.update({"packing": a.dp_packing, "cutoff_len": a.dp_cutoff_len})
    else:
        overrides.update({"cutoff_len": a.kit_cutoff_len, "template": a.template})
    overrides.update(config.lf_both)
    overrides.update(config.lf_dp if stage == "dp" else config.lf_kit)
    return overrides
