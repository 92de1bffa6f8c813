"""Click options for dry runs and the Batch API."""

from __future__ import annotations

import functools

import click


def dry_run_options(func):
    """--dry-run / --dry-run-json FILE: print what the run would send and cost, send nothing."""

    @click.option("--dry-run", is_flag=True,
                  help="Read and check the inputs, render every prompt, and print the LLM calls, prompt tokens, "
                       "a completion-token estimate and the cost (--price-input/--price-output); no request "
                       "is sent and nothing is written but the report.")
    @click.option("--dry-run-json", type=click.Path(dir_okay=False), default=None,
                  help="Also write the dry run's figures to this JSON file (implies --dry-run).")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def batch_options(func):
    """--batch / --batch-retry / --batch-poll-seconds."""

    @click.option("--batch", "use_batch", is_flag=True,
                  help="Send the requests through the OpenAI Batch API (half price, done within 24 h); the "
                       "batch ids are kept in the progress file, so a re-run resumes the same batches.")
    @click.option("--batch-retry", type=click.Choice(["online", "batch"]), default="online", show_default=True,
                  envvar="BLADE_BATCH_RETRY", show_envvar=True,
                  help="Requests a batch did not answer (failed or expired lines): ask them online, or in a new "
                       "batch (up to 3 rounds).")
    @click.option("--batch-poll-seconds", type=click.FloatRange(min=0.0), default=30.0, show_default=True,
                  envvar="BLADE_BATCH_POLL_SECONDS", show_envvar=True, help="Seconds between batch status polls.")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper
