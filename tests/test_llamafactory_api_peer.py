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


@pytest.mark.slow
def test_client_against_llamafactory_api(default_model_dir, tmp_path):
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
            config = LLMConfig(base_url=f"http://127.0.0.1:{port}/v1", model="smollm2", max_tokens=16,
                               cache_db=tmp_path / "cache.sqlite3", concurrency=2)
            with LLMClient(config) as client:
                answers = client.complete_many([[{"role": "user", "content": "What is the capital of France?"}],
                                                [{"role": "user", "content": "Name one vitamin."}]])
                assert all(a.strip() for a in answers)
                assert "Paris" in answers[0]
                assert client.usage.calls == 2 and client.usage.prompt_tokens > 0
                assert client.usage.completion_tokens > 0
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
