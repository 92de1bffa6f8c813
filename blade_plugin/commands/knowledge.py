"""`blade-bpo knowledge`: KIT data generation with consistency filtering."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from .arguments import llm_options
from .common import QA_FORMATS, load_prompt_set, prompt_options, report_skipped, skip_invalid_option
from .error_options import max_errors_option

logger = logging.getLogger(__name__)


@click.command()
@click.option("--train", "train_path", required=True, type=click.Path(dir_okay=False),
              help="QA items with gold answers (generic JSONL, JEC-QA or MLEC-QA raw).")
@click.option("--format", "fmt", type=QA_FORMATS, default="auto", show_default=True, help="Input format.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Alpaca JSONL to write (instruction = small-model query, output = knowledge).")
@click.option("--dataset-dir", type=click.Path(file_okay=False), default=None,
              help="Register the output in this directory's dataset_info.json (for the KIT recipe).")
@click.option("--dataset-name", default=None, help="Name of the dataset entry (default: the output file stem).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only the first N items.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=None, hidden=True,
              help="Ignored (progress is now saved per item); kept so old scripts keep working.")
@click.option("--restart", is_flag=True,
              help="Discard saved progress and start over (resuming is the default; the LLM cache still applies).")
@max_errors_option
@skip_invalid_option
@prompt_options
@llm_options
def knowledge(train_path, fmt, out_path, dataset_dir, dataset_name, limit, chunk_size, restart, max_errors,
              skip_invalid,
              templates_dir, variant, llm_args) -> None:
    """The LLM writes knowledge for each (question, answer); keep only knowledge that lets it answer right."""
    from ..lf.dataset_info import DATA_CONFIG, check_dataset_name, load_dataset_info, register_dataset
    from ..stages.kit import generate_kit_data, progress_path_for
    from ..llm.client import LLMClient
    from ..runs.outputs import Output, check_outputs
    from ..qa.data import load_qa

    # Every output is checked before the first request: not an input, writable, a valid dataset entry.
    out = Path(out_path)
    stats_path = out.with_name(out.name + ".stats.json")
    outputs = [Output("--out", out), Output("--out", progress_path_for(out)), Output("--out", stats_path)]
    if dataset_dir:
        check_dataset_name(dataset_name or out.stem, dataset_dir)
        load_dataset_info(dataset_dir)  # a malformed one fails now, not after every request was paid for
        outputs.append(Output("--dataset-dir", Path(dataset_dir) / DATA_CONFIG))
    check_outputs(outputs, [("--train", train_path), ("--cache-db", llm_args.cache_db)],
                  progress=progress_path_for(out))
    items = load_qa(train_path, fmt=fmt, limit=limit, skip_invalid=skip_invalid)
    prompts = load_prompt_set(templates_dir, variant)
    config = llm_args.to_config()
    with LLMClient(config) as client:
        stats = generate_kit_data(items, prompts, client, out, restart=restart, max_errors=max_errors)
    report_skipped(items, stats_path)
    click.echo(f"kept {stats.kept} / {stats.total} items (dropped {stats.dropped} whose knowledge led to a wrong "
               f"answer); wrote {out}")
    if stats.errors:
        shown = ", ".join(row["id"] for row in stats.failed[:10]) + (", ..." if stats.errors > 10 else "")
        click.echo(f"{stats.errors} item(s) failed after retries and were not kept ({shown}); their errors are in "
                   f"{out.name}.stats.json; re-running the same command retries them")
    usage = stats.usage
    click.echo(f"LLM usage: {usage.get('calls', 0)} calls, {usage.get('cache_hits', 0)} cache hits, "
               f"{usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} completion tokens, "
               f"{usage.get('retries', 0)} retries, {usage.get('truncated', 0)} truncated, "
               f"{usage.get('filtered', 0)} filtered, {usage.get('empty', 0)} empty")
    if dataset_dir:
        name = dataset_name or out.stem
        register_dataset(name, out, dataset_dir, formatting="alpaca")
        click.echo(f"registered dataset '{name}' in {Path(dataset_dir) / 'dataset_info.json'} "
                   f"(next, as in the README: llamafactory-cli train recipes/blade_kit_lora.yaml dataset={name} "
                   f"dataset_dir={dataset_dir} model_name_or_path=saves/dp output_dir=saves/kit)")
