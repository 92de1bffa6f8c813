"""`blade-bpo model`: the embedded default small model."""

from __future__ import annotations

import click


@click.group()
def model() -> None:
    """Manage the embedded default small model (SmolLM2-135M-Instruct, offline)."""


@model.command("default")
@click.option("--dest", type=click.Path(file_okay=False), default=None,
              help="Directory to write the HF model to (default: $BLADE_HOME/models/SmolLM2-135M-Instruct).")
@click.option("--force", is_flag=True, help="Rebuild even if the directory is already complete.")
def default(dest: str | None, force: bool) -> None:
    """Materialise the embedded model as an HF directory and print its path (instant when cached)."""
    from ..small_lm.default_model import materialize_default_model

    click.echo(str(materialize_default_model(dest, force=force)))
