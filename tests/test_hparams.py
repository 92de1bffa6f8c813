"""Argument dataclasses (hparams/) -> click options: one source for help and env vars, env vars shown in
--help, values from the environment reach the dataclass, and the small-backend choice travels in the
arguments object (no click-context side channel)."""

from __future__ import annotations

import click
from click.testing import CliRunner

from blade_plugin.cli import COMMANDS, cli
from blade_plugin.commands.arguments import llm_options, small_model_options
from blade_plugin.hparams import LLMArguments, SmallModelArguments


def _commands():
    ctx = click.Context(cli)
    for name in COMMANDS:
        yield name, cli.get_command(ctx, name)


def test_every_env_var_option_shows_it_in_help():
    hidden = []
    for name, command in _commands():
        for param in command.params:
            if isinstance(param, click.Option) and param.envvar and not param.show_envvar:
                hidden.append(f"{name} {param.opts[0]} ({param.envvar})")
    assert hidden == []
    out = CliRunner().invoke(cli, ["evaluate", "--help"], terminal_width=200).output
    for var in ("OPENAI_BASE_URL", "BLADE_LLM_MODEL", "BLADE_LLM_TIMEOUT", "BLADE_CACHE_DB", "BLADE_SMALL_BACKEND"):
        assert f"env var: {var}" in out


def test_option_help_is_the_dataclass_help():
    probe = click.command()(small_model_options(llm_options(lambda llm_args, small_args: None)))
    helps = {p.name: p.help for p in probe.params}
    for cls in (LLMArguments, SmallModelArguments):
        for f in cls.__dataclass_fields__.values():
            assert helps[f.name] == f.metadata["help"], f.name


def test_environment_reaches_the_arguments_objects():
    seen = {}

    @click.command()
    @small_model_options
    @llm_options
    def probe(small_args, llm_args):
        seen["small"], seen["llm"] = small_args, llm_args

    env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "BLADE_LLM_MODEL": "m-from-env",
           "BLADE_SMALL_BACKEND": "vllm", "BLADE_SMALL_BACKEND_URL": "http://a:1 http://b:2"}
    result = CliRunner().invoke(probe, ["--temperature", "0.5"], env=env)
    assert result.exit_code == 0, result.output
    llm, small = seen["llm"], seen["small"]
    assert (llm.llm_base_url, llm.llm_model, llm.temperature, llm.concurrency) == (
        "http://127.0.0.1:9/v1", "m-from-env", 0.5, 8)
    assert (small.small_backend, small.small_backend_urls, small.max_new_tokens) == (
        "vllm", ("http://a:1", "http://b:2"), 128)
    assert llm.to_config().backend == "openai"
