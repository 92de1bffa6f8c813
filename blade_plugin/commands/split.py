"""`blade-bpo split RAW... --out-dir data --dev N --test N --seed S`."""

from __future__ import annotations

from pathlib import Path

import click

from .arguments import split_arguments


@click.command()
@click.argument("raw", nargs=-1, required=True, type=click.Path(dir_okay=False))
@split_arguments
def split(raw, args) -> None:
    """Cut train/dev/test from raw training files (JEC-QA, MLEC-QA or generic JSONL), keeping every record's
    fields; several files (e.g. JEC-QA's 0_train.json and 1_train.json) are split as one."""
    from ..stages.split import split_raw

    result = split_raw([Path(p) for p in raw], Path(args.out_dir), args.n_dev, args.n_test, args.seed, fmt=args.fmt,
                       group_by=args.group_by or None, skip_invalid=args.skip_invalid,
                       corpus=Path(args.corpus) if args.corpus else None)
    click.echo(f"{result.format} records, seed {args.seed}:")
    for line in result.summary_lines():
        click.echo(line)
