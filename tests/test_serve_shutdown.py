"""`blade-bpo serve` under pressure: a full small-model queue answers 429 with Retry-After, and SIGTERM lets
every in-flight request (plain and streaming) finish before the process exits 0."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from blade_testing.openai_stub_server import StubOpenAIServer
from blade_testing.serve_process import ServeProcess

pytestmark = pytest.mark.slow

QUESTIONS = [
    "Which antiepileptic drug is a classic cause of gingival hyperplasia?\nA. Phenytoin\nB. Valproate\n"
    "C. Levetiracetam\nD. Lamotrigine",
    "Which antidote is used for paracetamol overdose?\nA. Naloxone\nB. Flumazenil\nC. N-acetylcysteine\n"
    "D. Atropine",
    "Which class of drugs ends in -olol?\nA. ACE inhibitors\nB. Beta blockers\nC. Statins\nD. Diuretics",
    "阿片类药物过量的解毒剂是\nA. 纳洛酮\nB. 阿托品\nC. 氟马西尼\nD. 维生素K\nE. 鱼精蛋白",
    "Digoxin toxicity is made worse by which electrolyte disturbance?\nA. Hyperkalaemia\nB. Hypokalaemia\n"
    "C. Hypernatraemia\nD. Hypocalcaemia",
    "Which drug is a proton pump inhibitor?\nA. Ranitidine\nB. Omeprazole\nC. Sucralfate\nD. Misoprostol",
]


def echo(messages: list[dict], body: dict) -> str:
    return "Echo: " + messages[-1]["content"][-30:]


@pytest.fixture(scope="module")
def stub():
    with StubOpenAIServer(responder=echo, models=["m"]) as server:
        yield server


@pytest.fixture(scope="module")
def server(stub, default_model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve_shutdown") / "serve.log"
    args = ["--small-model", str(default_model_dir), "--max-new-tokens", "8", "--llm-base-url", stub.base_url,
            "--max-queue", "2", "--max-wait-ms", "4000", "--shutdown-timeout", "300", "--llm-model", "m"]
    process = ServeProcess(args, log).start()
    yield process
    process.stop()


def test_full_queue_answers_429_with_retry_after(server, stub):
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=600)

    def ask(question: str):
        try:
            return client.chat.completions.create(model="m", messages=[{"role": "user", "content": question}])
        except openai.RateLimitError as err:
            return err

    def depth() -> int:
        return httpx.get(f"{server.url}/health", timeout=30).json()["small_lm_queue_depth"]

    with ThreadPoolExecutor(2) as pool:
        # --max-wait-ms 4000 with --max-queue 2 below the batch size: the first two questions wait for a batch to
        # fill; the server says when both are queued (an event, not a sleep)
        first = [pool.submit(ask, question) for question in QUESTIONS[:2]]
        deadline = time.monotonic() + 120
        while depth() < 2:
            assert time.monotonic() < deadline and not any(f.done() for f in first), \
                f"the first two questions never filled the queue: {[f.result() for f in first if f.done()]}"
            time.sleep(0.02)
        # ... so each further question, asked one at a time while they wait, finds the queue full
        refused = []
        for question in QUESTIONS[2:]:
            outcome = ask(question)
            assert isinstance(outcome, openai.RateLimitError), (
                f"{question[:40]!r} was admitted though two questions filled the queue (unless their 4 s batch "
                f"window passed before it arrived): {outcome}")
            refused.append(outcome)
        answered = [f.result(timeout=300) for f in first]
    for err in refused:
        assert err.status_code == 429 and int(err.response.headers["retry-after"]) >= 1
        assert err.body["code"] == "queue_full" and err.body["type"] == "rate_limit_error"
    for completion in answered:
        assert completion.choices[0].message.content.startswith("Echo: ")
        assert completion.model_extra["blade"]["knowledge"]
    # The queue frees up: a refused question goes through when retried later.
    retried = client.chat.completions.create(model="m", messages=[{"role": "user", "content": QUESTIONS[2]}])
    assert retried.model_extra["blade"]["knowledge"]


def test_sigterm_finishes_in_flight_requests(server, stub):
    stub.latency = 3.0
    stub.stream_delay = 0.3
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=600)

    def plain(content: str, knowledge: bool):
        return client.chat.completions.create(model="m", messages=[{"role": "user", "content": content}],
                                              extra_body={"blade": {"knowledge": knowledge}})

    def streamed(content: str) -> str:
        chunks = client.chat.completions.create(model="m", messages=[{"role": "user", "content": content}],
                                                stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    try:
        with ThreadPoolExecutor(5) as pool:
            futures = [pool.submit(plain, "Name a new oral anticoagulant.", True),
                       pool.submit(plain, "Name a loop diuretic.", False),
                       pool.submit(plain, "Name an SSRI.", False),
                       pool.submit(plain, "Name a macrolide antibiotic.", False),
                       pool.submit(streamed, "List three statins, separated by spaces, nothing else.")]
            deadline = time.time() + 120
            while True:  # all five are inside the server (the scrape itself is the sixth)
                text = httpx.get(f"{server.url}/metrics", timeout=30).text
                in_progress = float(re.search(r"^blade_serve_requests_in_progress (\S+)$", text, re.M).group(1))
                if in_progress >= 6:
                    break
                assert time.time() < deadline, "requests did not reach the server"
                time.sleep(0.1)
            server.terminate()
            while True:  # shutdown began: new connections are refused while the five are still in flight
                try:
                    httpx.get(f"{server.url}/health", timeout=5)
                except httpx.ConnectError:
                    break
                assert time.time() < deadline, "the server kept accepting connections after SIGTERM"
                time.sleep(0.05)
            assert not all(f.done() for f in futures)  # (the knowledge ones wait seconds for their batch)
            results = [f.result(timeout=300) for f in futures]
        assert server.wait(timeout=300) == 0
    finally:
        stub.latency = 0.0
        stub.stream_delay = 0.0
    # Free chat: knowledge went into a system message, so the upstream echoes the user's own words.
    assert results[0].model_extra["blade"]["knowledge"]
    for completion, content in zip(results[:4], ["Name a new oral anticoagulant.", "Name a loop diuretic.",
                                                 "Name an SSRI.", "Name a macrolide antibiotic."]):
        assert completion.choices[0].message.content == "Echo: " + content[-30:]
    assert results[4] == "Echo: " + "List three statins, separated by spaces, nothing else."[-30:]
    log = server.log_text()
    assert "Waiting for application shutdown" in log and "Application shutdown complete" in log
