"""The main job, `blade-bpo demo`, in a reduced configuration: every stage runs for real."""

from __future__ import annotations

import json

import pytest

from blade_plugin.qa.data import load_qa
from blade_testing.openai_stub_server import StubOpenAIServer
from blade_testing.scripted_llm import QAOracle
from helpers import run_cli


@pytest.mark.slow
@pytest.mark.timeout(3900)  # longer than its two subprocess limits (2400 s + 1200 s)
def test_demo_pipeline_reduced(demo_data_dir, prompts, default_model_dir, tmp_path):
    # --no-kit-grounded: QAOracle knows the ungrounded knowledge-generation prompts exactly (grounded KIT is
    # covered against the reader in test_retrieval and the statute demo below)
    items = [it for split in ("train", "dev", "test") for it in load_qa(demo_data_dir / f"demo_qa_{split}.jsonl")[:4]]
    work = tmp_path / "demo"
    args = ["blade-bpo", "demo", "--workdir", str(work), "--limit", "4", "--dp-steps", "2", "--kit-steps", "2",
            "--bpo-init", "2", "--bpo-iterations", "1", "--max-new-tokens", "16", "--kit-on-base", "--no-kit-grounded", "--llm-model", "stub",
            "--cache-db", str(tmp_path / "cache.sqlite3")]
    env = {"BLADE_DEFAULT_MODEL_DIR": str(default_model_dir)}
    with StubOpenAIServer(QAOracle(items, prompts)) as server:
        # the dry run first: no request, no workdir, and the bill the real run is then held to (below)
        dry = run_cli([*args, "--llm-base-url", server.base_url, "--dry-run-json", str(tmp_path / "plan.json")],
                      cwd=tmp_path, env=env, timeout=600)
        assert dry.returncode == 0, dry.stderr[-2000:]
        assert server.request_count == 0 and not work.exists()
        plan = json.loads((tmp_path / "plan.json").read_text())
        # three training runs and the ablation: slow on a shared CPU, so a generous limit
        result = run_cli([*args, "--llm-base-url", server.base_url], cwd=tmp_path, env=env, timeout=2400)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        check_bill(plan, server.requests, items, prompts, default_model_dir)
        summary = json.loads((work / "report.json").read_text())
        assert summary["scores_meaningful"] is True
        assert summary["kit"] == {"kept": 4, "total": 4, "file": str(work / "data" / "kit_knowledge.jsonl"),
                                  "max_new_tokens": 16}
        assert summary["bpo"]["evaluations"] == 3
        rows = ["llm", "base", "dp", "kit", "dp_kit", "blade", "retrieval", "passages+knowledge", "knowledge-as-query"]
        assert set(summary["test_accuracy"]) == set(rows)
        table = json.loads((work / "runs" / "ablation" / "ablation.json").read_text())
        assert [r["key"] for r in table["rows"]] == rows
        # per kind of question (the first 4 test items' kinds), every row
        kinds = {it.meta["kind"] for it in items[-4:]}
        assert table["group_by"] == "kind" and all(set(r["groups"]) == kinds for r in table["rows"])
        assert "By kind:" in result.stdout
        assert all("skipped" not in r and r["n"] == 4 for r in table["rows"])
        # BLADE never below DP + KIT on dev: the soft prompt is kept only if it beats none by more than noise
        bpo = summary["bpo"]
        assert bpo["kept_soft_prompt"] == (bpo["dev_best"] - bpo["dev_baseline"] > bpo["optimism"])
        assert set(summary["stage_peak_memory_mb"]) == {"dp", "probe", "kit_data", "kit", "bpo", "ablation"}
        assert summary["stage_peak_memory_mb"]["dp"] > 300  # llamafactory-cli's RSS is counted (child process)
        for name, path in summary["artifacts"].items():
            assert (work / path).exists(), name
        assert (work / "saves" / "dp" / "model.safetensors").is_file()
        assert (work / "saves" / "kit_full" / "model.safetensors").is_file()  # freeze tuning: full model dirs
        assert (work / "saves" / "kit_base_full" / "model.safetensors").is_file()
        assert "Options" not in (work / "templates" / "small_model_query.j2").read_text()  # the question only
        assert not list((work / "saves").glob("*/checkpoint-*"))  # save_strategy=no: only final models
        info = json.loads((work / "data" / "dataset_info.json").read_text())
        assert info["blade_kit_generated"]["file_name"] == "kit_knowledge.jsonl"
        # KIT trained on the kept knowledge plus the default corpus replay
        assert "dataset=blade_kit_generated,blade_kit_replay_54 " in result.stderr
        assert "| LLM alone |" in result.stdout and "peak MB" in result.stdout
        probe = json.loads((work / "runs" / "probe.json").read_text())
        assert probe["n"] == 40 and summary["dp_probe"]["hits_after"] == probe["after"]["correct"]
        assert "Artifacts:" in result.stdout and "soft_prompt" in result.stdout

        # a second run resumes: every stage is complete, so no training runs and the LLM is not asked again
        server.reset_stats()
        again = run_cli([*args, "--llm-base-url", server.base_url], cwd=tmp_path, env=env, timeout=1200)
        assert again.returncode == 0, again.stderr[-3000:]
        assert server.request_count == 0
    assert "[1/6] DP" not in again.stderr
    resumed = json.loads((work / "report.json").read_text())
    assert resumed["stage_seconds"]["dp_s"] >= summary["stage_seconds"]["dp_s"] > 0  # the first run's cost stays
    for stage in range(1, 7):  # no stage ran again (what a shorter this_run_seconds only suggested)
        assert f"[{stage}/6]" not in again.stderr
    assert resumed["ran_this_time"] == []


