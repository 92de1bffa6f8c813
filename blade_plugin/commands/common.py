"""Options shared by several sub-commands (task data and prompt templates)."""

from __future__ import annotations

import functools

import click

from ..defaults import GENERATION_BATCH_SIZE

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


def small_model_options(func):
    """The small LM (the knowledge writer): base model, LoRA adapter, chat template, generation size."""

    @click.option("--small-model", default=None, type=click.Path(file_okay=False),
                  help="HF model directory of the small LM (default: the embedded SmolLM2-135M-Instruct).")
    @click.option("--adapter", default=None, type=click.Path(file_okay=False),
                  help="LoRA adapter directory from the KIT recipe (merged at load).")
    @click.option("--template", default=None,
                  help="LLaMA-Factory chat template (default: blade_qwen for Qwen models, else blade_chatml).")
    @click.option("--max-new-tokens", type=click.IntRange(min=1), default=128, show_default=True,
                  help="Length of the knowledge the small LM writes.")
    @click.option("--batch-size", type=click.IntRange(min=1), default=GENERATION_BATCH_SIZE, show_default=True,
                  help="Small-LM generation batch size (on CPU larger is faster; lower it if memory is short).")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def resolve_small_model(small_model: str | None) -> str:
    """The model directory to load, checked up front so a typo fails in one line, not in a traceback."""
    from pathlib import Path

    from ..errors import BladeError

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


def load_generator(small_model, adapter, template, max_new_tokens, batch_size):
    """The small LM's KnowledgeWriter (the seam in `small_lm/backend.py`); argument errors become one line."""
    from pathlib import Path

    from ..errors import BladeError
    from ..small_lm.backend import SmallBackendConfig, load_knowledge_writer

    model_dir = resolve_small_model(small_model)
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise BladeError(f"--adapter {adapter}: not a LoRA adapter directory (no adapter_config.json)")
    template = guess_template(model_dir, template)
    try:
        return load_knowledge_writer(SmallBackendConfig(model_dir, adapter, template, max_new_tokens, batch_size))
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

    from ..io_utils import atomic_write_json, read_json

    skipped = getattr(items, "skipped", [])
    if not skipped:
        return
    report_path = Path(report_path)
    report = read_json(report_path) if report_path.is_file() else {}
    report["skipped_invalid"] = {"count": len(skipped), "records": skipped}
    atomic_write_json(report_path, report)
    logging.getLogger(__name__).warning("skipped %d invalid record(s), listed in %s (first: %s)", len(skipped),
                                        report_path, skipped[0])
