"""`--answer-format json`: answer requests ask for {"answer": [...]} through response_format (JSON schema);
an endpoint that refuses it gets a plain instruction instead, learnt once per client. Real HTTP on
127.0.0.1 against the stub server, which records every request body."""

from __future__ import annotations

import json

import pytest

from blade_plugin.extras.errors import LLMError
from blade_plugin.stages.kit import generate_kit_data
from blade_plugin.llm.client import LLMClient
from blade_plugin.llm.options import config_from_options
from blade_plugin.qa.data import QAItem, load_qa
from blade_testing.openai_stub_server import StubOpenAIServer
from conftest import llm_config
from helpers import run_cli

KNOWLEDGE = "Warfarin antagonises vitamin K epoxide reductase; metformin can cause lactic acidosis."
INSTRUCTION_START = "Reply with JSON only:"


def _gold(content: str, items) -> list[str]:
    return next(list(it.answer) for it in items if it.question in content)


def _responder_for(items):
    """Knowledge requests get prose; answer requests get JSON when asked for it (by schema or by instruction),
    else the usual exam-style text."""

    def respond(messages, body):
        content = messages[-1]["content"]
        if "Correct answer:" in content:
            return KNOWLEDGE
        gold = _gold(content, items)
        if "response_format" in body or INSTRUCTION_START in content:
            return json.dumps({"answer": gold})
        return f"Answer: {', '.join(gold)}\nExplanation: option A is a distractor."

    return respond


@pytest.fixture()
def items(demo_data_dir):
    return load_qa(demo_data_dir / "demo_qa_train.jsonl")[:6]


def _answer_bodies(server):
    return [b for b in server.requests if "Correct answer:" not in b["messages"][-1]["content"]]


def _knowledge_bodies(server):
    return [b for b in server.requests if "Correct answer:" in b["messages"][-1]["content"]]


