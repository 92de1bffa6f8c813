"""From the LLM arguments (`hparams.LLMArguments`, the `--llm-*` options) to the client's `LLMConfig`."""

from __future__ import annotations

import logging
from pathlib import Path

from .client import LLMConfig, env_base_url

logger = logging.getLogger(__name__)

OPENAI_MAX_TOKENS = 512
LOCAL_MAX_TOKENS = 48  # a 135M model on CPU: its answers carry no signal, keep smoke runs short


def config_from_options(llm_base_url=None, llm_model=None, llm_api_key_env="OPENAI_API_KEY", llm_backend=None,
                        local_llm_model_dir=None, concurrency=8, temperature=0.0, max_tokens=None, max_retries=5,
                        cache_db=None, no_cache=False, answer_format="text", timeout=60.0,
                        llm_param_style="auto", price_input=None, price_output=None, max_cost=None,
                        max_llm_calls=None) -> LLMConfig:
    """Build the LLMConfig; with no endpoint anywhere, fall back to the local backend on the embedded model."""
    backend = llm_backend or ("openai" if (llm_base_url or env_base_url()) else "local")
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
                     local_model_dir=local_llm_model_dir, local_batch_size=16, answer_format=answer_format,
                     param_style=llm_param_style, price_input=price_input, price_output=price_output,
                     max_cost=max_cost, max_llm_calls=max_llm_calls)
