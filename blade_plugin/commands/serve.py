"""`blade-bpo serve`: BLADE behind an OpenAI-compatible HTTP endpoint (see `blade_plugin/serve/`)."""

from __future__ import annotations

import logging
import os

import click

from .arguments import small_model_options
from .common import load_prompt_set, prompt_options

logger = logging.getLogger(__name__)


@click.command()
@click.option("--soft-prompt", type=click.Path(exists=True, dir_okay=False), default=None,
              help="soft_prompt.safetensors from `blade-bpo optimize`.")
@small_model_options
@prompt_options
@click.option("--llm-base-url", "--upstream-base-url", "llm_base_url", envvar="OPENAI_BASE_URL", show_envvar=True,
              help="The upstream OpenAI-compatible endpoint the answers come from.")
@click.option("--llm-model", envvar="BLADE_LLM_MODEL", show_envvar=True, default=None,
              help="Upstream model for every request; unset: the caller's `model` passes through.")
@click.option("--llm-api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="Environment variable holding the upstream API key (never logged or echoed).")
@click.option("--llm-timeout", type=click.FloatRange(min=1), default=120.0, show_default=True,
              help="Seconds per upstream attempt.")
@click.option("--llm-max-retries", type=click.IntRange(min=0), default=3, show_default=True,
              help="Upstream retries on 429/5xx/timeouts (the openai SDK's backoff) before a 502.")
@click.option("--price-input", type=click.FloatRange(min=0.0), default=None, envvar="BLADE_PRICE_INPUT",
              show_envvar=True, help="US dollars per million upstream prompt tokens (cost in /metrics).")
@click.option("--price-output", type=click.FloatRange(min=0.0), default=None, envvar="BLADE_PRICE_OUTPUT",
              show_envvar=True, help="US dollars per million upstream completion tokens.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind (0.0.0.0 exposes the server: set --api-key-env then).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True,
              help="TCP port to listen on.")
@click.option("--api-key-env", default=None,
              help="Name of an environment variable holding the bearer token callers must send.")
@click.option("--served-model-name", default="blade", show_default=True, help="Model id GET /v1/models lists.")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="How long the batcher waits for more questions before a small-LM generation starts.")
@click.option("--max-queue", type=click.IntRange(min=1), default=256, show_default=True,
              help="Distinct questions allowed to wait for the small LM; more get 429 with Retry-After.")
@click.option("--knowledge-cache-size", type=click.IntRange(min=0), default=1024, show_default=True,
              help="Knowledge kept for identical questions (0: no cache).")
@click.option("--max-body-bytes", type=click.IntRange(min=1024), default=1 << 20, show_default=True,
              help="Largest request body accepted (413 beyond).")
@click.option("--max-message-chars", type=click.IntRange(min=1), default=32_000, show_default=True,
              help="Largest single message content accepted (413 beyond).")
@click.option("--shutdown-timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="On SIGTERM/Ctrl-C, seconds in-flight requests get to finish.")
def serve(soft_prompt, small_args, templates_dir, variant,
          llm_base_url, llm_model, llm_api_key_env, llm_timeout, llm_max_retries, price_input, price_output, host,
          port, api_key_env,
          served_model_name, max_wait_ms, max_queue, knowledge_cache_size, max_body_bytes, max_message_chars,
          shutdown_timeout) -> None:
    """Serve BLADE as an OpenAI-compatible endpoint: POST /v1/chat/completions adds the small LM's knowledge
    to each question and answers with the upstream LLM; GET /v1/models, /health, /metrics."""
    import uvicorn

    from ..extras.errors import BladeError
    from ..qa.answering import KnowledgeAnswerer
    from ..qa.prompts import load_prompts
    from ..serve.app import ServeSettings, create_app
    from ..serve.runner import GracefulServer
    from ..serve.upstream import UpstreamConfig

    batch_size = small_args.batch_size
    if batch_size < 1:
        raise click.BadParameter(f"{batch_size} is not >= 1", param_hint="--batch-size")
    if not llm_base_url:
        raise click.UsageError("serve needs an upstream LLM: pass --llm-base-url or set OPENAI_BASE_URL")
    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env, "").strip()
        if not api_key:
            raise BladeError(f"--api-key-env {api_key_env}: the environment variable is unset or empty")
    elif host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("serving on %s without --api-key-env: anyone who can reach the port can use the upstream "
                       "LLM on your key", host)
    # Templates first: a broken template fails in one line before the model is loaded.
    prompts = load_prompt_set(templates_dir, variant)
    chat_prompts = prompts if prompts.chat_system("") is not None else load_prompts(variant=variant)

    writer = small_args.load_writer()
    prompt_tensor = None
    if soft_prompt:
        from ..small_lm.soft_prompt import check_compatible, load_soft_prompt

        prompt_tensor, metadata = load_soft_prompt(soft_prompt, expected_hidden=writer.hidden_size)
        check_compatible(metadata, writer)

    # The upstream LLM is reached by the server's own proxy (streaming, tools), not by an LLM client here.
    answerer = KnowledgeAnswerer(prompts, None, writer, prompt_tensor)
    settings = ServeSettings(served_model_name=served_model_name, api_key=api_key, max_body_bytes=max_body_bytes,
                             max_message_chars=max_message_chars, max_batch_size=batch_size, max_wait_ms=max_wait_ms,
                             max_queue=max_queue, knowledge_cache_size=knowledge_cache_size,
                             price_input=price_input, price_output=price_output)
    upstream = UpstreamConfig(base_url=llm_base_url, model=llm_model, api_key_env=llm_api_key_env,
                              timeout=llm_timeout, max_retries=llm_max_retries)
    app = create_app(settings, answerer.write_knowledge, prompts, chat_prompts, upstream)
    verbose = click.get_current_context().find_root().params.get("verbose", 0)
    # The upstream key must never reach a log line: the SDK and httpx log request details at DEBUG.
    for noisy in ("openai", "httpx", "httpcore", "httpx2", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logger.info("BLADE serving http://%s:%d/v1 (upstream %s, model %s, small-LM batch <= %d)", host, port,
                llm_base_url, llm_model or "from each request", batch_size)
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=verbose >= 1,
                            timeout_graceful_shutdown=shutdown_timeout, log_level="debug" if verbose >= 2 else "info")
    GracefulServer(config).run()
    logger.info("BLADE server stopped")
