"""The black-box LLM's arguments (every command that calls it: `--llm-*`, sampling, retries, cache)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..llm.client import LLMConfig
from ..llm.options import LOCAL_MAX_TOKENS, OPENAI_MAX_TOKENS, config_from_options


@dataclass
class LLMArguments:
    """Metadata keys (read by `commands/arguments.py`): help, envvar, choices, min/max/min_open (ranges),
    finite (no nan/inf), path ("file"/"dir"), flag, show_default."""

    llm_base_url: str | None = field(default=None, metadata={
        "envvar": "OPENAI_BASE_URL",
        "help": "OpenAI-compatible endpoint (none -> local backend)."})
    llm_model: str | None = field(default=None, metadata={
        "envvar": "BLADE_LLM_MODEL", "help": "Model name at the endpoint."})
    llm_api_key_env: str = field(default="OPENAI_API_KEY", metadata={
        "show_default": True,
        "help": "Name of the environment variable holding the API key (the key itself is never stored)."})
    llm_backend: str | None = field(default=None, metadata={
        "choices": ("openai", "local", "reader"),
        "help": "openai: HTTP endpoint; local: an in-process HF model; reader: the offline evidence reader, which "
                "answers with the option the knowledge states (measures the knowledge, not LLM reasoning) "
                "(default: openai if an endpoint is configured, else local)."})
    local_llm_model_dir: str | None = field(default=None, metadata={
        "path": "dir", "help": "HF model directory for --llm-backend local (default: the embedded model)."})
    concurrency: int = field(default=8, metadata={"min": 1, "show_default": True, "help": "Concurrent LLM requests."})
    temperature: float = field(default=0.0, metadata={
        "min": 0.0, "max": 2.0, "finite": True, "show_default": True,
        "help": "LLM sampling temperature (0 to 2, the OpenAI API's range)."})
    max_tokens: int | None = field(default=None, metadata={
        "min": 1, "help": f"LLM completion limit (default: {OPENAI_MAX_TOKENS}; {LOCAL_MAX_TOKENS} for the local "
                          "backend)."})
    max_retries: int = field(default=5, metadata={
        "min": 0, "show_default": True,
        "help": "Retries of a request on 408/409/429/5xx/timeouts (the openai SDK's backoff; it honours "
                "retry-after) before that item is marked as an error."})
    timeout: float = field(default=60.0, metadata={
        "min": 0.0, "min_open": True, "finite": True, "show_default": True, "envvar": "BLADE_LLM_TIMEOUT",
        "help": "Seconds one LLM request may take before it counts as timed out (and is retried)."})
    cache_db: str | None = field(default=None, metadata={
        "path": "file", "envvar": "BLADE_CACHE_DB",
        "help": "SQLite response cache (default: ~/.cache/blade-plugin/llm_cache.sqlite3)."})
    no_cache: bool = field(default=False, metadata={"flag": True, "help": "Neither read nor write the response cache."})
    answer_format: str = field(default="text", metadata={
        "choices": ("text", "json"), "show_default": True,
        "help": "json: answer requests ask for {\"answer\": [...]} (response_format with a JSON schema, or an "
                "instruction in the prompt where the endpoint refuses it); replies are parsed either way."})
    llm_param_style: str = field(default="auto", metadata={
        "choices": ("auto", "chat", "reasoning"), "show_default": True, "envvar": "BLADE_LLM_PARAM_STYLE",
        "help": "chat: temperature and max_tokens; reasoning: max_completion_tokens and no temperature (OpenAI's "
                "o-series and gpt-5 refuse the chat fields); auto: chat until the endpoint refuses them, then "
                "reasoning for the rest of the run."})
    price_input: float | None = field(default=None, metadata={
        "min": 0.0, "finite": True, "envvar": "BLADE_PRICE_INPUT",
        "help": "US dollars per million prompt tokens (for cost figures and --max-cost)."})
    price_output: float | None = field(default=None, metadata={
        "min": 0.0, "finite": True, "envvar": "BLADE_PRICE_OUTPUT",
        "help": "US dollars per million completion tokens."})
    max_cost: float | None = field(default=None, metadata={
        "min": 0.0, "min_open": True, "finite": True, "envvar": "BLADE_MAX_COST",
        "help": "Stop cleanly before this run would spend more than this many US dollars (needs both prices); "
                "progress is saved and the same command resumes."})
    max_llm_calls: int | None = field(default=None, metadata={
        "min": 1, "envvar": "BLADE_MAX_LLM_CALLS",
        "help": "Stop cleanly after this many LLM requests (cache hits are free); progress is saved."})

    def to_config(self) -> LLMConfig:
        """The client's LLMConfig; with no endpoint anywhere, the local backend on the embedded model."""
        return config_from_options(**asdict(self))
