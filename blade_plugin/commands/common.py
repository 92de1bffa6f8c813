"""Options shared by several sub-commands (task data and prompt templates)."""

from __future__ import annotations

import functools

import click

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
    from ..prompts import load_prompts

    return load_prompts(templates_dir, variant=variant)
