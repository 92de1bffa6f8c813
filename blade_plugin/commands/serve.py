"""`blade-bpo serve`: BLADE behind an OpenAI-compatible HTTP endpoint (see `blade_plugin/serve/`)."""

from __future__ import annotations

import logging
import os

import click

from ..serve.modes import SERVE_MODES
from .arguments import small_model_options
from .common import load_prompt_set, prompt_options
from .grouping_options import (
    corpus_k_option,
    corpus_option,
    passage_chars_option,
    retrieval_query_option,
)

logger = logging.getLogger(__name__)


@click.command()
@click.option("--soft-prompt", type=click.Path(exists=True, dir_okay=False), default=None,
              help="soft_prompt.safetensors from `blade-bpo optimize`.")
@small_model_options
@prompt_options
@click.option("--combine", type=click.Choice(SERVE_MODES), default=None, envvar="BLADE_SERVE_COMBINE", show_envvar=True,
              help="What the LLM sees: the small LM's knowledge alone; the BM25 passages of --corpus alone (passages); "
                   "both, labelled (passages+knowledge); the passages retrieved with the question and the knowledge "
                   "(knowledge-as-query); or knowledge the small LM wrote from the question and the passages "
                   "(knowledge-from-passages: a model trained so). Unset: the mode the --workspace ablation measured "
                   "best among those this server can run; without one, knowledge, or passages+knowledge with "
                   "--corpus (docs/serve.md).")
@click.option("--workspace", type=click.Path(exists=True, file_okay=False), default=None,
              envvar="BLADE_SERVE_WORKSPACE", show_envvar=True,
              help="A `blade-bpo run`/demo output directory: its ablation (runs/ablation_dev/ablation.json, "
                   "runs/ablation/ablation.json or report.json) chooses the default --combine.")
@corpus_option
@corpus_k_option
@passage_chars_option
@retrieval_query_option
@click.option("--retrieval-timeout", type=click.FloatRange(min=0.01), default=10.0, show_default=True,
              envvar="BLADE_SERVE_RETRIEVAL_TIMEOUT", show_envvar=True,
              help="Seconds one request's BM25 lookup may take (503 retrieval_timeout beyond).")
@click.option("--small-model-reads-passages", is_flag=True, envvar="BLADE_SMALL_MODEL_READS_PASSAGES",
              show_envvar=True,
              help="The small model was trained with retrieved passages in its query (KIT data from `knowledge "
                   "--query-corpus`) though its directory does not say so: allows knowledge-from-passages.")
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
@click.option("--max-messages", type=click.IntRange(min=1), default=512, show_default=True,
              envvar="BLADE_SERVE_MAX_MESSAGES", show_envvar=True,
              help="Most messages one request may carry (400 beyond).")
@click.option("--max-n", type=click.IntRange(1, 128), default=8, show_default=True, envvar="BLADE_SERVE_MAX_N",
              show_envvar=True, help="Most choices (`n`) one request may ask the upstream for (400 beyond).")
@click.option("--max-completion-tokens", type=click.IntRange(min=1), default=None, envvar="BLADE_SERVE_MAX_COMPLETION_TOKENS",
              show_envvar=True,
              help="Largest `max_tokens`/`max_completion_tokens` a request may ask for (400 beyond); unset: the "
                   "upstream's own limit. Requests that name none pass untouched.")
@click.option("--max-input-tokens", type=click.IntRange(min=16), default=2048, show_default=True,
              envvar="BLADE_SERVE_MAX_INPUT_TOKENS", show_envvar=True,
              help="Longest small-model input (the templated question) in tokens; never more than the model's "
                   "context minus --max-new-tokens and the soft prompt. Longer questions get a 400.")
@click.option("--max-batch-tokens", type=click.IntRange(min=16), default=4096, show_default=True,
              envvar="BLADE_SERVE_MAX_BATCH_TOKENS", show_envvar=True,
              help="Bound on one small-model batch: questions x longest question, in tokens (bounds its memory; a "
                   "long question runs alone).")
@click.option("--header-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              envvar="BLADE_SERVE_HEADER_TIMEOUT", show_envvar=True,
              help="Seconds a connection gets to send its request headers before it is closed.")
@click.option("--body-timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              envvar="BLADE_SERVE_BODY_TIMEOUT", show_envvar=True,
              help="Seconds from a request's headers to its body's last byte (408 beyond).")
@click.option("--keep-alive-timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              envvar="BLADE_SERVE_KEEP_ALIVE_TIMEOUT", show_envvar=True,
              help="Seconds an idle keep-alive connection stays open.")
@click.option("--max-connections", type=click.IntRange(min=1), default=512, show_default=True,
              envvar="BLADE_SERVE_MAX_CONNECTIONS", show_envvar=True,
              help="Open connections (or requests in progress) beyond which new requests get 503 at once.")
