"""The stub OpenAI server refuses what the OpenAI API refuses, with the API's status, `code` and wording, and
answers in the shapes the API answers in. Real HTTP on 127.0.0.1 through httpx and the `openai` SDK."""

from __future__ import annotations

import json
import os

import httpx
import openai
import pytest

from blade_testing.openai_stub_server import DEFAULT_API_KEY, StubOpenAIServer

OK = {"model": "stub", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
SCHEMA = {"type": "object", "properties": {"answer": {"type": "array", "items": {"type": "string", "enum": ["A", "B"]}}},
          "required": ["answer"], "additionalProperties": False}


def json_schema(name="answer", schema=SCHEMA, strict=True) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "strict": strict, "schema": schema}}


@pytest.fixture(scope="module")
def stub():
    with StubOpenAIServer() as server:
        yield server


def post(stub, body, path="/chat/completions", headers=AUTH) -> tuple[int, dict]:
    response = httpx.post(stub.base_url + path, json=body, headers=headers, timeout=30)
    return response.status_code, response.json()


def test_the_suite_runs_with_the_stub_key():
    assert os.environ["OPENAI_API_KEY"] == DEFAULT_API_KEY  # tests/conftest.py: no real key reaches a test


@pytest.mark.parametrize("headers, code, start", [
    ({}, None, "You didn't provide an API key."),
    ({"Authorization": "Bearer sk-wrong-0000000000"}, "invalid_api_key", "Incorrect API key provided: sk-"),
    ({"Authorization": DEFAULT_API_KEY}, None, "You didn't provide an API key."),  # not Bearer auth
])
def test_missing_or_wrong_key_is_401(stub, headers, code, start):
    status, body = post(stub, OK, headers=headers)
    assert status == 401 and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == code and body["error"]["message"].startswith(start)
    assert DEFAULT_API_KEY not in body["error"]["message"]
    assert httpx.get(stub.base_url + "/models", headers=headers).status_code == 401


def test_models_are_listed_and_unknown_ones_are_404(stub):
    listing = httpx.get(stub.base_url + "/models", headers=AUTH).json()
    assert listing["object"] == "list" and [m["id"] for m in listing["data"]] == ["stub", "o4-mini"]
    assert httpx.get(stub.base_url + "/models/stub", headers=AUTH).json()["id"] == "stub"
    status, body = post(stub, {**OK, "model": "gpt-4o"})
    assert status == 404 and body["error"]["code"] == "model_not_found"
    assert body["error"]["message"] == "The model `gpt-4o` does not exist or you do not have access to it."


@pytest.mark.parametrize("path", ["/v1/chat/completions/", "/v2/chat/completions", "/x/v1/chat/completions",
                                  "/v1/completions", "/chat/completions"])
def test_only_the_exact_path_exists(stub, path):
    response = httpx.post(stub.base_url.removesuffix("/v1") + path, json=OK, headers=AUTH)
    assert response.status_code == 404 and response.json()["error"]["message"].startswith("Invalid URL (POST ")


