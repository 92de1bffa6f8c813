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
    """Scaffold a workspace: blade.yaml (every key of `blade-bpo run`, explained), editable Jinja prompt templates,
    recipes, data/dataset_info.json and the demo data."""
    from ..stages.workspace import init_workspace as scaffold

    written = scaffold(directory, variant=variant, force=force, preset=preset)
    if preset:
        click.echo(f"Wrote {len(written)} files to {directory}. Next: cd {directory} && cat README.md (step 1 makes "
                   "the data blade.yaml names)")
    else:
        click.echo(f"Wrote {len(written)} files to {directory}. Next: point the data lines of {directory}/blade.yaml "
                   f"at your files, then `blade-bpo run {directory}/blade.yaml --dry-run` and without --dry-run "
                   "(as written it runs the bundled demo domain)")
