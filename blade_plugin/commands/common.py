"""Options and helpers shared by several sub-commands (task data format, prompt templates, skipped records)."""

from __future__ import annotations

import functools

import click

from ..hparams.job_args import QA_FORMAT_CHOICES

QA_FORMATS = click.Choice(list(QA_FORMAT_CHOICES))


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
