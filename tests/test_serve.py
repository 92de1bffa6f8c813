"""`blade-bpo serve` end to end: a real server subprocess on 127.0.0.1, the real `openai` client, and the
scripted OpenAI-compatible stub as the upstream LLM (in this process, so the tests see what reached it)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from blade_plugin.qa.data import QAItem
from blade_testing.openai_stub_server import StubOpenAIServer
from blade_testing.serve_process import ServeProcess

pytestmark = pytest.mark.slow

CALLER_KEY = "caller-token-7f3a"
UPSTREAM_SECRET = "sk-upstream-SECRET-0d9e8c7b"
MAX_NEW_TOKENS = 8

# Real questions from the bundled demo data (pharmacology, four options each).
DEMO_QUESTIONS = [
    ("Which serious but rare adverse effect is associated with metformin, especially in renal failure?",
     {"A": "Lactic acidosis", "B": "Agranulocytosis", "C": "Ototoxicity", "D": "Malignant hyperthermia"}),
    ("Warfarin exerts its anticoagulant effect by antagonising which vitamin?",
     {"A": "Vitamin B12", "B": "Vitamin C", "C": "Vitamin K", "D": "Vitamin D"}),
]


def user_text(question: str, options: dict[str, str]) -> str:
    """How a person types a multiple-choice question into a chat box."""
    return question + "\n" + "\n".join(f"{letter}. {text}" for letter, text in options.items())


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def responder(messages: list[dict], body: dict) -> str:
    """The upstream's answer names a digest of the prompt it was given: each caller can check that its own
    (knowledge-augmented) prompt produced its answer."""
    content = messages[-1]["content"]
    if "FAIL-WITH-SECRET" in content:
        raise RuntimeError(f"upstream refused key {UPSTREAM_SECRET}")
    return f"Answer: A (prompt {fingerprint(content)})"


def parse_metrics(text: str) -> dict[str, float]:
    """Samples of a Prometheus text exposition; every line must be a comment or a well-formed sample."""
    samples = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_]\w*="[^"]*",?)*\})? (\S+)', line)
        assert match, f"malformed exposition line: {line!r}"
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


@pytest.fixture(scope="module")
def stub():
    # the upstream takes exactly the key serve was given, serves only the model serve pins, and takes vLLM's
    # top_k (a vendor field the caller passes through) besides OpenAI's parameters
    with StubOpenAIServer(responder=responder, api_key=UPSTREAM_SECRET, models=["upstream-model"],
                          extra_parameters=["top_k"]) as server:
        yield server


@pytest.fixture(scope="module")
def server(stub, default_model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    args = ["--small-model", str(default_model_dir), "--max-new-tokens", str(MAX_NEW_TOKENS),
            "--llm-base-url", stub.base_url, "--llm-model", "upstream-model", "--llm-max-retries", "1",
            "--api-key-env", "BLADE_TEST_CALLER_KEY", "--max-body-bytes", "20000", "--max-message-chars", "2000",
            "--max-wait-ms", "20", "--price-input", "2", "--price-output", "8", "--public-metrics"]
    env = {"BLADE_TEST_CALLER_KEY": CALLER_KEY, "OPENAI_API_KEY": UPSTREAM_SECRET, "HF_HUB_OFFLINE": "1"}
    with ServeProcess(args, log, env=env, verbose=True) as process:  # -vv: the key must not leak even at DEBUG
        yield process


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=CALLER_KEY, max_retries=0, timeout=600)


@pytest.fixture(scope="module")
def reference_writer(default_model_dir):
    """The expected knowledge: transformers' own generate(), one question at a time (no padding, no batcher)."""
    from blade_plugin.small_lm.hf_backend import SoftPromptGenerator

    return SoftPromptGenerator(str(default_model_dir), template="blade_chatml", max_new_tokens=MAX_NEW_TOKENS,
                               batch_size=1, decoder="hf")


