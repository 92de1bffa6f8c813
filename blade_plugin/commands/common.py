"""Options shared by several sub-commands (task data and prompt templates)."""

from __future__ import annotations

import functools

import click

from ..extras.constants import GENERATION_BATCH_SIZE

QA_FORMATS = click.Choice(["auto", "generic", "jecqa", "mlecqa"])


def prompt_options(func):
    """--templates-dir / --variant: which Jinja prompt templates to use."""

    @click.option("--templates-dir", type=click.Path(exists=True, file_okay=False), default=None,
                  help="Directory of edited prompt templates (default: the bundled ones; see `blade-bpo init`).")
    @click.option("--variant", default=None, help="Bundled template variant: zh_legal or zh_medical.")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def load_prompt_set(templates_dir: str | None, variant: str | None):
    from ..qa.prompts import load_prompts

    return load_prompts(templates_dir, variant=variant)


SMALL_BACKEND_META = "blade.small_backend"  # click Context.meta key: the backend options of this invocation


def small_model_options(func):
    """The small LM (the knowledge writer): base model, LoRA adapter, chat template, generation size, and the
    backend that runs it. The backend options do not reach the command's signature: they are kept in the click
    context's `meta` for `load_generator`, so every command that loads a writer gets them unchanged."""

    @click.option("--small-model", default=None, type=click.Path(file_okay=False),
                  help="HF model directory of the small LM (default: the embedded SmolLM2-135M-Instruct).")
    @click.option("--adapter", default=None, type=click.Path(file_okay=False),
                  help="LoRA adapter directory from the KIT recipe (merged at load; hf backend only).")
    @click.option("--template", default=None,
                  help="LLaMA-Factory chat template (default: blade_qwen for Qwen models, else blade_chatml).")
    @click.option("--max-new-tokens", type=click.IntRange(min=1), default=128, show_default=True,
                  help="Length of the knowledge the small LM writes.")
    @click.option("--batch-size", type=click.IntRange(min=1), default=GENERATION_BATCH_SIZE, show_default=True,
                  help="Small-LM generation batch size (on CPU larger is faster; lower it if memory is short).")
    @click.option("--small-backend", type=click.Choice(["hf", "vllm"]), default="hf", show_default=True,
                  envvar="BLADE_SMALL_BACKEND",
                  help="hf: transformers in this process. vllm: `vllm serve MERGED --enable-prompt-embeds` "
                       "servers at --small-backend-url (merge a LoRA adapter first: `blade-bpo merge`).")
    @click.option("--small-backend-url", "small_backend_urls", multiple=True, envvar="BLADE_SMALL_BACKEND_URL",
                  help="Base URL of a vLLM server, e.g. http://gpu1:8000 (repeatable: requests go round-robin; "
                       "the environment variable takes several, space-separated). API key, if the servers "
                       "need one: BLADE_SMALL_BACKEND_API_KEY.")
    @click.option("--small-concurrency", type=click.IntRange(min=1), default=64, show_default=True,
                  envvar="BLADE_SMALL_CONCURRENCY", help="vLLM requests in flight over all servers (vllm).")
    @functools.wraps(func)
    def wrapper(*args, small_backend, small_backend_urls, small_concurrency, **kwargs):
        click.get_current_context().meta[SMALL_BACKEND_META] = {
            "backend": small_backend, "urls": tuple(small_backend_urls), "concurrency": small_concurrency}
        return func(*args, **kwargs)

    return wrapper


def resolve_small_model(small_model: str | None) -> str:
    """The model directory to load, checked up front so a typo fails in one line, not in a traceback."""
    from pathlib import Path

    from ..extras.errors import BladeError

    if small_model is None:
        from ..small_lm.default_model import materialize_default_model

        return str(materialize_default_model())
    path = Path(small_model)
    if not (path / "config.json").is_file():
        raise BladeError(f"--small-model {small_model}: not an HF model directory (no config.json)")
    return str(path)


def guess_template(model_dir: str, template: str | None) -> str:
    if template:
        return template
    from pathlib import Path

    for name in ("tokenizer_config.json", "chat_template.jinja"):
        path = Path(model_dir) / name
        if path.is_file() and "You are Qwen" in path.read_text(encoding="utf-8", errors="ignore"):
            return "blade_qwen"
    return "blade_chatml"


def load_generator(small_model, adapter, template, max_new_tokens, batch_size, backend: str | None = None,
                   urls: tuple[str, ...] | None = None, concurrency: int | None = None):
    """The small LM's KnowledgeWriter (the seam in `small_lm/base.py`, built by `small_lm/backend.py`); argument errors become one line.

    backend/urls/concurrency default to the `--small-backend*` options of the running command."""
    from pathlib import Path

    from ..extras.errors import BladeError
    from ..small_lm.backend import SmallBackendConfig, load_knowledge_writer

    ctx = click.get_current_context(silent=True)
    chosen = dict(ctx.meta.get(SMALL_BACKEND_META, {})) if ctx is not None else {}
    for key, value in (("backend", backend), ("urls", urls), ("concurrency", concurrency)):
        if value is not None:
            chosen[key] = value
    model_dir = resolve_small_model(small_model)
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise BladeError(f"--adapter {adapter}: not a LoRA adapter directory (no adapter_config.json)")
    template = guess_template(model_dir, template)
    config = SmallBackendConfig(model_dir, adapter, template, max_new_tokens, batch_size, **chosen)
    try:
        return load_knowledge_writer(config)
    except ValueError as err:  # LLaMA-Factory reports unknown templates and bad arguments this way
        raise BladeError(f"cannot load small model {model_dir} (template {template}): {err}") from err


def skip_invalid_option(func):
    """--skip-invalid: leave out unusable records of a public dataset (listed in the run's stats)."""

    @click.option("--skip-invalid", is_flag=True,
                  help="Skip records that cannot be used (e.g. an empty answer list in raw JEC-QA) instead of "
                       "stopping; they are counted and listed (file:line: reason) in the stats/metrics JSON.")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def report_skipped(items, report_path) -> None:
    """Add the records `load_qa(skip_invalid=True)` left out to the run's JSON report and say so."""
    import logging
    from pathlib import Path

    from ..runs.atomic_io import atomic_write_json, read_json

    skipped = getattr(items, "skipped", [])
    if not skipped:
        return
    report_path = Path(report_path)
    report = read_json(report_path) if report_path.is_file() else {}
    report["skipped_invalid"] = {"count": len(skipped), "records": skipped}
    atomic_write_json(report_path, report)
    logging.getLogger(__name__).warning("skipped %d invalid record(s), listed in %s (first: %s)", len(skipped),
                                        report_path, skipped[0])