def check_bill(plan: dict, sent: list[dict], items, prompts, model_dir) -> None:
    """The demo's dry run against what its real run sent: KIT generation and the LLM-alone row exactly
    (counted here with the small model's chat template, `stub` being no OpenAI model), BPO and the other
    ablation rows as upper bounds (their knowledge did not exist at planning time; cached answers are free)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def count(messages) -> int:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    train, dev, test = items[:4], items[4:8], items[8:]
    generation, check, bpo, ablation = plan["phases"]
    wanted = [json.dumps(prompts.knowledge_generation(item)) for item in train]
    generation_sent = [r["messages"] for r in sent if json.dumps(r["messages"]) in wanted]
    assert generation["requests"] == len(generation_sent) == 4
    assert generation["prompt_tokens"] == sum(map(count, generation_sent))
    llm_alone = [json.dumps(prompts.answer(item, "")) for item in test]
    assert sum(json.dumps(r["messages"]) in llm_alone for r in sent) == 4
    # by hand: KIT 4 + 4 checks; BPO (baseline + 2 Sobol + 1 BO) x 4 dev; 9 ablation rows x 4 test
    assert [p["requests"] for p in plan["phases"]] == [4, 4, 16, 36]
    assert len(sent) <= plan["total"]["requests"]
    assert len(sent) >= 4 + 4 + 4 + 4  # KIT, its checks, BPO's baseline, the LLM-alone row: never cached here


@pytest.mark.slow
def test_demo_statute_domain_reduced(default_model_dir, tmp_path):
    """`--domain statute`: the Chinese raw JEC-QA files, zh_legal prompts, no probe, the ablation by kind."""
    work = tmp_path / "statute"
    args = ["blade-bpo", "demo", "--domain", "statute", "--workdir", str(work), "--limit", "4", "--dp-steps", "1",
            "--kit-steps", "1", "--no-kit-on-base", "--bpo-init", "1", "--bpo-iterations", "0",
            "--max-new-tokens", "8", "--cache-db", str(tmp_path / "cache.sqlite3")]
    result = run_cli(args, cwd=tmp_path, env={"BLADE_DEFAULT_MODEL_DIR": str(default_model_dir)}, timeout=2400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    summary = json.loads((work / "report.json").read_text())
    assert summary["config"].endswith("statute.blade.yaml") and summary["dp_probe"] is None
    assert "dataset=blade_corpus " in result.stderr
    assert "题目：" in (work / "templates" / "small_model_query.j2").read_text(encoding="utf-8")
    assert "正确答案" in (work / "templates" / "knowledge_generation.j2").read_text(encoding="utf-8")  # zh_legal
    table = json.loads((work / "runs" / "ablation" / "ablation.json").read_text())
    from blade_plugin.extras.paths import bundled_data_dir

    test_items = load_qa(bundled_data_dir() / "statute_qa_test.json")[:4]  # run reads the data in place
    assert {g for r in table["rows"] if "groups" in r for g in r["groups"]} == {i.meta["kind"] for i in test_items}
    kit = [json.loads(line) for line in (work / "data" / "kit_knowledge.jsonl").read_text("utf-8").splitlines()]
    assert kit and all(row["output"].startswith("相关知识：") for row in kit)
    other = run_cli(["blade-bpo", "demo", "--workdir", str(work), "--limit", "4"], cwd=tmp_path,
                    env={"BLADE_DEFAULT_MODEL_DIR": str(default_model_dir)}, timeout=600)
    # the pharma demo in the statute workdir: refused before anything runs (its prompts are not the statute's)
    assert other.returncode != 0 and "holds other prompts than this config's" in other.stderr


def test_without_endpoint_the_local_stand_in_is_used_and_flagged(default_model_dir, monkeypatch, caplog):
    from blade_plugin.llm.options import config_from_options

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("BLADE_DEFAULT_MODEL_DIR", str(default_model_dir))
    with caplog.at_level("WARNING"):
        config = config_from_options()
    assert config.backend == "local" and config.local_model_dir == str(default_model_dir)
    assert "not meaningful" in caplog.text
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert config_from_options(llm_model="m").backend == "openai"


def test_soft_prompt_is_kept_only_when_not_worse_than_none(tmp_path):
    import torch

    from blade_plugin.bpo.guard import keep_better_soft_prompt as _keep_better_soft_prompt
    from blade_plugin.small_lm.soft_prompt import load_soft_prompt, save_soft_prompt

    tuned = torch.arange(10, dtype=torch.float32).reshape(2, 5)
    save_soft_prompt(tmp_path / "soft_prompt.safetensors", tuned, {"d": 3})
    assert _keep_better_soft_prompt(tmp_path, 0.60, 0.50, 5, optimism=0.04)["kept_soft_prompt"] is True
    kept, meta = load_soft_prompt(tmp_path / "selected_soft_prompt.safetensors")
    assert torch.equal(kept, tuned) and meta["selected"] == "bpo"
    # the demo's own run: +1 of 28 dev questions over no soft prompt, against an estimated optimism of 0.042
    assert _keep_better_soft_prompt(tmp_path, 19 / 28, 18 / 28, 5, optimism=0.0419)["kept_soft_prompt"] is False
    assert _keep_better_soft_prompt(tmp_path, 0.50, 0.50, 5)["kept_soft_prompt"] is False  # a tie keeps none
    assert _keep_better_soft_prompt(tmp_path, 0.25, 0.50, 5, optimism=None) == {
        "kept_soft_prompt": False, "dev_best": 0.25, "dev_baseline": 0.50, "optimism": 0.0}
    dropped, meta = load_soft_prompt(tmp_path / "selected_soft_prompt.safetensors")
    assert tuple(dropped.shape) == (0, 5) and meta["dev_baseline"] == 0.5  # zero soft tokens: plain DP + KIT


def test_a_model_trained_with_other_settings_is_refused_and_never_rewritten(tmp_path):
    from blade_plugin.extras.errors import BladeError
    from blade_plugin.runs.marker import MARKER, mark, stage_key, trained

    model = tmp_path / "saves" / "kit_full"
    settings = {"model_name_or_path": "saves/dp", "num_train_epochs": "5.0", "learning_rate": "0.0003"}
    key = stage_key(stage="kit", settings=settings)
    assert not trained(model, "kit", key, settings, "hint")  # no marker yet: train
    mark(model / MARKER, "kit", key, settings=settings)
    written = (model / MARKER).read_text()
    assert trained(model, "kit", key, settings, "hint")
    other = {**settings, "num_train_epochs": "3.0"}
    with pytest.raises(BladeError, match=r"num_train_epochs differ.*delete it"):
        trained(model, "kit", stage_key(stage="kit", settings=other), other, "delete it")
    with pytest.raises(BladeError, match="its inputs differ"):  # same settings, other inputs (e.g. a new corpus)
        trained(model, "kit", stage_key(stage="kit", settings=settings, corpus="other"), settings, "hint")
    assert (model / MARKER).read_text() == written  # never rewritten


def test_corpus_replay_rows_ask_a_document_s_first_half_and_answer_with_it_in_the_kit_lead_in(tmp_path):
    from blade_plugin.qa.prompts import load_prompts
    from blade_plugin.stages.kit import write_corpus_replay as _write_corpus_replay
    from blade_plugin.stages.pipeline import QUESTION_ONLY_QUERY

    DEMO_SMALL_MODEL_QUERY_ZH = QUESTION_ONLY_QUERY["zh_legal"]
    from blade_plugin.stages.workspace import init_workspace

    init_workspace(tmp_path / "w", variant="zh_legal")
    (tmp_path / "w" / "templates" / "small_model_query.j2").write_text(DEMO_SMALL_MODEL_QUERY_ZH, encoding="utf-8")
    corpus = tmp_path / "corpus.jsonl"
    docs = ["Lusotrapam is manufactured by Vashti Biologics.", "漕运署负责监督渡船租赁事务。", "Third one here."]
    corpus.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    kit = tmp_path / "kit.jsonl"
    kit.write_text("".join(json.dumps({"output": o}, ensure_ascii=False) + "\n" for o in ("相关知识：甲。", "相关知识：乙。")),
                   encoding="utf-8")
    out = tmp_path / "replay.jsonl"
    assert _write_corpus_replay(corpus, kit, load_prompts(tmp_path / "w" / "templates"), 5, 0, out) == 3
    rows = {json.loads(line)["output"]: json.loads(line)["instruction"] for line in out.read_text("utf-8").splitlines()}
    assert set(rows) == {"相关知识：" + d for d in docs}
    assert rows["相关知识：" + docs[0]].rstrip().endswith("题目：Lusotrapam is manufactured")
    assert rows["相关知识：" + docs[1]].rstrip().endswith("题目：漕运署负责监督")