def test_multiple_choice_request_gets_knowledge_and_passes_parameters(server, stub, client, prompts,
                                                                       reference_writer):
    question, options = DEMO_QUESTIONS[0]
    messages = [{"role": "system", "content": "You are a careful clinical pharmacologist."},
                {"role": "user", "content": user_text(question, options)}]
    tools = [{"type": "function", "function": {"name": "lookup_drug", "description": "Drug monograph",
                                               "parameters": {"type": "object",
                                                              "properties": {"name": {"type": "string"}}}}}]
    raw = client.chat.completions.with_raw_response.create(
        model="blade", messages=messages, temperature=0.3, max_tokens=77, stop=["\n\n"], n=1, tools=tools,
        extra_body={"top_k": 5, "seed": 7})
    completion = raw.parse()
    knowledge = completion.model_extra["blade"]["knowledge"]
    item = QAItem(id="x", question=question, options=options, answer=())
    expected = reference_writer.generate([prompts.small_model_query(item)])[0]
    assert knowledge == expected and knowledge.strip()
    assert float(raw.headers["x-blade-knowledge-ms"]) > 0

    sent = stub.requests[-1]
    assert sent["model"] == "upstream-model"  # pinned by --llm-model
    assert (sent["temperature"], sent["max_tokens"], sent["stop"], sent["n"]) == (0.3, 77, ["\n\n"], 1)
    assert sent["tools"] == tools and sent["top_k"] == 5 and sent["seed"] == 7
    assert "blade" not in sent
    assert sent["messages"][0] == messages[0]
    augmented = prompts.answer(item, knowledge)[-1]["content"]
    assert sent["messages"][1] == {"role": "user", "content": augmented}
    assert knowledge in augmented and "Lactic acidosis" in augmented
    # The upstream's answer comes back as it sent it: content, finish reason, usage.
    assert completion.choices[0].message.content == f"Answer: A (prompt {fingerprint(augmented)})"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 4


def test_streaming_free_chat_relays_upstream_events(server, stub, client, prompts):
    question = "甲谎称自己是某公司经理，骗取乙交付货款5万元后潜逃。甲的行为应当如何定性？"
    messages = [{"role": "user", "content": question}]
    chunks = list(client.chat.completions.create(model="blade", messages=messages, stream=True,
                                                 stream_options={"include_usage": True}))
    blade = chunks[0].model_extra["blade"]
    knowledge = blade["knowledge"]
    assert knowledge.strip() and blade["knowledge_cached"] is False
    sent = stub.requests[-1]
    # Free chat: the user's words are untouched; the knowledge arrives as a system message (chat_system.j2).
    assert sent["messages"] == [{"role": "system", "content": prompts.chat_system(knowledge)},
                                {"role": "user", "content": question}]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Answer: A (prompt {fingerprint(question)})"
    assert chunks[-1].usage.completion_tokens == 4 and chunks[-1].choices == []

    # Byte level: the same events as the upstream sends for the same request, the first one plus `blade`.
    headers = {"Authorization": f"Bearer {CALLER_KEY}"}
    body = {"model": "blade", "messages": messages, "stream": True, "stream_options": {"include_usage": True}}
    ours = httpx.post(f"{server.base_url}/chat/completions", json=body, headers=headers, timeout=600)
    assert ours.status_code == 200
    assert ours.headers["content-type"] == "text/event-stream; charset=utf-8"
    upstream_body = stub.requests[-1]
    theirs = httpx.post(f"{stub.base_url}/chat/completions", json=upstream_body, timeout=60,
                        headers={"Authorization": f"Bearer {UPSTREAM_SECRET}"})  # as the server sends it
    our_events, their_events = ours.text.split("\n\n"), theirs.text.split("\n\n")
    assert len(our_events) == len(their_events) >= 5 and our_events[-2:] == ["data: [DONE]", ""]
    first = json.loads(our_events[0].removeprefix("data: "))
    assert first.pop("blade") == {"knowledge": knowledge, "knowledge_ms": float(ours.headers["x-blade-knowledge-ms"]),
                                  "knowledge_cached": True}  # asked before: from the knowledge cache

    def same_but_ids(a: str, b: str) -> bool:
        return re.sub(r'"id":"[^"]*","object":"([^"]*)","created":\d+', r"\1", a) == \
            re.sub(r'"id":"[^"]*","object":"([^"]*)","created":\d+', r"\1", b)

    assert same_but_ids("data: " + json.dumps(first, ensure_ascii=False, separators=(",", ":")), their_events[0])
    assert all(same_but_ids(a, b) for a, b in zip(our_events[1:], their_events[1:]))


def test_opt_out_sends_the_request_untouched(server, stub, client):
    messages = [{"role": "user", "content": user_text(*DEMO_QUESTIONS[1])}]
    raw = client.chat.completions.with_raw_response.create(model="blade", messages=messages,
                                                           extra_body={"blade": {"knowledge": False}})
    completion = raw.parse()
    assert stub.requests[-1] == {"model": "upstream-model", "messages": messages}
    assert completion.model_extra["blade"] == {"knowledge": None, "knowledge_ms": 0.0, "knowledge_cached": False}
    assert raw.headers["x-blade-knowledge-ms"] == "0.0"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="blade", messages=messages, extra_body={"blade": {"knowledge": "no"}})
    assert err.value.body["param"] == "blade.knowledge"


