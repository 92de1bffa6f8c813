"""The client against OpenAI-style reasoning models (they refuse `max_tokens` and a non-default temperature)
and against a wrong key, model or URL. Real HTTP on 127.0.0.1 against the strict stub server."""

from __future__ import annotations

import pytest

from blade_plugin.extras.errors import LLMError, LLMSetupError
from blade_plugin.llm.client import LLMClient
from blade_plugin.llm.options import config_from_options
from blade_testing.openai_stub_server import StubOpenAIServer
from conftest import llm_config
from helpers import run_cli

BATCH = [[{"role": "user", "content": f"question {i}"}] for i in range(6)]


def sampling_fields(body: dict) -> dict:
    return {k: body[k] for k in ("temperature", "max_tokens", "max_completion_tokens", "top_p") if k in body}


def test_auto_learns_the_reasoning_fields_from_one_refusal(tmp_path):
    with StubOpenAIServer() as server:
        with LLMClient(llm_config(server, tmp_path, model="o4-mini", concurrency=8)) as client:
            assert client.complete_many(BATCH) == ["Answer: A"] * 6
            assert client.usage.failures == 1  # the one refused probe
        # the probe went alone (the others waited for its verdict), then every request in the new style
        assert [sampling_fields(b) for b in server.requests] == \
            [{"temperature": 0.0, "max_tokens": 512}] + [{"max_completion_tokens": 512}] * 6
        assert [e.param for e in server.refusals] == ["max_tokens"]


def test_explicit_styles_send_their_fields_without_a_probe(tmp_path):
    with StubOpenAIServer() as server:
        with LLMClient(llm_config(server, tmp_path, model="o4-mini", param_style="reasoning", use_cache=False,
                                  top_p=0.9)) as client:
            client.complete_many(BATCH[:2])
        with LLMClient(llm_config(server, tmp_path, param_style="chat", use_cache=False, top_p=0.9)) as client:
            client.complete_many(BATCH[:1])
        assert [sampling_fields(b) for b in server.requests] == \
            [{"max_completion_tokens": 512}] * 2 + [{"temperature": 0.0, "max_tokens": 512, "top_p": 0.9}]
        assert server.refusals == []
        # chat fields forced on a reasoning model: the endpoint's own 400, not retried, not learnt
        with LLMClient(llm_config(server, tmp_path, model="o4-mini", param_style="chat")) as client:
            with pytest.raises(LLMError, match="HTTP 400: Unsupported parameter: 'max_tokens'"):
                client.complete_many(BATCH[:1])


def test_a_chat_model_is_never_switched(tmp_path):
    with StubOpenAIServer() as server, LLMClient(llm_config(server, tmp_path, concurrency=4)) as client:
        client.complete_many(BATCH)
        server.inject_faults([400])  # a 400 about something else after the style is settled
        with pytest.raises(LLMError):
            client.complete_many([[{"role": "user", "content": "another"}]])
        client.complete_many([[{"role": "user", "content": "third"}]])
    assert all(sampling_fields(b) == {"temperature": 0.0, "max_tokens": 512} for b in server.requests)


def test_cache_keys_hold_the_fields_actually_sent(tmp_path):
    """auto and reasoning send the same request to a reasoning model: they share cache rows; a chat model's
    answer (sent with temperature 0) is not served to a reasoning-style request (default temperature)."""
    with StubOpenAIServer() as server:
        for style in ("auto", "reasoning", "auto"):
            with LLMClient(llm_config(server, tmp_path, model="o4-mini", param_style=style)) as client:
                client.complete_many(BATCH[:1])
        # one answered request in all: the first auto run's answer is the reasoning run's hit; the second
        # auto run pays only the refused (unbilled) probe before its hit
        assert sum(1 for b in server.requests if "max_completion_tokens" in b) == 1
        assert len(server.refusals) == 2
        server.reset_stats()
        for style in ("chat", "reasoning", "auto"):
            with LLMClient(llm_config(server, tmp_path, model="stub", param_style=style)) as client:
                client.complete_many(BATCH[:1])
        assert server.request_count == 2  # chat and reasoning differ; auto on a chat model is chat: a hit


def test_identity_keeps_old_fingerprints_and_names_an_explicit_style(tmp_path):
    with StubOpenAIServer() as server:
        auto = LLMClient(llm_config(server, tmp_path, model="o4-mini")).identity()
        reasoning = LLMClient(llm_config(server, tmp_path, model="o4-mini", param_style="reasoning")).identity()
    assert auto == {"backend": "openai", "base_url": server.base_url, "model": "o4-mini", "temperature": 0.0,
                    "max_tokens": 512}
    assert reasoning == {**auto, "param_style": "reasoning"}


