"""`blade-bpo serve` under hostile input (issue 30): one request must not freeze, flood or poison the others.

The fast lane runs the real app on a real uvicorn in a thread (`testing.serve_thread`: the same limits and
header deadline as the CLI) with the strict stub as upstream and a tiny knowledge writer that is strict where a
tokenizer is (text must encode as UTF-8); the slow tests replay the attacks against a real `blade-bpo serve`
subprocess with the embedded model. Every expectation is a status code, an OpenAI error body, a stub event,
a log line or a file, never how long something took (the /health bounds are ten times the issue's 1 s).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import sqlite3
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Self

import httpx
import pytest

from blade_plugin.serve.app import ServeSettings, create_app
from blade_plugin.serve.batcher import GenerationFailed, KnowledgeBatcher, ShuttingDown
from blade_plugin.serve.upstream import UpstreamConfig
from blade_testing.openai_stub_server import DEFAULT_API_KEY, StubOpenAIServer
from blade_testing.serve_process import ServeProcess
from blade_testing.serve_thread import ThreadedServe

KEY = "caller-key-30"
FAILS_HERE = "kaboom"  # a text the fake model cannot take
SECRET_DETAIL = "weights at /secret/path"  # in the writer's exception: must reach the log, never a client
MC = "Warfarin antagonises which vitamin?\nA. Vitamin B12\nB. Vitamin C\nC. Vitamin K\nD. Vitamin D"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def echo_prompt(messages: list[dict], body: dict) -> str:
    return f"Answer for {digest(json.dumps(messages, ensure_ascii=False))}"


class StrictWriter:
    """Knowledge without a model: a digest of the text, so each caller can check it got its own. Strict as a
    tokenizer is (the text must encode as UTF-8); raises on FAILS_HERE; records every batch it gets."""

    def __init__(self):
        self.batches: list[list[str]] = []

    def __call__(self, texts: list[str]) -> list[str]:
        self.batches.append(list(texts))
        for text in texts:
            text.encode("utf-8")
            if FAILS_HERE in text:
                raise RuntimeError(f"model failed: {SECRET_DETAIL}")
        return [f"Knowledge {digest(text)}" for text in texts]

    @staticmethod
    def count_tokens(text: str) -> int:
        return len(text.split())


def make_app(stub, writer: StrictWriter, prompts, **overrides):
    settings = {"api_key": KEY, "max_body_bytes": 20_000, "max_message_chars": 4_000, "max_messages": 16, "max_n": 4,
                "max_completion_tokens": 1_000, "max_input_tokens": 200, "input_limit_reason": "--max-input-tokens",
                "max_batch_tokens": 1_000, "body_timeout": 1.0, "max_wait_ms": 200}
    settings.update(overrides)
    upstream = UpstreamConfig(base_url=stub.base_url, model="stub", max_retries=0, timeout=30)
    return create_app(ServeSettings(**settings), writer, prompts, prompts, upstream,
                      count_tokens=writer.count_tokens)


@pytest.fixture(scope="module")
def stub():
    with StubOpenAIServer(responder=echo_prompt) as server:
        yield server


@pytest.fixture(scope="module")
def writer():
    return StrictWriter()


@pytest.fixture(scope="module")
def fast(stub, writer, prompts):
    with ThreadedServe(make_app(stub, writer, prompts), header_timeout=1.0) as server:
        yield server


def chat(url: str, body, key: str | None = KEY, timeout: float = 30) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    content = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return httpx.post(f"{url}/v1/chat/completions", content=content, headers=headers, timeout=timeout)


def openai_error(response: httpx.Response, status: int) -> dict:
    """The body is OpenAI's error shape, with this status."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    return error


