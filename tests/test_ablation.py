"""`blade-bpo ablate`: one row per pipeline configuration, real small-model generation, real HTTP to a scripted
LLM, paired statistics checked against scipy, and re-runs that only pay for new rows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from blade_plugin.qa.data import load_qa
from blade_testing.openai_stub_server import StubOpenAIServer
from blade_testing.scripted_llm import QAOracle, _stable_fraction
from helpers import run_cli

N_ITEMS = 6


def _lora_adapter(base_dir: Path, out: Path) -> Path:
    """A real PEFT LoRA adapter with non-zero weights (so it changes what the model writes)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    peft.save_pretrained(out)
    return out


def _expected_accuracy(oracle: QAOracle, items, predictions: list[dict]) -> float:
    """The oracle's rule applied to the knowledge each prediction recorded (independent of our metrics code)."""
    by_id = {p["id"]: p for p in predictions}
    right = 0
    for item in items:
        raw = oracle.answer_for(item, by_id[item.id]["knowledge"])
        right += raw == "Answer: " + ", ".join(item.answer)
    return right / len(items)


@pytest.mark.slow
def test_ablation_rows_stats_and_rerun_costs_only_new_rows(demo_data_dir, prompts, default_model_dir, tmp_path,
                                                          isolated_home):
    from scipy.stats import binomtest

    from blade_plugin.stages.ablation import AblationConfig, AblationInputs, run_ablation
    from blade_plugin.llm.client import LLMClient, LLMConfig

    items = load_qa(demo_data_dir / "demo_qa_test.jsonl", limit=N_ITEMS)
    oracle = QAOracle(items, prompts, baseline_accuracy=0.3, coverage_needed=0.5)
    work = tmp_path / "ws"
    (work / "saves").mkdir(parents=True)
    os.symlink(default_model_dir, work / "saves" / "dp")  # a DP checkpoint: any HF model directory
    out = tmp_path / "ablation"
    config = AblationConfig(out_dir=out, max_new_tokens=10, batch_size=8, bootstrap=500)

    with StubOpenAIServer(oracle) as server:
        llm = LLMConfig(base_url=server.base_url, model="stub", cache_db=tmp_path / "cache.sqlite3")
        with LLMClient(llm) as client:
            table = run_ablation(items, prompts, client,
                                 AblationInputs.from_workspace(work, str(default_model_dir)), config)
        rows = {r["key"]: r for r in table["rows"]}
        assert list(rows) == ["llm", "base", "dp", "kit", "dp_kit", "blade", "retrieval"]
        assert rows["retrieval"]["skipped"].startswith("no --corpus")
        assert rows["kit"]["skipped"].startswith("no KIT-on-base checkpoint")
        assert rows["dp_kit"]["skipped"].startswith("no KIT checkpoint")
        assert rows["blade"]["skipped"].startswith("no KIT checkpoint")
        # LLM alone: the oracle is right exactly for the ids its hash puts under the baseline share
        expected_llm = sum(_stable_fraction(it.id) < 0.3 for it in items)
        assert rows["llm"]["correct"] == expected_llm
        assert rows["llm"]["llm_calls"] == N_ITEMS and rows["base"]["llm_calls"] == N_ITEMS
        for key in ("base", "dp"):
            preds = [json.loads(line) for line in (Path(rows[key]["dir"]) / "predictions.jsonl").open()]
            assert all(p["knowledge"] for p in preds)  # the small model wrote something for every question
            assert rows[key]["accuracy"] == pytest.approx(_expected_accuracy(oracle, items, preds), abs=1e-4)
        # paired test against scipy's exact binomial test on the discordant pairs
        llm_ok = {p["id"]: p["correct"] for p in map(json.loads, (Path(rows["llm"]["dir"]) / "predictions.jsonl").open())}
        base_ok = {p["id"]: p["correct"] for p in map(json.loads, (Path(rows["base"]["dir"]) / "predictions.jsonl").open())}
        wins = sum(base_ok[i] and not llm_ok[i] for i in llm_ok)
        losses = sum(llm_ok[i] and not base_ok[i] for i in llm_ok)
        p = rows["base"]["vs_llm"]
        assert (p["wins"], p["losses"]) == (wins, losses)
        scipy_p = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
        assert p["mcnemar_p"] == pytest.approx(scipy_p, abs=1e-6)
        assert rows["dp"]["vs_previous"]["row"] == "base"
        assert rows["dp"]["vs_previous"]["accuracy_diff"] == pytest.approx(rows["dp"]["accuracy"] - rows["base"]["accuracy"],
                                                                           abs=1e-4)
        for name in ("ablation.json", "ablation.md", "ablation.png"):
            assert (out / name).stat().st_size > 0
        md = (out / "ablation.md").read_text()
        assert "| LLM alone |" in md and "+ DP + KIT: skipped (no KIT checkpoint)" in md
        assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # Add KIT and a soft prompt: only the two new rows cost LLM calls; finished rows load no model.
        import torch

        from blade_plugin.small_lm.soft_prompt import save_soft_prompt

        _lora_adapter(default_model_dir, work / "saves" / "kit_lora")
        torch.manual_seed(1)
        save_soft_prompt(work / "runs" / "bpo" / "soft_prompt.safetensors", torch.randn(3, 576) * 0.1, {"d": 10})
        server.reset_stats()
        with LLMClient(llm) as client:
            again = run_ablation(items, prompts, client, AblationInputs.from_workspace(work, str(default_model_dir)),
                                 config)
        rows2 = {r["key"]: r for r in again["rows"]}
        for key in ("llm", "base", "dp"):
            assert rows2[key]["llm_calls"] == 0 and rows2[key]["model_loaded"] is False, key
            assert rows2[key]["accuracy"] == rows[key]["accuracy"]
        assert rows2["dp_kit"]["llm_calls"] + rows2["blade"]["llm_calls"] == server.request_count
        assert rows2["blade"]["vs_previous"]["row"] == "dp_kit"
        kit_preds = [json.loads(line) for line in (Path(rows2["dp_kit"]["dir"]) / "predictions.jsonl").open()]
        base_preds = [json.loads(line) for line in (Path(rows["base"]["dir"]) / "predictions.jsonl").open()]
        assert [p["knowledge"] for p in kit_preds] != [p["knowledge"] for p in base_preds]  # the adapter was applied