def test_sixteen_concurrent_requests_share_batches(server, stub, client, prompts, reference_writer, demo_data_dir):
    records = [json.loads(line) for name in ("demo_qa_dev.jsonl", "demo_qa_train.jsonl")
               for line in (demo_data_dir / name).read_text(encoding="utf-8").splitlines() if line.strip()][:16]
    before = parse_metrics(httpx.get(f"{server.url}/metrics", timeout=30).text)
    start = threading.Barrier(16)

    def ask(record: dict):
        start.wait()
        return client.chat.completions.create(
            model="blade", messages=[{"role": "user", "content": user_text(record["question"], record["options"])}])

    # /health while the 16 are in the server: the event loop answers while the small LM generates. Polled until
    # an answer names questions waiting or generating (a server that blocked its event loop on the generation
    # would only answer once they were done: depth 0) or all 16 are answered; bounded by a deadline.
    depths, deadline = [], time.monotonic() + 300
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(ask, record) for record in records]
        while not (any(depth > 0 for depth in depths) or all(f.done() for f in futures)):
            assert time.monotonic() < deadline, f"16 questions not answered in 300 s; /health depths {depths}"
            health = httpx.get(f"{server.url}/health", timeout=120)
            assert health.status_code == 200
            depths.append(health.json()["small_lm_queue_depth"])
            time.sleep(0.02)
        completions = [f.result(timeout=max(1.0, deadline - time.monotonic())) for f in futures]
    assert any(depth > 0 for depth in depths), f"no /health answer came while questions were in the queue: {depths}"

    for record, completion in zip(records, completions):
        item = QAItem(id=record["id"], question=record["question"], options=record["options"], answer=())
        knowledge = completion.model_extra["blade"]["knowledge"]
        augmented = prompts.answer(item, knowledge)[-1]["content"]
        assert completion.choices[0].message.content == f"Answer: A (prompt {fingerprint(augmented)})"
        assert record["question"] in augmented and knowledge in augmented
    # Batched knowledge is exactly what each question gets alone with transformers' generate().
    for record, completion in list(zip(records, completions))[::8]:
        item = QAItem(id=record["id"], question=record["question"], options=record["options"], answer=())
        assert completion.model_extra["blade"]["knowledge"] == \
            reference_writer.generate([prompts.small_model_query(item)])[0]

    after = parse_metrics(httpx.get(f"{server.url}/metrics", timeout=30).text)
    batches = after["blade_serve_small_lm_batch_size_count"] - before["blade_serve_small_lm_batch_size_count"]
    questions = after["blade_serve_small_lm_batch_size_sum"] - before["blade_serve_small_lm_batch_size_sum"]
    # every question was generated exactly once; some generation was shared (16 one-question batches would mean
    # no batching), however the arrivals fell into batches on a loaded machine
    assert questions == 16 and 1 <= batches < 16, (batches, questions)
    ok = 'blade_serve_requests_total{route="/v1/chat/completions",code="200"}'
    assert after[ok] - before.get(ok, 0) == 16
    tokens = sum(c.usage.prompt_tokens for c in completions)
    kind = 'blade_serve_upstream_tokens_total{kind="prompt"}'
    assert after[kind] - before[kind] == tokens
    completion_tokens = sum(c.usage.completion_tokens for c in completions)
    cost = "blade_serve_upstream_cost_dollars_total"  # at --price-input 2 / --price-output 8 per million
    assert after[cost] - before[cost] == pytest.approx((tokens * 2 + completion_tokens * 8) / 1e6, rel=1e-9)

    # The same question again: knowledge from the cache, no generation, the upstream still asked.
    count = stub.request_count
    again = client.chat.completions.create(
        model="blade", messages=[{"role": "user", "content": user_text(records[3]["question"], records[3]["options"])}])
    assert again.model_extra["blade"]["knowledge_cached"] is True
    assert again.model_extra["blade"]["knowledge"] == completions[3].model_extra["blade"]["knowledge"]
    assert stub.request_count == count + 1
    final = parse_metrics(httpx.get(f"{server.url}/metrics", timeout=30).text)
    assert final["blade_serve_small_lm_batch_size_count"] == after["blade_serve_small_lm_batch_size_count"]
    hit = 'blade_serve_knowledge_cache_total{result="hit"}'
    assert final[hit] == after[hit] + 1