def test_wrong_key_stops_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-0000000000")
    with StubOpenAIServer() as server, LLMClient(llm_config(server, tmp_path, concurrency=2)) as client:
        with pytest.raises(LLMSetupError) as err:
            client.complete_many(BATCH)
    assert str(err.value) == (f"OPENAI_API_KEY was rejected by {server.base_url} (HTTP 401: Incorrect API key "
                              "provided: sk-************0000. You can find your API key at "
                              "https://platform.openai.com/account/api-keys.); set OPENAI_API_KEY to a key valid "
                              "for this endpoint, or name another variable with --llm-api-key-env")
    assert "\n" not in str(err.value) and server.request_count <= 2  # not retried, the batch cancelled


def test_missing_key_says_which_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("MY_KEY", raising=False)
    with StubOpenAIServer() as server, LLMClient(llm_config(server, tmp_path, api_key_env="MY_KEY")) as client:
        with pytest.raises(LLMSetupError, match=r"wants an API key \(HTTP 401\) and \$MY_KEY is not set: export "
                                                r"MY_KEY=<your key>"):
            client.complete_many(BATCH[:1])


def test_unknown_model_lists_what_the_endpoint_has(tmp_path):
    with StubOpenAIServer(models=["stub", "gpt-4o-mini"]) as server, \
            LLMClient(llm_config(server, tmp_path, model="gpt-4o")) as client:
        with pytest.raises(LLMSetupError) as err:
            client.complete_many(BATCH[:1])
    assert str(err.value) == (f"model 'gpt-4o' not found at {server.base_url} (HTTP 404); GET {server.base_url}/models "
                              "lists: stub, gpt-4o-mini; pass one with --llm-model or set BLADE_LLM_MODEL")


def test_a_url_without_the_api_root_is_named(tmp_path):
    with StubOpenAIServer() as server:
        root = server.base_url.removesuffix("/v1")
        with LLMClient(llm_config(server, tmp_path, base_url=root)) as client:
            with pytest.raises(LLMSetupError, match=rf"^{root}/chat/completions not found \(HTTP 404: Invalid URL "
                                                    r"\(POST /chat/completions\)\); --llm-base-url or OPENAI_BASE_URL"):
                client.complete_many(BATCH[:1])


def test_option_and_envvar_reach_the_config(monkeypatch):
    assert config_from_options(llm_base_url="http://127.0.0.1:9", llm_model="m").param_style == "auto"
    assert config_from_options(llm_base_url="http://127.0.0.1:9", llm_model="m",
                               llm_param_style="reasoning").param_style == "reasoning"
    from blade_plugin.commands import answer, evaluate, knowledge, optimize

    for command in (answer.answer, evaluate.evaluate, knowledge.knowledge, optimize.optimize):
        option = next(p for p in command.params if p.name == "llm_param_style")
        assert option.envvar == "BLADE_LLM_PARAM_STYLE" and list(option.type.choices) == ["auto", "chat", "reasoning"]


@pytest.mark.parametrize("env, refused", [({}, 1), ({"BLADE_LLM_PARAM_STYLE": "reasoning"}, 0)])
def test_cli_answers_with_a_reasoning_model(tmp_path, env, refused):
    with StubOpenAIServer() as server:
        result = run_cli(["blade-bpo", "answer", "--no-knowledge", "--question", "Which vitamin does warfarin "
                          "antagonise?", "--option", "A=K", "--option", "B=C", "--llm-base-url", server.base_url,
                          "--llm-model", "o4-mini", "--cache-db", str(tmp_path / "c.sqlite3")], cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "Parsed choice: A" in result.stdout
        assert len(server.refusals) == refused and "max_completion_tokens" in server.requests[-1]


def test_cli_names_the_fix_for_a_wrong_key(tmp_path):
    with StubOpenAIServer() as server:
        result = run_cli(["blade-bpo", "answer", "--no-knowledge", "--question", "Q?", "--option", "A=x",
                          "--option", "B=y", "--llm-base-url", server.base_url, "--llm-model", "stub", "--no-cache"],
                         cwd=tmp_path, env={"OPENAI_API_KEY": "sk-wrong-0000000000"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"Error: OPENAI_API_KEY was rejected by {server.base_url}")
