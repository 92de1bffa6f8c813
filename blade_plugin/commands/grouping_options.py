"""`ablate`'s options for per-group metrics and the retrieval baseline (`ablate` keeps loose click options
until it gets an argument dataclass; `--group-by` and `--corpus-k` come from the fields `evaluate` and
`knowledge` use, so their help and environment variables are written once)."""

from __future__ import annotations

import click

from ..hparams import EvaluateArguments
from .arguments import field_option

group_by_option = field_option(EvaluateArguments, "group_by")

corpus_option = click.option(
    "--corpus", type=click.Path(exists=True, dir_okay=False), default=None, envvar="BLADE_CORPUS", show_envvar=True,
    help="{\"text\"} JSONL corpus (the DP corpus) for BM25 retrieval.")

corpus_k_option = field_option(EvaluateArguments, "corpus_k")  # the retrieving rows' k, not grounded KIT's

passage_chars_option = field_option(EvaluateArguments, "passage_chars")

retrieval_query_option = field_option(EvaluateArguments, "retrieval_query")