@pytest.mark.parametrize("messages, param, code", [
    ([], "messages", "empty_array"),
    ([{"role": "wizard", "content": "x"}], "messages[0].role", "invalid_value"),
    ([{"content": "x"}], "messages[0].role", "missing_required_parameter"),
    ([{"role": "user", "content": 3}], "messages[0].content", "invalid_type"),
    ([{"role": "user", "content": {"text": "x"}}], "messages[0].content", "invalid_type"),
    ([{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0].text", "invalid_type"),
    ([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
     "messages[0].content[0].type", "invalid_value"),
    ([{"role": "user"}], "messages[0].content", "missing_required_parameter"),
    ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id", "missing_required_parameter"),
    ("hi", "messages", "invalid_type"),
])
def test_bad_messages_are_400(stub, messages, param, code):
    status, body = post(stub, {**OK, "messages": messages})
    assert status == 400 and (body["error"]["param"], body["error"]["code"]) == (param, code)


@pytest.mark.parametrize("role", ["system", "developer", "user", "assistant"])
def test_each_role_and_content_parts_are_taken(stub, role):
    parts = [{"type": "text", "text": "hello"}]
    status, _ = post(stub, {**OK, "messages": [{"role": role, "content": parts}, {"role": "user", "content": "q"}]})
    assert status == 200


@pytest.mark.parametrize("extra, fragment", [
    ({"foo": 1}, "Unrecognized request argument supplied: foo"),
    ({"temperature": 3}, "Expected a value <= 2, but got 3 instead."),
    ({"temperature": "hot"}, "Invalid type for 'temperature'"),
    ({"max_tokens": 0}, "Expected a value >= 1, but got 0 instead."),
    ({"n": 0}, "Invalid 'n'"),
    ({"stream_options": {"include_usage": True}}, "only allowed when 'stream' is enabled"),
    ({"response_format": json_schema(name="an answer")}, "string does not match pattern"),
    ({"response_format": json_schema(schema={**SCHEMA, "additionalProperties": True})},
     "'additionalProperties' is required to be supplied and to be false"),
    ({"response_format": json_schema(schema={**SCHEMA, "required": []})}, "Missing 'answer'"),
    ({"response_format": {"type": "json_object"}}, "must contain the word 'json'"),
    ({"response_format": {"type": "xml"}}, "Invalid value: 'xml'"),
])
def test_bad_parameters_are_400(stub, extra, fragment):
    status, body = post(stub, {**OK, **extra})
    assert status == 400 and fragment in body["error"]["message"], body


def test_n_choices_come_back(stub):
    status, body = post(stub, {**OK, "n": 3})
    assert status == 200 and [c["index"] for c in body["choices"]] == [0, 1, 2]


def test_a_reply_under_a_schema_is_schema_valid_json():
    with StubOpenAIServer() as server:  # the default script answers the schema's minimal instance
        status, body = post(server, {**OK, "response_format": json_schema()})
        assert status == 200 and json.loads(body["choices"][0]["message"]["content"]) == {"answer": ["A"]}
        server.responder = lambda messages, body: "Answer: A"  # what no structured-outputs model can send
        status, body = post(server, {**OK, "response_format": json_schema()})
        assert status == 500 and "broke the response_format schema" in body["error"]["message"]
        assert server.script_errors
        server.responder = lambda messages, body: '{"answer": ["Z"]}'  # outside the enum
        assert post(server, {**OK, "response_format": json_schema()})[0] == 500
        server.responder = lambda messages, body: ('{"answer": ["', "length")  # cut: no longer checked
        assert post(server, {**OK, "response_format": json_schema()})[0] == 200


@pytest.mark.parametrize("finish_reason", ["stop", "length", "content_filter"])
def test_streams_finish_with_the_scripted_reason(finish_reason):
    with StubOpenAIServer(lambda m, b: ("two words", finish_reason)) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key=DEFAULT_API_KEY)
        chunks = list(client.chat.completions.create(model="stub", messages=OK["messages"], stream=True, n=2))
        reasons = {c.choices[0].index: c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason}
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices[0].index == 1)
        plain = client.chat.completions.create(model="stub", messages=OK["messages"])
    assert reasons == {0: finish_reason, 1: finish_reason} and text == "two words"
    assert plain.choices[0].finish_reason == finish_reason


@pytest.mark.parametrize("extra, param, code, message", [
    ({"max_tokens": 16}, "max_tokens", "unsupported_parameter",
     "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."),
    ({"temperature": 0.0}, "temperature", "unsupported_value",
     "Unsupported value: 'temperature' does not support 0 with this model. Only the default (1) value is supported."),
    ({"top_p": 0.5}, "top_p", "unsupported_parameter",
     "Unsupported parameter: 'top_p' is not supported with this model."),
])
def test_reasoning_models_refuse_the_chat_sampling_fields(stub, extra, param, code, message):
    status, body = post(stub, {**OK, "model": "o4-mini", **extra})
    assert status == 400 and body["error"] == {"message": message, "type": "invalid_request_error",
                                               "param": param, "code": code}


def test_reasoning_models_take_their_own_fields():
    with StubOpenAIServer(models=["o4-mini", "my-reasoner", "gpt-5-chat-latest"],
                          reasoning_models=["my-reasoner"]) as server:
        for model in ("o4-mini", "my-reasoner"):
            assert post(server, {**OK, "model": model, "max_completion_tokens": 16, "temperature": 1})[0] == 200
            assert post(server, {**OK, "model": model, "max_tokens": 16})[0] == 400
        assert post(server, {**OK, "model": "gpt-5-chat-latest", "max_tokens": 16, "temperature": 0})[0] == 200


def test_events_show_overlap_not_time():
    """max_in_flight() counts requests served at once from start/finish events (no clock threshold)."""
    import concurrent.futures
    import threading

    all_in = threading.Barrier(4, timeout=60)  # each reply waits until 4 requests are being served

    with StubOpenAIServer() as server:
        post(server, OK)
        post(server, OK)
        assert server.max_in_flight() == 1  # one after the other
        server.responder = lambda messages, body: all_in.wait() and "Answer: A" or "Answer: A"
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            assert [s for s, _ in pool.map(lambda _: post(server, OK), range(4))] == [200] * 4
        assert server.max_in_flight() == 4 and len(server.intervals()) == 6


def test_settle_returns_only_after_the_requests_in_flight_have_been_answered(monkeypatch):
    """settle() keeps waiting while requests are being served, however quiet the server has been: the two
    requests are held in the responder until settle() has slept twice on them (a settle() that ignored requests
    in flight returns at its second look, before its second sleep, and never lets them go)."""
    import threading
    import time
    import types

    from blade_testing import openai_stub_server

    both_in = threading.Barrier(3, timeout=30)  # the two requests are inside the responder, and the test knows
    release = threading.Event()
    sleeps = []

    def counting_sleep(seconds: float) -> None:  # the stub module's time.sleep: settle()'s quiet periods
        sleeps.append(seconds)
        if len(sleeps) == 2:
            release.set()
        time.sleep(seconds)

    monkeypatch.setattr(openai_stub_server, "time", types.SimpleNamespace(
        sleep=counting_sleep, time=time.time, perf_counter=time.perf_counter, monotonic=time.monotonic))

    def held(messages, body) -> str:
        both_in.wait()
        assert release.wait(timeout=30), "settle() never slept twice while the requests were in flight"
        return "Answer: A"

    with StubOpenAIServer(responder=held) as server:
        replies = []
        threads = [threading.Thread(target=lambda: replies.append(post(server, OK)[0])) for _ in range(2)]
        for thread in threads:
            thread.start()
        both_in.wait()
        try:
            server.settle(quiet=0.05, timeout=30)
            finished = [kind for kind, _, _ in server.events].count("finish")
        finally:
            release.set()  # whatever settle() did, let the requests end before the server closes
            for thread in threads:
                thread.join(timeout=60)
        assert finished == 2, f"settle() returned with {2 - finished} request(s) still being served"
        assert not any(thread.is_alive() for thread in threads) and replies == [200, 200]