def metric(url: str, name: str, key: str | None = KEY) -> float:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=30).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def no_tracebacks(records) -> None:
    bad = [r for r in records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [(r.name, r.getMessage()[:200]) for r in bad]


# --- fast lane: auth, proxy, 400/413, caps -----------------------------------------------------------------
def test_auth_guards_the_api_and_metrics_but_not_health(fast, stub, writer, prompts):
    body = {"model": "blade", "messages": [{"role": "user", "content": "hi"}]}
    count = stub.request_count
    for key in (None, "wrong"):
        assert openai_error(chat(fast.url, body, key=key), 401)["code"] == "invalid_api_key"
        for path in ("/v1/models", "/metrics"):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            assert httpx.get(fast.url + path, headers=headers, timeout=30).status_code == 401
    assert stub.request_count == count
    assert httpx.get(f"{fast.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=30).status_code == 200
    assert httpx.get(f"{fast.url}/health", timeout=30).json()["status"] == "ok"
    with ThreadedServe(make_app(stub, writer, prompts, public_metrics=True)) as public:  # --public-metrics
        assert httpx.get(f"{public.url}/metrics", timeout=30).status_code == 200
        assert httpx.get(f"{public.url}/v1/models", timeout=30).status_code == 401


def test_proxy_path_adds_the_writers_knowledge(fast, stub, prompts):
    from blade_plugin.serve.augment import question_of, small_model_text

    messages = [{"role": "user", "content": MC}]
    response = chat(fast.url, {"model": "blade", "messages": messages, "max_tokens": 50, "n": 2})
    assert response.status_code == 200, response.text
    expected_knowledge = f"Knowledge {digest(small_model_text(prompts, question_of(messages)))}"
    data = response.json()
    assert data["blade"]["knowledge"] == expected_knowledge
    sent = stub.requests[-1]
    assert (sent["model"], sent["max_tokens"], sent["n"]) == ("stub", 50, 2)
    assert expected_knowledge in sent["messages"][-1]["content"]
    assert [c["message"]["content"] for c in data["choices"]] == [echo_prompt(sent["messages"], sent)] * 2
    streamed = chat(fast.url, {"model": "blade", "messages": messages, "stream": True})
    assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
    assert json.loads(streamed.text.split("\n\n")[0][5:])["blade"]["knowledge"] == expected_knowledge


def test_every_malformed_body_is_an_openai_400(fast, stub, caplog):
    caplog.set_level(logging.WARNING)
    ok = '{"model": "m", "messages": [{"role": "user", "content": "hi"}], '
    cases = {
        "NaN": (ok + '"temperature": NaN}').encode(),
        "Infinity": (ok + '"temperature": Infinity}').encode(),
        "-Infinity": (ok + '"temperature": -Infinity}').encode(),
        "1e999": (ok + '"temperature": 1e999}').encode(),
        "5,000 digits": (ok + '"max_tokens": ' + "9" * 5000 + "}").encode(),
        "30 digits": (ok + '"seed": ' + "1" * 30 + "}").encode(),
        "65 deep": (ok + '"metadata": ' + "[" * 65 + "]" * 65 + "}").encode(),
        "3,000 deep": (ok + '"metadata": ' + "[" * 3000 + "]" * 3000 + "}").encode(),
        "19,000 deep": (ok + '"metadata": ' + "[" * 9_000 + "]" * 9_000 + "}").encode(),  # within 20 kB
        "invalid UTF-8": ok.encode() + b'"user": "\xff\xfe"}',
        "lone surrogate": b'{"model": "m", "messages": [{"role": "user", "content": "a \\ud800 b"}]}',
        "surrogate in a key": b'{"model": "m", "messages": [{"role": "user", "content": "hi", "\\udfff": 1}]}',
        "truncated": ok.encode(),
        "not an object": b"[1, 2]",
        "n a string": (ok + '"n": "3"}').encode(),
        "max_tokens negative": (ok + '"max_tokens": -5}').encode(),
    }
    count = stub.request_count
    before_500 = metric(fast.url, 'blade_serve_requests_total{route="/v1/chat/completions",code="500"}')
    for name, body in cases.items():
        error = openai_error(chat(fast.url, body), 400)
        assert error["type"] == "invalid_request_error", (name, error)
    assert openai_error(chat(fast.url, cases["lone surrogate"]), 400)["param"] == "messages.0.content"
    assert stub.request_count == count  # nothing went upstream
    assert metric(fast.url, 'blade_serve_requests_total{route="/v1/chat/completions",code="500"}') == before_500
    no_tracebacks(caplog.records)


def test_size_limits_answer_413(fast, stub):
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 25_000}]}
    assert openai_error(chat(fast.url, big), 413)["code"] == "request_too_large"

    def chunks():  # chunked: no Content-Length to refuse up front, so the server counts as it reads
        for _ in range(30):
            yield b" " * 1000

    response = httpx.post(f"{fast.base_url}/chat/completions", content=chunks(), timeout=30,
                          headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert openai_error(response, 413)["code"] == "request_too_large"
    long = {"model": "m", "messages": [{"role": "user", "content": "病" * 4_001}]}
    assert openai_error(chat(fast.url, long), 413)["param"] == "messages.0.content"


def test_caps_on_n_messages_and_max_tokens(fast, stub, writer):
    user = [{"role": "user", "content": "hi"}]
    count, batches = stub.request_count, len(writer.batches)
    cases = [({"n": 5}, "n", "at most 4"),
             ({"messages": user * 17}, "messages", "at most 16"),
             ({"max_tokens": 1_001}, "max_tokens", "at most 1000"),
             ({"max_completion_tokens": 10**9}, "max_completion_tokens", "at most 1000")]
    for extra, param, says in cases:
        error = openai_error(chat(fast.url, {"model": "m", "messages": user, **extra}), 400)
        assert error["param"] == param and says in error["message"], error
    assert (stub.request_count, len(writer.batches)) == (count, batches)
    assert chat(fast.url, {"model": "m", "messages": user, "n": 4, "max_tokens": 1_000}).status_code == 200


def test_small_model_input_is_capped_in_tokens(fast, stub, writer):
    count, batches = stub.request_count, len(writer.batches)
    question = "Which vitamin? " + "really " * 200 + "\nA. K\nB. C"  # under 4,000 characters, over 200 tokens
    error = openai_error(chat(fast.url, {"model": "m", "messages": [{"role": "user", "content": question}]}), 400)
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages.0.content"
    assert "at most 200" in error["message"] and "--max-input-tokens" in error["message"]
    assert (stub.request_count, len(writer.batches)) == (count, batches)  # refused before the model and upstream
    opted_out = {"model": "m", "messages": [{"role": "user", "content": question}], "blade": {"knowledge": False}}
    assert chat(fast.url, opted_out).status_code == 200  # the upstream takes it without knowledge


def test_a_failing_request_fails_alone_and_its_500_names_no_internals(fast, stub, writer, caplog):
    caplog.set_level(logging.INFO)
    questions = [f"Which drug is number {i}?\nA. One\nB. Two" for i in range(3)] + [f"{FAILS_HERE}\nA. x\nB. y"]
    start = threading.Barrier(len(questions))

    def ask(question: str) -> httpx.Response:
        start.wait()
        return chat(fast.url, {"model": "m", "messages": [{"role": "user", "content": question}]})

    with ThreadPoolExecutor(len(questions)) as pool:
        responses = list(pool.map(ask, questions))
    assert [r.status_code for r in responses[:3]] == [200, 200, 200]
    error = openai_error(responses[3], 500)
    assert error["code"] == "small_model_failed" and SECRET_DETAIL not in responses[3].text
    assert SECRET_DETAIL in caplog.text  # the operator sees what failed
    together = [b for b in writer.batches if any(FAILS_HERE in t for t in b)]
    assert len(together[0]) > 1 and together[-1] == [t for t in together[0] if FAILS_HERE in t]


def test_client_hanging_up_mid_upload_is_not_a_500(fast, caplog):
    caplog.set_level(logging.INFO)
    code = 'blade_serve_requests_total{route="/v1/chat/completions",code="%s"}'
    before, before_500 = metric(fast.url, code % "499"), metric(fast.url, code % "500")
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", fast.port)) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: 5000\r\n\r\n{\"model\":")
    deadline = time.monotonic() + 60
    while metric(fast.url, code % "499") < before + 20:  # the server counts each hang-up as it notices it
        assert time.monotonic() < deadline, "hang-ups were not counted"
        time.sleep(0.05)
    assert metric(fast.url, code % "500") == before_500
    no_tracebacks(caplog.records)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a 60 s socket timeout fails the test)."""
    sock.settimeout(60)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_header_and_body_deadlines_close_slow_connections(fast):
    with socket.create_connection(("127.0.0.1", fast.port)) as idle, \
            socket.create_connection(("127.0.0.1", fast.port)) as half, \
            socket.create_connection(("127.0.0.1", fast.port)) as slow_body:
        half.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # headers never finish
        slow_body.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                          b"Authorization: Bearer " + KEY.encode() + b"\r\n\r\n{")
        assert read_until_closed(idle) == b""  # closed without a word: nothing was asked
        assert read_until_closed(half) == b""
        answer = read_until_closed(slow_body)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"request_timeout" in answer


def test_connection_limit_answers_503(stub, writer, prompts):
    app = make_app(stub, writer, prompts)
    with ThreadedServe(app, header_timeout=60, max_connections=4) as server:
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
        try:
            for sock in held:
                sock.sendall(b"GET /health HTTP/1.1\r\n")  # half a request each
            deadline = time.monotonic() + 30
            while httpx.get(f"{server.url}/health", timeout=30).status_code != 503:
                assert time.monotonic() < deadline, "the connection limit never applied"
                time.sleep(0.05)
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + 30
        while httpx.get(f"{server.url}/health", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "the server did not recover after the connections closed"
            time.sleep(0.05)


def test_upstream_call_is_cancelled_when_its_client_leaves(fast, stub):
    stub.latency = 30.0  # a slow upstream: the caller gives up long before
    try:
        with pytest.raises(httpx.ReadTimeout):
            chat(fast.url, {"model": "m", "messages": [{"role": "user", "content": "slow one"}],
                            "blade": {"knowledge": False}}, timeout=1.0)
        deadline = time.monotonic() + 20
        while not any(kind == "abandoned" for kind, _, _ in stub.events):
            assert time.monotonic() < deadline, "the upstream call kept running after its client left"
            time.sleep(0.05)
    finally:
        stub.latency = 0.0
    assert not [e for e in stub.events if e[0] == "finish" and e[1] == stub.request_count]


# --- fast lane: the parts below the server -----------------------------------------------------------------
def test_option_parsing_matches_each_line_once(monkeypatch):
    from blade_plugin.serve import question

    calls = []
    pattern = question._OPTION_LINE

    class Counting:
        def match(self, line):
            calls.append(line)
            return pattern.match(line)

    monkeypatch.setattr(question, "_OPTION_LINE", Counting())
    # the freeze: every line between A and a late B used to scan all the lines after it
    text = "Which one?\nA. first\n" + "more text\n" * 3000 + "B. second"
    parsed = question.parse_question(text)
    assert len(calls) == 3003  # linear: one match per line
    assert parsed.options == {"A": "first " + " ".join(["more text"] * 3000), "B": "second"}
    assert question._OPTION_LINE.match(" " * 30_000 + "x") is None  # possessive: no backtracking


def test_batcher_bounds_batches_in_tokens_and_shutdown_abandons_a_generation():
    import asyncio

    release = threading.Event()

    def generate(texts: list[str]) -> list[str]:
        seen.append(texts)
        if "block" in texts:
            release.wait(30)
        return [t.upper() for t in texts]

    seen: list[list[str]] = []

    async def scenario():
        batcher = KnowledgeBatcher(generate, max_batch_size=8, max_wait_s=0.05, max_batch_tokens=100,
                                   max_batch_attention=1600)
        batcher.start()
        lengths = {"s1": 10, "long": 90, "s2": 10, "m1": 25, "m2": 25, "m3": 25}
        results = await asyncio.gather(*(batcher.knowledge(t, n) for t, n in lengths.items()))
        assert [r[0] for r in results] == ["S1", "LONG", "S2", "M1", "M2", "M3"]
        # "long" (90) with any other text passes 100 padded tokens: alone. Three 25-token texts need 3 x 25^2 =
        # 1875 > 1600 of attention: two at most. s1 and s2 go together, in arrival order.
        assert sorted(map(sorted, seen)) == [["long"], ["m1", "m2"], ["m3"], ["s1", "s2"]]
        blocked = asyncio.create_task(batcher.knowledge("block", 1))
        while not batcher.generating:
            await asyncio.sleep(0.01)
        queued = asyncio.create_task(batcher.knowledge("after", 1))
        await asyncio.sleep(0.1)
        await batcher.close()  # returns while "block" still generates
        assert batcher.generating
        for task in (blocked, queued):
            with pytest.raises(ShuttingDown):
                await task
        release.set()

    asyncio.run(scenario())


def test_batcher_retries_a_failed_batch_one_text_at_a_time():
    import asyncio

    def generate(texts: list[str]) -> list[str]:
        if any("bad" in t for t in texts):
            raise ValueError("cannot tokenise")
        return [t.upper() for t in texts]

    async def scenario():
        batcher = KnowledgeBatcher(generate, max_batch_size=8, max_wait_s=0.05)
        batcher.start()
        results = await asyncio.gather(*(batcher.knowledge(t) for t in ("a", "bad", "c")), return_exceptions=True)
        await batcher.close()
        return results

    a, bad, c = asyncio.run(scenario())
    assert (a, c) == (("A", False), ("C", False)) and isinstance(bad, GenerationFailed)


def test_remote_code_does_not_run_unless_trusted(tmp_path, default_model_dir):
    import shutil

    from blade_plugin.extras.errors import BladeError
    from blade_plugin.small_lm.loading import load_writer

    model = tmp_path / "downloaded"  # config and tokenizer are where remote code would load: no weights needed
    shutil.copytree(default_model_dir, model, ignore=shutil.ignore_patterns("*.safetensors"))
    marker = tmp_path / "ran"
    (model / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n"
                                   "from transformers import PretrainedConfig\n"
                                   "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n")
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="evil", auto_map={"AutoConfig": "evil.EvilConfig",
                                               "AutoModelForCausalLM": "evil.EvilModel"})
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(BladeError) as err:
        load_writer(str(model), None, "blade_chatml", 4, 1)
    assert "--trust-remote-code" in str(err.value)
    assert not marker.exists()  # the model directory's code never ran
    with pytest.raises(Exception):  # noqa: B017 - trusted, it runs (then fails: evil.py has no model class)
        load_writer(str(model), None, "blade_chatml", 4, 1, trust_remote_code=True)
    assert marker.read_text() == "pwned"  # so the refusal above is what kept it from running


def test_prompt_cache_is_owner_only_and_stores_no_credentials(tmp_path):
    from blade_plugin.llm.cache import ResponseCache

    path = tmp_path / "cache" / "llm.sqlite3"
    cache = ResponseCache(path)
    cache.put("k", "https://alice:s3cret@llm.example.com/v1?api-key=k3y&api-version=1", "m",
              [{"role": "user", "content": "private question"}], {}, "answer", 1, 1)
    cache.close()
    for name in ("llm.sqlite3", "llm.sqlite3-wal", "llm.sqlite3-shm"):
        if (path.parent / name).exists():
            assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o600, name
    with sqlite3.connect(path) as conn:
        stored = conn.execute("SELECT base_url FROM responses").fetchone()[0]
    assert stored == "https://llm.example.com/v1?api-key=***&api-version=1"
    old = tmp_path / "old.sqlite3"  # a cache an earlier version left world-readable
    sqlite3.connect(old).close()
    os.chmod(old, 0o644)
    ResponseCache(old).close()
    assert stat.S_IMODE(old.stat().st_mode) == 0o600


# --- slow: the attacks replayed against `blade-bpo serve` with the embedded model ----------------------------
QUADRATIC = "Which one?\nA. first\n" + "x\n" * 15_985 + "B. second"  # 31,998 characters: 17.6 s before


@pytest.fixture(scope="module")
def real(stub, default_model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve_hostile") / "serve.log"
    args = ["--small-model", str(default_model_dir), "--max-new-tokens", "8", "--llm-base-url", stub.base_url,
            "--llm-model", "stub", "--llm-max-retries", "0", "--api-key-env", "BLADE_TEST_CALLER_KEY",
            "--max-wait-ms", "100", "--header-timeout", "2", "--body-timeout", "2", "--max-input-tokens", "256"]
    env = {"BLADE_TEST_CALLER_KEY": KEY, "OPENAI_API_KEY": DEFAULT_API_KEY}
    with ServeProcess(args, log, env=env) as process:
        yield process


class HealthProbe:
    """GET /health every 50 ms on its own thread while an attack runs: the latencies and any failure."""

    def __init__(self, url: str):
        self.url, self.latencies, self.failures = url, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                began = time.perf_counter()
                try:
                    status = client.get(f"{self.url}/health").status_code
                except httpx.HTTPError as err:
                    self.failures.append(repr(err))
                    continue
                self.latencies.append(time.perf_counter() - began)
                if status != 200:
                    self.failures.append(status)
                self._stop.wait(0.05)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        assert not self.failures and self.latencies, self.failures
        assert max(self.latencies) < 10, max(self.latencies)  # ten times the bound: a freeze, not noise


@pytest.mark.slow
@pytest.mark.xdist_group("serve_hostile_real")  # one real server for the module's attacks
def test_real_server_attacks_get_4xx_while_health_and_others_are_answered(real, stub):
    count = stub.request_count
    user = [{"role": "user", "content": "hi"}]
    with HealthProbe(real.url):
        error = openai_error(chat(real.url, {"model": "m", "messages": [{"role": "user", "content": QUADRATIC}]},
                                  timeout=120), 400)
        assert error["code"] == "context_length_exceeded" and "at most 256" in error["message"]
        # a poisoned batch: the lone surrogate is refused alone, the three others are answered
        bodies = [json.dumps({"model": "m", "messages": [{"role": "user", "content": q}]}).encode()
                  for q in ("Name a statin.", "Name a loop diuretic.", "Name an SSRI.")]
        bodies.append(b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800 Name a macrolide."}]}')
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda b: chat(real.url, b, timeout=300), bodies))
        assert [r.status_code for r in responses] == [200, 200, 200, 400]
        assert all(r.json()["blade"]["knowledge"] for r in responses[:3])
        for body in (b'{"model": "m", "messages": [], "temperature": NaN}',
                     b'{"model": "m", "max_tokens": ' + b"7" * 5000 + b"}",
                     b'{"model": "m", "x": ' + b"[" * 3000 + b"]" * 3000 + b"}"):
            openai_error(chat(real.url, body), 400)
        assert openai_error(chat(real.url, {"model": "m", "messages": user, "n": 100}), 400)["param"] == "n"
        assert openai_error(chat(real.url, {"model": "m", "messages": user * 10_000}), 400)["param"] == "messages"
    assert stub.request_count == count + 3
    assert httpx.get(f"{real.url}/metrics", timeout=30).status_code == 401
    assert metric(real.url, 'blade_serve_requests_total{route="/v1/chat/completions",code="500"}') == 0
    assert "Traceback" not in real.log_text()


@pytest.mark.slow
@pytest.mark.xdist_group("serve_hostile_real")
def test_real_server_hang_ups_and_half_sent_requests_are_closed_quietly(real):
    sockets = []
    for i in range(100):
        sock = socket.create_connection(("127.0.0.1", real.port))
        if i % 2:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n"
                         b"Authorization: Bearer " + KEY.encode() + b"\r\n\r\n{\"model\"")
            sock.close()  # hangs up mid-upload
        else:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
            sockets.append(sock)
    with HealthProbe(real.url):
        for sock in sockets:
            assert read_until_closed(sock) == b""  # the header deadline closed it
            sock.close()
    log = real.log_text()
    assert "Traceback" not in log and " 500 " not in log
    assert metric(real.url, 'blade_serve_requests_total{route="/v1/chat/completions",code="500"}') == 0


@pytest.mark.slow
def test_sigterm_mid_generation_abandons_it_within_the_shutdown_timeout(stub, default_model_dir, tmp_path):
    # A question near the model's context: its generation runs for many seconds on CPU.
    args = ["--small-model", str(default_model_dir), "--max-new-tokens", "64", "--llm-base-url", stub.base_url,
            "--llm-model", "stub", "--max-input-tokens", "6000", "--shutdown-timeout", "2",
            "--max-message-chars", "40000"]
    server = ServeProcess(args, tmp_path / "serve.log", verbose=True).start()
    try:
        question = "Summarise: " + "the patient took warfarin and vitamin K " * 600
        asker = ThreadPoolExecutor(1)
        outcome = asker.submit(lambda: httpx.post(f"{server.base_url}/chat/completions", timeout=300, json={
            "model": "m", "messages": [{"role": "user", "content": question}]}))
        deadline = time.monotonic() + 120
        while not httpx.get(f"{server.url}/health", timeout=30).json()["small_lm_generating"]:
            assert time.monotonic() < deadline and not outcome.done(), "the generation never started"
            time.sleep(0.05)
        server.terminate()
        assert server.wait(timeout=120) == 0
        response = outcome.result(timeout=120)
        asker.shutdown(wait=True)
    finally:
        server.stop()
    assert openai_error(response, 503)["code"] == "shutting_down"  # its request was answered, not dropped
    log = server.log_text()
    assert "abandoning a small-model generation" in log and "Traceback" not in log
    assert "small-model batch of 1 in" not in log  # it exited before the generation could finish


def test_input_limit_is_the_models_context_minus_knowledge_and_soft_prompt_or_the_option():
    from types import SimpleNamespace

    from blade_plugin.serve.input_limit import input_limit, token_counter

    small_context = SimpleNamespace(max_model_len=1000, max_new_tokens=128)
    limit, reason = input_limit(small_context, 5, 2048)
    assert limit == 1000 - 128 - 5 and "context of 1000 tokens minus 128 for the knowledge, 5 soft" in reason
    big_context = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(max_position_embeddings=8192)),
                                  max_new_tokens=128)
    assert input_limit(big_context, 0, 2048) == (2048, "--max-input-tokens")
    writer = SimpleNamespace(encode=lambda texts: [text.split() for text in texts])
    assert token_counter(writer, 5)("three short words") == 3 + 5
