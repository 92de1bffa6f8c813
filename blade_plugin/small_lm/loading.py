"""Building the small LM's KnowledgeWriter from user-facing arguments: the model directory checked up front
(a typo fails in one line, not in a traceback), the chat template guessed, then the backend factory."""

from __future__ import annotations

from pathlib import Path

from ..extras.errors import BladeError
from .backend import SmallBackendConfig, load_knowledge_writer
from .base import KnowledgeWriter


def resolve_small_model(small_model: str | None) -> str:
    """The model directory to load (the embedded model for None)."""
    if small_model is None:
        from .default_model import materialize_default_model

        return str(materialize_default_model())
    return str(check_model_dir(small_model, "--small-model"))


def check_model_dir(model_dir: str, what: str) -> Path:
    """`model_dir` as a Path if it is an HF model directory; else one line saying what is wrong with it."""
    path = Path(model_dir).expanduser()
    if not path.exists():
        raise BladeError(f"{what} {model_dir}: no such directory")
    if not path.is_dir():
        raise BladeError(f"{what} {model_dir}: a file, not a model directory")
    if not (path / "config.json").is_file():
        raise BladeError(f"{what} {model_dir}: not an HF model directory (no config.json)")
    return path


def guess_template(model_dir: str, template: str | None) -> str:
    if template:
        return template
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        path = Path(model_dir) / name
        if path.is_file() and "You are Qwen" in path.read_text(encoding="utf-8", errors="ignore"):
            return "blade_qwen"
    return "blade_chatml"


def load_writer(small_model: str | None, adapter: str | None, template: str | None, max_new_tokens: int,
                batch_size: int, backend: str = "hf", urls: tuple[str, ...] = (), concurrency: int = 64,
                trust_remote_code: bool = False) -> KnowledgeWriter:
    """The KnowledgeWriter for these arguments; argument errors become one line (BladeError)."""
    model_dir = resolve_small_model(small_model)
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise BladeError(f"--adapter {adapter}: not a LoRA adapter directory (no adapter_config.json)")
    template = guess_template(model_dir, template)
    config = SmallBackendConfig(model_dir, adapter, template, max_new_tokens, batch_size, backend=backend,
                                urls=tuple(urls), concurrency=concurrency, trust_remote_code=trust_remote_code)
    try:
        return load_knowledge_writer(config)
    except ValueError as err:  # LLaMA-Factory reports unknown templates and bad arguments this way
        hint = ("; if you trust its code, pass --trust-remote-code" if "trust_remote_code" in str(err)
                and not trust_remote_code else "")
        raise BladeError(f"cannot load small model {model_dir} (template {template}): {err}{hint}") from err
