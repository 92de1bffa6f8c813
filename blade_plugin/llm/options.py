"""Click options for the black-box LLM, shared by every command that calls it."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import click

from .client import LLMConfig

logger = logging.getLogger(__name__)

OPENAI_MAX_TOKENS = 512
LOCAL_MAX_TOKENS = 48  # a 135M model on CPU: its answers carry no signal, keep smoke runs short


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
        click.option("--concurrency", type=int, default=8, show_default=True, help="Concurrent LLM requests."),
        click.option("--temperature", type=float, default=0.0, show_default=True),
        click.option("--max-tokens", type=int, default=None,
                     help=f"LLM completion limit (default: {OPENAI_MAX_TOKENS}; {LOCAL_MAX_TOKENS} for the "
                          "local backend)."),
        click.option("--max-retries", type=int, default=5, show_default=True,
                     help="Retries on 429/5xx/timeouts (exponential backoff) before failing."),
        click.option("--cache-db", type=click.Path(dir_okay=False), default=None,
                     help="SQLite response cache (default: $BLADE_CACHE_DB or ~/.cache/blade-plugin/llm_cache.sqlite3)."),
        click.option("--no-cache", is_flag=True, help="Neither read nor write the response cache."),
    ]

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def config_from_options(llm_base_url=None, llm_model=None, llm_api_key_env="OPENAI_API_KEY", llm_backend=None,
                        local_llm_model_dir=None, concurrency=8, temperature=0.0, max_tokens=None, max_retries=5,
                        cache_db=None, no_cache=False) -> LLMConfig:
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
                     max_tokens=max_tokens, concurrency=concurrency, max_retries=max_retries,
                     cache_db=Path(cache_db) if cache_db else None, use_cache=not no_cache, backend=backend,
                     local_model_dir=local_llm_model_dir, local_batch_size=16)