@pytest.mark.slow
def test_a_soft_prompt_bpo_did_not_keep_reuses_the_dp_kit_knowledge_without_loading_again(
        demo_data_dir, prompts, default_model_dir, tmp_path, isolated_home):
    """BPO kept no soft prompt (zero tokens): full BLADE is DP + KIT, so its row must not load the KIT model a
    second time nor generate again; its knowledge is DP + KIT's, word for word."""
    import torch

    from blade_plugin.llm.client import LLMClient, LLMConfig
    from blade_plugin.small_lm.soft_prompt import save_soft_prompt
    from blade_plugin.stages.ablation import AblationConfig, AblationInputs, _default_writer_factory, run_ablation

    items = load_qa(demo_data_dir / "demo_qa_test.jsonl", limit=4)
    work = tmp_path / "ws"
    (work / "saves").mkdir(parents=True)
    os.symlink(default_model_dir, work / "saves" / "kit_full")  # a full KIT model: any HF model directory
    save_soft_prompt(work / "runs" / "bpo" / "selected_soft_prompt.safetensors", torch.zeros(0, 576), {"d": 10})
    config = AblationConfig(out_dir=tmp_path / "ablation", max_new_tokens=8, batch_size=4, bootstrap=200)
    real_factory, built = _default_writer_factory(config), []
    config.writer_factory = lambda model, adapter: built.append(model) or real_factory(model, adapter)
    with StubOpenAIServer(QAOracle(items, prompts)) as server:
        with LLMClient(LLMConfig(base_url=server.base_url, model="stub", cache_db=tmp_path / "c.sqlite3")) as client:
            table = run_ablation(items, prompts, client, AblationInputs.from_workspace(work, str(default_model_dir)),
                                 config, keys=("dp_kit", "blade"))
    rows = {r["key"]: r for r in table["rows"]}
    assert built == [str(work / "saves" / "kit_full")]  # one load for both rows
    assert rows["dp_kit"]["model_loaded"] is True and rows["blade"]["model_loaded"] is False
    knowledge = {key: [json.loads(line)["knowledge"] for line in (Path(rows[key]["dir"]) / "predictions.jsonl").open()]
                 for key in rows}
    assert knowledge["blade"] == knowledge["dp_kit"] and all(knowledge["dp_kit"])
    assert rows["blade"]["accuracy"] == rows["dp_kit"]["accuracy"]


def test_ablate_cli_rejects_bad_rows_and_skips_missing_checkpoints(demo_data_dir, default_model_dir, tmp_path,
                                                                   isolated_home):
    items = load_qa(demo_data_dir / "demo_qa_test.jsonl", limit=3)
    from blade_plugin.qa.prompts import load_prompts

    env = {"BLADE_DEFAULT_MODEL_DIR": str(default_model_dir), "BLADE_CACHE_DB": str(tmp_path / "c.sqlite3")}
    with StubOpenAIServer(QAOracle(items, load_prompts())) as server:
        common = ["blade-bpo", "ablate", "--test", str(demo_data_dir / "demo_qa_test.jsonl"), "--limit", "3",
                  "--llm-base-url", server.base_url, "--llm-model", "stub"]
        bad = run_cli([*common, "--out", str(tmp_path / "x"), "--rows", "llm,dpkit"], cwd=tmp_path, env=env)
        assert bad.returncode == 1 and "Error: --rows: unknown row(s) dpkit" in bad.stderr
        assert server.request_count == 0  # rejected before any LLM request

        res = run_cli([*common, "--out", str(tmp_path / "abl"), "--rows", "dp,llm,blade"], cwd=tmp_path, env=env)
        assert res.returncode == 0, res.stderr[-2000:]
        table = json.loads((tmp_path / "abl" / "ablation.json").read_text())
        assert [r["key"] for r in table["rows"]] == ["llm", "dp", "blade"]  # table order, not argument order
        assert table["rows"][1]["skipped"] == "no DP checkpoint" and "skipped" in table["rows"][2]
        assert table["rows"][0]["n"] == 3 and server.request_count == 3
        assert "| LLM alone |" in res.stdout and "Skipped:" in res.stdout
