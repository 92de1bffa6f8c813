"""Click options for the black-box LLM, shared by every command that calls it."""

from __future__ import annotations

import functools
import logging
import math
import os
from pathlib import Path

import click

from .client import LLMConfig

logger = logging.getLogger(__name__)

OPENAI_MAX_TOKENS = 512
LOCAL_MAX_TOKENS = 48  # a 135M model on CPU: its answers carry no signal, keep smoke runs short


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (FloatRange's comparisons let nan through)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def llm_options(func):
    """--llm-base-url, --llm-model, --llm-api-key-env, --llm-backend, --concurrency, cache and sampling flags."""
    options = [
        click.option("--llm-base-url", default=None,
                     help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL; none -> local backend)."),
        click.option("--llm-model", default=None, help="Model name at the endpoint (default: $BLADE_LLM_MODEL)."),
        click.option("--llm-api-key-env", default="OPENAI_API_KEY", show_default=True,
                     help="Name of the environment variable holding the API key (the key itself is never stored)."),
        click.option("--llm-backend", type=click.Choice(["openai", "local", "reader"]), default=None,
                     help="openai: HTTP endpoint; local: an in-process HF model; reader: the offline evidence "
                          "reader, which answers with the option the knowledge states (measures the knowledge, "
                          "not LLM reasoning) (default: openai if an endpoint is configured, else local)."),
        click.option("--local-llm-model-dir", type=click.Path(file_okay=False), default=None,
                     help="HF model directory for --llm-backend local (default: the embedded model)."),
        click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True,
                     help="Concurrent LLM requests."),
        click.option("--temperature", type=FiniteFloatRange(0.0, 2.0), default=0.0, show_default=True,
                     help="LLM sampling temperature (0 to 2, the OpenAI API's range)."),
        click.option("--max-tokens", type=click.IntRange(min=1), default=None,
                     help=f"LLM completion limit (default: {OPENAI_MAX_TOKENS}; {LOCAL_MAX_TOKENS} for the "
                          "local backend)."),
        click.option("--max-retries", type=click.IntRange(min=0), default=5, show_default=True,
                     help="Retries of a request on 408/409/429/5xx/timeouts (the openai SDK's backoff; it honours "
                          "retry-after) before that item is marked as an error."),
        click.option("--timeout", type=FiniteFloatRange(min=0.0, min_open=True), default=60.0, show_default=True,
                     envvar="BLADE_LLM_TIMEOUT", show_envvar=True,
                     help="Seconds one LLM request may take before it counts as timed out (and is retried)."),
        click.option("--cache-db", type=click.Path(dir_okay=False), default=None,
                     help="SQLite response cache (default: $BLADE_CACHE_DB or ~/.cache/blade-plugin/llm_cache.sqlite3)."),
        click.option("--no-cache", is_flag=True, help="Neither read nor write the response cache."),
        click.option("--answer-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
                     help="json: answer requests ask for {\"answer\": [...]} (response_format with a JSON schema, or "
                          "an instruction in the prompt where the endpoint refuses it); replies are parsed either way."),
    ]

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def config_from_options(llm_base_url=None, llm_model=None, llm_api_key_env="OPENAI_API_KEY", llm_backend=None,
                        local_llm_model_dir=None, concurrency=8, temperature=0.0, max_tokens=None, max_retries=5,
                        cache_db=None, no_cache=False, answer_format="text", timeout=60.0) -> LLMConfig:
    """Build the LLMConfig; with no endpoint anywhere, fall back to the local backend on the embedded model."""
    backend = llm_backend or ("openai" if (llm_base_url or os.environ.get("OPENAI_BASE_URL")) else "local")
    if backend == "local" and local_llm_model_dir is None:
        from ..small_lm.default_model import materialize_default_model

        local_llm_model_dir = str(materialize_default_model())
        logger.warning("No LLM endpoint configured: using the embedded small model as a local stand-in LLM; "
                       "its scores are not meaningful")
    if max_tokens is None:
        # a 135M model on CPU: keep smoke runs short (an explicit --max-tokens is always honoured)
        max_tokens = LOCAL_MAX_TOKENS if backend == "local" else OPENAI_MAX_TOKENS
    return LLMConfig(base_url=llm_base_url, model=llm_model, api_key_env=llm_api_key_env, temperature=temperature,
                     max_tokens=max_tokens, concurrency=concurrency, max_retries=max_retries, timeout=timeout,
                     cache_db=Path(cache_db) if cache_db else None, use_cache=not no_cache, backend=backend,
                     local_model_dir=local_llm_model_dir, local_batch_size=16, answer_format=answer_format)
