"""`blade-bpo init DIR`."""

from __future__ import annotations

import click


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--variant", default=None,
              help="Prompt template variant to copy (e.g. zh_legal, zh_medical); default: English.")
@click.option("--preset", type=click.Choice(["jec-qa", "mlec-qa"]), default=None,
              help="The paper's setting on its dataset: README with one command per stage, its prompts, "
                   "paper recipes (Qwen2.5 GPU + CPU), no demo data.")
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def init_workspace(directory: str, variant: str | None, preset: str | None, force: bool) -> None:
    """Scaffold a workspace: recipes, editable Jinja prompt templates, data/dataset_info.json, demo data."""
    from ..stages.workspace import init_workspace as scaffold

    written = scaffold(directory, variant=variant, force=force, preset=preset)
    click.echo(f"Wrote {len(written)} files to {directory}. Next: cd {directory} && cat README.md")