def test_bearer_key_is_required(server, stub):
    count = stub.request_count
    body = {"model": "blade", "messages": [{"role": "user", "content": "hi"}]}
    for headers in ({}, {"Authorization": CALLER_KEY}, {"Authorization": f"Basic {CALLER_KEY}"}):
        response = httpx.post(f"{server.base_url}/chat/completions", json=body, headers=headers, timeout=60)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    for key in ("caller-token-7f3b", CALLER_KEY + "x", CALLER_KEY[:-1]):
        anonymous = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as err:
            anonymous.chat.completions.create(model="blade", messages=[{"role": "user", "content": "hi"}])
        assert err.value.status_code == 401 and err.value.body["code"] == "invalid_api_key"
        assert err.value.response.headers["www-authenticate"] == "Bearer"
        with pytest.raises(openai.AuthenticationError):
            anonymous.models.list()
    assert stub.request_count == count  # refused before any upstream call
    models = openai.OpenAI(base_url=server.base_url, api_key=CALLER_KEY, max_retries=0).models.list()
    assert [m.id for m in models.data] == ["blade"]
    assert httpx.get(f"{server.url}/health", timeout=30).json()["status"] == "ok"  # probes need no key


def test_size_limits_and_malformed_requests(server, stub):
    headers = {"Authorization": f"Bearer {CALLER_KEY}", "Content-Type": "application/json"}
    url = f"{server.base_url}/chat/completions"
    count = stub.request_count

    def post(content: bytes) -> httpx.Response:
        return httpx.post(url, content=content, headers=headers, timeout=60)

    big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 30_000}]}).encode()
    response = post(big)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    long_message = json.dumps({"model": "m", "messages": [{"role": "user", "content": "病" * 2001}]},
                              ensure_ascii=False).encode()
    assert len(long_message) < 20_000
    response = post(long_message)
    assert response.status_code == 413 and response.json()["error"]["param"] == "messages.0.content"

    cases = [
        (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]', None),  # truncated JSON
        (json.dumps({"model": "m", "messages": [{"role": "user", "content": "华法林的抗凝作用机制"}]},
                    ensure_ascii=False).encode("gbk"), None),  # a GBK body: JSON must be UTF-8
        (b'{"model": "m"}', "messages"),
        (b'{"model": "m", "messages": []}', "messages"),
        (b'{"model": "m", "messages": [{"role": "wizard", "content": "hi"}]}', "messages.0.role"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "stream"),
        (b'[{"role": "user", "content": "hi"}]', None),
    ]
    for body, param in cases:
        response = post(body)
        assert response.status_code == 400, body
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"] and error["param"] == param, error
    assert stub.request_count == count  # nothing reached the upstream


def test_upstream_failures(server, stub, client):
    messages = [{"role": "user", "content": "Name one loop diuretic."}]
    opt_out = {"blade": {"knowledge": False}}
    count = stub.request_count
    stub.fail_always(500)
    try:
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="blade", messages=messages, extra_body=opt_out)
    finally:
        stub.fail_always(None)
    assert err.value.status_code == 502
    assert "upstream LLM returned 500: injected fault 500" in err.value.message
    assert stub.request_count == count + 2  # the first attempt and --llm-max-retries 1

    stub.inject_faults([400])  # the caller's mistake: relayed as the upstream sent it, not retried
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="blade", messages=messages, extra_body=opt_out)
    assert "injected fault 400" in err.value.message
    stub.fail_always(503)  # a stream that cannot start is a 502 too, with a status line, not in-band
    try:
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="blade", messages=messages, extra_body=opt_out, stream=True)
    finally:
        stub.fail_always(None)
    assert err.value.status_code == 502 and "injected fault 503" in err.value.message


def test_upstream_key_is_sent_but_never_logged_or_echoed(server, stub, client):
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="blade", messages=[{"role": "user", "content": "FAIL-WITH-SECRET"}],
                                       extra_body={"blade": {"knowledge": False}})
    assert err.value.status_code == 502
    assert "upstream refused key ***" in err.value.message and UPSTREAM_SECRET not in err.value.response.text
    assert stub.authorizations and set(stub.authorizations) == {f"Bearer {UPSTREAM_SECRET}"}
    log = server.log_text()
    assert "DEBUG" in log and "blade_plugin.serve" in log  # the log is really at debug level
    assert UPSTREAM_SECRET not in log and CALLER_KEY not in log
    assert UPSTREAM_SECRET not in httpx.get(f"{server.url}/metrics", timeout=30).text
