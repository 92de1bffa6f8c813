"""One check against a real peer endpoint: `llamafactory-cli api` serving the embedded model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from blade_plugin.llm.client import LLMClient, LLMConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_models(proc: subprocess.Popen, port: int, log: Path, timeout: float) -> None:
    """Poll GET /v1/models until the server answers; fail with the log tail if it dies or times out."""
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, f"llamafactory-cli api did not come up in {timeout:.0f} s"
        time.sleep(1)


@pytest.fixture(scope="module")
def llamafactory_api(default_model_dir, tmp_path_factory):
    """`llamafactory-cli api` serving the embedded model on 127.0.0.1; yields its base URL."""
    tmp_path = tmp_path_factory.mktemp("lf_api")
    port = _free_port()
    env = {**os.environ, "API_HOST": "127.0.0.1", "API_PORT": str(port), "API_MODEL_NAME": "smollm2",
           "LLAMAFACTORY_VERBOSITY": "WARN"}
    cli = Path(sys.executable).parent / "llamafactory-cli"
    config_file = tmp_path / "serve.yaml"
    config_file.write_text(f"model_name_or_path: {default_model_dir}\ntemplate: blade_chatml\n"
                           "infer_backend: huggingface\nmax_new_tokens: 16\n")
    with open(tmp_path / "api.log", "w") as log:
        proc = subprocess.Popen([str(cli), "api", str(config_file)],
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for_models(proc, port, tmp_path / "api.log", timeout=180)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_client_against_llamafactory_api(llamafactory_api, tmp_path):
    config = LLMConfig(base_url=llamafactory_api, model="smollm2", max_tokens=16,
                       cache_db=tmp_path / "cache.sqlite3", concurrency=2,
                       timeout=900)  # a shared CPU must not turn a slow answer into a retry
    with LLMClient(config) as client:
        answers = client.complete_many([[{"role": "user", "content": "What is the capital of France?"}],
                                        [{"role": "user", "content": "Name one vitamin."}]])
        assert all(a.strip() for a in answers)
        assert "Paris" in answers[0]
        assert client.usage.calls == 2 and client.usage.prompt_tokens > 0
        assert client.usage.completion_tokens > 0


@pytest.mark.slow
def test_json_answers_from_llamafactory_api_are_not_taken_for_structured_output(llamafactory_api, tmp_path, caplog):
    """`llamafactory-cli api` accepts `response_format` and drops it (its request model ignores unknown
    fields): with --answer-format json the client notices the free-text reply, says so, asks in the prompt
    instead, and counts the answers that came without the schema's JSON."""
    import asyncio

    from blade_plugin.qa.answers import answer_response_format

    options = {"A": "Paris", "B": "Rome", "C": "Madrid"}
    questions = ["Which city is the capital of France?", "Which city is the capital of Italy?"]
    messages = [[{"role": "user", "content": f"{q}\nA. Paris\nB. Rome\nC. Madrid"}] for q in questions]
    fmt = answer_response_format(options)
    config = LLMConfig(base_url=llamafactory_api, model="smollm2", max_tokens=16, answer_format="json",
                       cache_db=tmp_path / "cache.sqlite3", concurrency=2,
                       timeout=900)  # a shared CPU must not turn a slow answer into a retry
    with LLMClient(config) as client, caplog.at_level("WARNING"):
        async def ask_all():
            return await asyncio.gather(*(client.acomplete(m, fmt) for m in messages))

        replies = client.run(ask_all())
        usage = client.usage
    assert len(replies) == 2 and usage.failures == 0  # accepted (200), not refused
    assert "took response_format but answered without the schema's JSON" in caplog.text
    assert usage.json_by_instruction == 2 and usage.unstructured >= 1
