"""Merge a LoRA adapter into its base model with LLaMA-Factory's export path (what `llamafactory-cli export`
runs), for servers that cannot apply the adapter themselves (the vllm backend's prompt embeddings)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from ..extras.errors import BladeError
from .base import MERGE_RECORD

logger = logging.getLogger(__name__)

EXPORT_DTYPES = ("auto", "float32", "bfloat16", "float16")


def merge_adapter(model_dir: str, adapter_dir: str, out_dir: str, template: str = "blade_chatml",
                  dtype: str = "auto", shard_size_gb: int = 5, trust_remote_code: bool = False) -> Path:
    """Write base + adapter as one HF model directory `out_dir` (safetensors) and a `blade_merge.json` record.

    dtype "auto" is LLaMA-Factory's choice (a float32 model is saved in bfloat16 where supported). Refuses an
    existing `out_dir`: nothing the user owns is overwritten. The export goes to a sibling temporary directory
    renamed into place at the end, so an interrupted merge leaves no half-written model behind.
    trust_remote_code: let the model directory run its own Python code on load (never by default).
    """
    out = Path(out_dir)
    if out.exists():
        raise BladeError(f"--out {out_dir}: already exists; choose a new directory (nothing was overwritten)")
    if not (Path(model_dir) / "config.json").is_file():
        raise BladeError(f"--model {model_dir}: not an HF model directory (no config.json)")
    _check_adapter(Path(adapter_dir))
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype must be one of {EXPORT_DTYPES}, got {dtype!r}")
    from llamafactory.train.tuner import export_model

    staging = out.parent / f".{out.name}.merging-{os.getpid()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            export_model({"model_name_or_path": str(model_dir), "adapter_name_or_path": str(adapter_dir),
                          "finetuning_type": "lora", "template": template, "export_dir": str(staging),
                          "export_size": shard_size_gb, "export_device": "cpu", "infer_dtype": dtype,
                          "trust_remote_code": trust_remote_code})
        except (RuntimeError, ValueError, KeyError, OSError) as err:  # peft/transformers: shapes, keys, files
            message = " ".join(str(err).split())
            raise BladeError(f"--adapter {adapter_dir}: cannot be applied to --model {model_dir}: "
                             f"{message[:300]}") from err
        config = (Path(model_dir) / "config.json").read_bytes()
        record = {"base_model": str(model_dir), "config_sha256": hashlib.sha256(config).hexdigest()[:16],
                  "adapter": str(adapter_dir), "template": template, "dtype": dtype}
        (staging / MERGE_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
        os.rename(staging, out)  # fails rather than replaces if out appeared meanwhile
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("merged %s + %s into %s", model_dir, adapter_dir, out)
    return out


def _check_adapter(adapter: Path) -> None:
    """A LoRA adapter directory: a readable LoRA adapter_config.json and its weights (before any model loads)."""
    config_file = adapter / "adapter_config.json"
    if not config_file.is_file():
        raise BladeError(f"--adapter {adapter}: not a LoRA adapter directory (no adapter_config.json)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BladeError(f"--adapter {adapter}: adapter_config.json is not valid JSON ({err})") from None
    kind = config.get("peft_type") if isinstance(config, dict) else None
    if kind != "LORA":
        raise BladeError(f"--adapter {adapter}: adapter_config.json is a {kind or 'typeless'} adapter, not LoRA")
    if not any((adapter / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")):
        raise BladeError(f"--adapter {adapter}: no adapter weights (adapter_model.safetensors)")
