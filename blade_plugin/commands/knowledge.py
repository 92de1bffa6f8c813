"""`blade-bpo knowledge`: KIT data generation with consistency filtering."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ..cost.options import batch_options, dry_run_options
from .arguments import knowledge_arguments, llm_options
from .common import load_prompt_set, prompt_options, report_skipped

logger = logging.getLogger(__name__)


@click.command()
@knowledge_arguments
@dry_run_options
@batch_options
@prompt_options
@llm_options
def knowledge(args, dry_run, dry_run_json, use_batch, batch_retry, batch_poll_seconds, templates_dir, variant,
              llm_args) -> None:
    """The LLM writes knowledge for each (question, answer); keep only knowledge that lets it answer right.

    With --corpus, KIT is grounded: the BM25 passages of the corpus that support the correct answer (question +
    answer text as the query) go into the knowledge-generation prompt and are recorded in every row.

    With --query-corpus, KIT trains the knowledge-from-passages mode: each small-model query (the KIT
    instruction) gets the BM25 passages retrieved for the question alone, as at inference; every row records
    them. Use the same --corpus-k, --passage-chars and --retrieval-query when evaluating."""
    from ..lf.dataset_info import DATA_CONFIG, check_dataset_name, load_dataset_info, register_dataset
    from ..stages.kit import generate_kit_data, progress_path_for
    from ..llm.client import LLMClient
    from ..runs.outputs import Output, check_outputs
    from ..qa.data import load_qa

    # Every output is checked before the first request: not an input, writable, a valid dataset entry.
    out = Path(args.out_path)
    stats_path = out.with_name(out.name + ".stats.json")
    outputs = [Output("--out", out), Output("--out", progress_path_for(out)), Output("--out", stats_path)]
    if args.dataset_dir:
        check_dataset_name(args.dataset_name or out.stem, args.dataset_dir)
        load_dataset_info(args.dataset_dir)  # a malformed one fails now, not after every request was paid for
        outputs.append(Output("--dataset-dir", Path(args.dataset_dir) / DATA_CONFIG))
    check_outputs(outputs, [("--train", args.train_path), ("--cache-db", llm_args.cache_db),
                            ("--corpus", args.corpus), ("--query-corpus", args.query_corpus)],
                  progress=progress_path_for(out))
    if use_batch and (args.corpus or args.query_corpus):
        raise click.UsageError("--batch does not take --corpus or --query-corpus yet: KIT with passages runs online "
                               "(drop --batch)")
    items = load_qa(args.train_path, fmt=args.fmt, limit=args.limit, skip_invalid=args.skip_invalid)
    prompts = load_prompt_set(templates_dir, variant)
    index = None
    if args.corpus:
        from ..retrieval import CorpusIndex

        index = CorpusIndex.from_jsonl(args.corpus)
    query_retriever = None
    if args.query_corpus:
        from ..retrieval.combine import KNOWLEDGE_FROM_PASSAGES, PassageRetriever, check_templates

        check_templates(prompts, [KNOWLEDGE_FROM_PASSAGES])
        query_retriever = PassageRetriever.from_jsonl(args.query_corpus, args.corpus_k, args.passage_chars or None,
                                                      args.retrieval_query == "question+options")
    config = llm_args.to_config()
    if dry_run or dry_run_json:
        from ..cost.plan import check_json_target
        from ..cost.plans import plan_kit

        check_json_target(dry_run_json, [args.train_path, args.out_path, llm_args.cache_db])
        plan_kit(items, prompts, config, out, restart=args.restart, batch=use_batch, corpus=index,
                 corpus_k=args.corpus_k).emit(dry_run_json)
        return
    with LLMClient(config) as client:
        if use_batch:
            from ..stages.kit_batch import generate_kit_data_batch

            stats = generate_kit_data_batch(items, prompts, client, out, restart=args.restart,
                                            max_errors=args.max_errors, retry=batch_retry,
                                            poll_seconds=batch_poll_seconds)
        else:
            stats = generate_kit_data(items, prompts, client, out, restart=args.restart, max_errors=args.max_errors,
                                      corpus=index, corpus_k=args.corpus_k, query_retriever=query_retriever)
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
               f"{usage.get('filtered', 0)} filtered, {usage.get('empty', 0)} empty"
               + (f", {usage['batch_calls']} through the Batch API" if usage.get("batch_calls") else "")
               + (f"; cost ${usage['cost']:.4f}" if usage.get("cost") is not None else ""))
    if args.dataset_dir:
        name = args.dataset_name or out.stem
        register_dataset(name, out, args.dataset_dir, formatting="alpaca")
        click.echo(f"registered dataset '{name}' in {Path(args.dataset_dir) / 'dataset_info.json'} "
                   f"(next, as in the README: llamafactory-cli train recipes/blade_kit_lora.yaml dataset={name} "
                   f"dataset_dir={args.dataset_dir} model_name_or_path=saves/dp output_dir=saves/kit)")
