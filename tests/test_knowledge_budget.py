"""The demo's knowledge length from the KIT training data (stages/kit.py knowledge_budget)."""

from __future__ import annotations

import json

from blade_plugin.stages.kit import KNOWLEDGE_BUDGET_RANGE, knowledge_budget


def _kit(tmp_path, outputs):
    path = tmp_path / "kit.jsonl"
    path.write_text("".join(json.dumps({"instruction": "q", "input": "", "output": o}, ensure_ascii=False) + "\n"
                            for o in outputs), encoding="utf-8")
    return path


def test_ninetieth_percentile_of_the_kit_knowledge_tokens(tmp_path, default_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    # " x" is one token of SmolLM2's BPE: output k is k+1 tokens ("x" and k x " x")
    outputs = ["x" + " x" * (25 + 3 * k) for k in range(10)]
    lengths = [len(tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outputs]
    assert lengths == [26 + 3 * k for k in range(10)]
    # by hand: sorted lengths 26, 29, ..., 53; the 0.9 quantile (linear) is 50 + 0.1 * (53 - 50) = 50.3 -> 51
    assert knowledge_budget(_kit(tmp_path, outputs), default_model_dir) == 51


def test_short_english_knowledge_keeps_the_floor_and_a_rambler_hits_the_cap(tmp_path, default_model_dir):
    short = ["Relevant knowledge: The antidote to Lusotrapam poisoning is Tovelamide."] * 5
    assert knowledge_budget(_kit(tmp_path, short), default_model_dir) == KNOWLEDGE_BUDGET_RANGE[0] == 24
    long = ["相关知识：" + "银票挂失由典当监主管。" * 20] * 3
    assert knowledge_budget(_kit(tmp_path, long), default_model_dir) == KNOWLEDGE_BUDGET_RANGE[1] == 64
    assert knowledge_budget(tmp_path / "absent.jsonl", default_model_dir) == 24