def test_json_mode_sends_the_answer_schema_on_answer_requests_only(items, prompts, tmp_path):
    with StubOpenAIServer(_responder_for(items)) as server:
        config = llm_config(server, tmp_path, answer_format="json", concurrency=4)
        with LLMClient(config) as client:
            stats = generate_kit_data(items, prompts, client, tmp_path / "kit.jsonl", progress_bar=False)
    assert (stats.kept, stats.unparseable) == (6, 0)
    answers, knowledge = _answer_bodies(server), _knowledge_bodies(server)
    assert len(answers) == len(knowledge) == 6
    assert all("response_format" not in b for b in knowledge)
    for body in answers:
        fmt = body["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
        schema = fmt["json_schema"]["schema"]
        assert schema["required"] == ["answer"] and schema["additionalProperties"] is False
        assert schema["properties"]["answer"]["items"]["enum"] == ["A", "B", "C", "D"]
        assert INSTRUCTION_START not in body["messages"][-1]["content"]  # the prompt itself is unchanged


def test_refused_response_format_falls_back_once_to_an_instruction(items, prompts, tmp_path):
    with StubOpenAIServer(_responder_for(items), reject_response_format=True) as server:
        config = llm_config(server, tmp_path, answer_format="json", concurrency=8)
        with LLMClient(config) as client:
            stats = generate_kit_data(items, prompts, client, tmp_path / "kit.jsonl", progress_bar=False)
            assert client.usage.failures == 1  # the one refused probe
    assert (stats.kept, stats.unparseable) == (6, 0)
    answers = _answer_bodies(server)
    # exactly one request carried response_format although 6 answer requests could run at once
    assert [("response_format" in b) for b in answers].count(True) == 1
    retried = [b for b in answers if "response_format" not in b]
    assert len(retried) == 6
    for body in retried:
        content = body["messages"][-1]["content"]
        assert content.endswith('Reply with JSON only: {"answer": ["B"]}, listing every correct option letter '
                                "(A, B, C, D).")
    assert all("response_format" not in b and INSTRUCTION_START not in b["messages"][-1]["content"]
               for b in _knowledge_bodies(server))


def test_other_400s_are_not_taken_for_a_refusal(items, prompts, tmp_path):
    from blade_plugin.qa.answers import answer_response_format

    item = items[0]
    with StubOpenAIServer(_responder_for(items)) as server:
        server.inject_faults([400])  # "injected fault 400": not about response_format
        with LLMClient(llm_config(server, tmp_path, answer_format="json")) as client:
            with pytest.raises(LLMError, match="HTTP 400"):
                client.run(client.acomplete(prompts.answer(item, ""), answer_response_format(item.options)))
            # not learnt as a refusal: the next answer request still asks with the schema
            text = client.run(client.acomplete(prompts.answer(item, ""), answer_response_format(item.options)))
    assert json.loads(text) == {"answer": list(item.answer)}
    assert "response_format" in server.requests[-1]


def test_cache_keys_include_the_answer_format(items, prompts, tmp_path):
    from blade_plugin.qa.answers import answer_response_format

    item = items[0]
    messages, fmt = prompts.answer(item, ""), answer_response_format(item.options)
    replies = {}
    with StubOpenAIServer(_responder_for(items)) as server:
        for answer_format in ("text", "json", "text", "json"):
            with LLMClient(llm_config(server, tmp_path, answer_format=answer_format)) as client:
                replies.setdefault(answer_format, set()).add(client.run(client.acomplete(messages, fmt)))
        assert server.request_count == 2  # one per format; the repeats are cache hits
    assert replies["json"] == {json.dumps({"answer": list(item.answer)})}
    assert replies["text"] == {f"Answer: {item.answer[0]}\nExplanation: option A is a distractor."}


def test_free_text_items_get_a_string_schema(prompts, tmp_path):
    item = QAItem("f1", "What is the capital of France?", None, "Paris", {})
    from blade_plugin.qa.answering import answer_items

    with StubOpenAIServer(lambda m, b: '{"answer": "Paris"}') as server, \
            LLMClient(llm_config(server, tmp_path, answer_format="json")) as client:
        records, _ = client.run(answer_items([item], prompts, client))
    assert records[0].correct and records[0].parsed == "Paris"
    assert server.requests[0]["response_format"]["json_schema"]["schema"]["properties"]["answer"] == {"type": "string"}


def test_every_command_that_asks_for_answers_has_the_option():
    from blade_plugin.commands import answer, demo, evaluate, knowledge, optimize

    for command in (answer.answer, demo.demo, evaluate.evaluate, knowledge.knowledge, optimize.optimize):
        option = next(p for p in command.params if p.name == "answer_format")
        assert option.default == "text" and list(option.type.choices) == ["text", "json"]


def test_option_reaches_the_config_and_the_wire(tmp_path):
    assert config_from_options(llm_base_url="http://127.0.0.1:9", llm_model="m").answer_format == "text"
    assert config_from_options(llm_base_url="http://127.0.0.1:9", llm_model="m",
                               answer_format="json").answer_format == "json"
    with StubOpenAIServer(lambda m, b: '{"answer": ["C"]}' if "response_format" in b else "Answer: A",
                          reject_response_format=False) as server:
        result = run_cli(["blade-bpo", "answer", "--no-knowledge", "--question",
                          "Which vitamin does warfarin antagonise?", "--option", "A=B12", "--option", "B=C", "--option", "C=K",
                          "--answer-format", "json", "--llm-base-url", server.base_url, "--llm-model", "stub",
                          "--cache-db", str(tmp_path / "cache.sqlite3")], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Parsed choice: C" in result.stdout
    assert server.requests[0]["response_format"]["json_schema"]["schema"]["properties"]["answer"]["items"][
        "enum"] == ["A", "B", "C"]


def test_an_endpoint_that_ignores_response_format_is_detected(items, prompts, tmp_path, caplog):
    """`llamafactory-cli api` takes response_format and drops it (the stub's drop_response_format does the
    same): the free-text reply to the probe is not the schema's JSON, so the client says so, asks for JSON
    in the prompt from then on, and counts every answer that came without the schema."""
    with StubOpenAIServer(_responder_for(items), drop_response_format=True) as server:
        config = llm_config(server, tmp_path, answer_format="json", concurrency=8)
        with LLMClient(config) as client, caplog.at_level("WARNING"):
            stats = generate_kit_data(items, prompts, client, tmp_path / "kit.jsonl", progress_bar=False)
            usage = client.usage
    assert "took response_format but answered without the schema's JSON" in caplog.text
    assert stats.total == 6 and stats.unparseable == 0
    answers = _answer_bodies(server)
    assert [("response_format" in b) for b in answers].count(True) == 1  # one probe, then the instruction
    assert sum(INSTRUCTION_START in b["messages"][-1]["content"] for b in answers) == 6
    assert (usage.unstructured, usage.json_by_instruction, usage.failures) == (1, 6, 0)


def test_structured_answers_are_counted_as_such(items, prompts, tmp_path):
    with StubOpenAIServer(_responder_for(items)) as server:
        with LLMClient(llm_config(server, tmp_path, answer_format="json")) as client:
            generate_kit_data(items, prompts, client, tmp_path / "kit.jsonl", progress_bar=False)
            assert (client.usage.unstructured, client.usage.json_by_instruction) == (0, 0)