@click.option("--public-metrics", is_flag=True, envvar="BLADE_SERVE_PUBLIC_METRICS", show_envvar=True,
              help="Serve GET /metrics without the --api-key-env key (for a scraper that cannot send one).")
@click.option("--shutdown-timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="On SIGTERM/Ctrl-C, seconds in-flight requests get to finish; a small-model generation still "
                   "running then is abandoned and the process exits.")
def serve(soft_prompt, small_args, templates_dir, variant, combine, workspace, corpus, corpus_k, passage_chars,
          retrieval_query, retrieval_timeout, small_model_reads_passages,
          llm_base_url, llm_model, llm_api_key_env, llm_timeout, llm_max_retries, price_input, price_output, host,
          port, api_key_env,
          served_model_name, max_wait_ms, max_queue, knowledge_cache_size, max_body_bytes, max_message_chars,
          max_messages, max_n, max_completion_tokens, max_input_tokens, max_batch_tokens, header_timeout,
          body_timeout, keep_alive_timeout, max_connections, public_metrics, shutdown_timeout) -> None:
    """Serve BLADE as an OpenAI-compatible endpoint: POST /v1/chat/completions adds the small LM's knowledge
    to each question and answers with the upstream LLM; GET /v1/models, /health, /metrics."""
    from ..extras.errors import BladeError
    from ..extras.urls import redact_url
    from ..qa.answering import KnowledgeAnswerer
    from ..qa.prompts import load_prompts
    from ..serve.app import ServeSettings, create_app
    from ..serve.input_limit import input_limit, token_counter
    from ..serve.runner import (
        GracefulServer,
        exit_if_generation_abandoned,
        uvicorn_config,
    )
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
    # The mode and the corpus next: a mode this server cannot run fails in one line before the model is loaded.
    from ..serve.corpus_setup import choose_mode, load_retriever

    mode = choose_mode(combine, workspace, corpus, small_args.small_model, small_args.adapter, soft_prompt,
                       small_model_reads_passages, prompts, chat_prompts)
    retriever = load_retriever(mode, corpus, corpus_k, passage_chars, retrieval_query)

    writer = small_args.load_writer()
    prompt_tensor = None
    if soft_prompt:
        from ..small_lm.soft_prompt import check_compatible, load_soft_prompt

        prompt_tensor, metadata = load_soft_prompt(soft_prompt, expected_hidden=writer.hidden_size)
        check_compatible(metadata, writer)

    # The upstream LLM is reached by the server's own proxy (streaming, tools), not by an LLM client here.
    answerer = KnowledgeAnswerer(prompts, None, writer, prompt_tensor)
    soft_tokens = 0 if prompt_tensor is None else int(prompt_tensor.shape[0])
    limit, limit_reason = input_limit(writer, soft_tokens, max_input_tokens)
    settings = ServeSettings(served_model_name=served_model_name, api_key=api_key, max_body_bytes=max_body_bytes,
                             max_message_chars=max_message_chars, max_messages=max_messages, max_n=max_n,
                             max_completion_tokens=max_completion_tokens, max_input_tokens=limit,
                             input_limit_reason=limit_reason, max_batch_tokens=max(max_batch_tokens, limit),
                             body_timeout=body_timeout, public_metrics=public_metrics,
                             max_batch_size=batch_size, max_wait_ms=max_wait_ms,
                             max_queue=max_queue, knowledge_cache_size=knowledge_cache_size,
                             price_input=price_input, price_output=price_output, combine=mode,
                             retrieval_timeout=retrieval_timeout)
    upstream = UpstreamConfig(base_url=llm_base_url, model=llm_model, api_key_env=llm_api_key_env,
                              timeout=llm_timeout, max_retries=llm_max_retries)
    app = create_app(settings, answerer.write_knowledge, prompts, chat_prompts, upstream,
                     count_tokens=token_counter(writer, soft_tokens), retriever=retriever)
    verbose = click.get_current_context().find_root().params.get("verbose", 0)
    # The upstream key must never reach a log line: the SDK and httpx log request details at DEBUG.
    for noisy in ("openai", "httpx", "httpcore", "httpx2", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logger.info("BLADE serving http://%s:%d/v1 (upstream %s, model %s, the LLM sees: %s, small-LM batch <= %d, "
                "input <= %d tokens)", host, port, redact_url(llm_base_url), llm_model or "from each request", mode,
                batch_size, limit)
    config = uvicorn_config(app, host, port, header_timeout=header_timeout, keep_alive_timeout=keep_alive_timeout,
                            max_connections=max_connections, shutdown_timeout=shutdown_timeout,
                            access_log=verbose >= 1, log_level="debug" if verbose >= 2 else "info")
    GracefulServer(config).run()
    exit_if_generation_abandoned(app)
    logger.info("BLADE server stopped")
