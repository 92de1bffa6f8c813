"""`blade-bpo serve` in front of a real peer upstream: `llamafactory-cli api` serving the embedded model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from blade_testing.serve_process import ServeProcess, free_port

from test_llamafactory_api_peer import _wait_for_models


@pytest.mark.slow
def test_serve_with_llamafactory_api_upstream(default_model_dir, tmp_path, prompts):
    port = free_port()
    env = {**os.environ, "API_HOST": "127.0.0.1", "API_PORT": str(port), "API_MODEL_NAME": "smollm2",
           "LLAMAFACTORY_VERBOSITY": "WARN"}
    config_file = tmp_path / "upstream.yaml"
    config_file.write_text(f"model_name_or_path: {default_model_dir}\ntemplate: blade_chatml\n"
                           "infer_backend: huggingface\nmax_new_tokens: 16\n")
    cli = Path(sys.executable).parent / "llamafactory-cli"
    with open(tmp_path / "api.log", "w") as log:
        upstream = subprocess.Popen([str(cli), "api", str(config_file)], cwd=tmp_path, env=env, stdout=log,
                                    stderr=subprocess.STDOUT)
    try:
        _wait_for_models(upstream, port, tmp_path / "api.log", timeout=300)
        args = ["--small-model", str(default_model_dir), "--max-new-tokens", "16",
                "--llm-base-url", f"http://127.0.0.1:{port}/v1", "--llm-model", "smollm2"]
        with ServeProcess(args, tmp_path / "serve.log") as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=600)
            direct = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0,
                                   timeout=600)
            greedy = {"do_sample": False}  # LLaMA-Factory's own extension field: must pass through

            question = "Which vitamin deficiency causes scurvy?\nA. Vitamin A\nB. Vitamin C\nC. Vitamin D\nD. Vitamin K"
            completion = client.chat.completions.create(model="blade", messages=[{"role": "user", "content": question}],
                                                        max_tokens=16, extra_body=greedy)
            knowledge = completion.model_extra["blade"]["knowledge"]
            assert knowledge.strip() and completion.choices[0].message.content.strip()
            assert completion.object == "chat.completion" and completion.usage.completion_tokens > 0
            # The same augmented prompt sent straight to the upstream gives the same greedy answer.
            from blade_plugin.qa.data import QAItem

            item = QAItem(id="q", question="Which vitamin deficiency causes scurvy?",
                          options={"A": "Vitamin A", "B": "Vitamin C", "C": "Vitamin D",
                                   "D": "Vitamin K"}, answer=())
            augmented = prompts.answer(item, knowledge)[-1]["content"]
            expected = direct.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": augmented}],
                                                      max_tokens=16, extra_body=greedy)
            assert completion.choices[0].message.content == expected.choices[0].message.content

            chunks = list(client.chat.completions.create(
                model="blade", messages=[{"role": "user", "content": "What is the capital of France?"}],
                max_tokens=16, stream=True, extra_body=greedy))
            assert chunks[0].model_extra["blade"]["knowledge"].strip()
            streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert streamed.strip() and chunks[-1].choices[0].finish_reason in ("stop", "length")
            raw = httpx.post(f"{server.base_url}/chat/completions", timeout=600, json={
                "model": "blade", "stream": True, "max_tokens": 8, "do_sample": False,
                "messages": [{"role": "user", "content": "Name one vitamin."}]})
            assert raw.text.rstrip().endswith("data: [DONE]")
    finally:
        upstream.terminate()
        try:
            upstream.wait(timeout=30)
        except subprocess.TimeoutExpired:
            upstream.kill()
            upstream.wait()
