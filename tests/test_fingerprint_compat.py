"""One fingerprint recipe (runs.fingerprint.job_fingerprint) for knowledge, evaluate and optimize, with the
part names progress files saved before it existed: their digests were computed by the three former
recipes (commit 53596ea) on the same inputs, and an old KIT progress file resumes."""

from __future__ import annotations

import json

from blade_plugin.qa.data import QAItem
from blade_plugin.qa.prompts import load_prompts
from blade_plugin.runs.fingerprint import job_fingerprint
from blade_plugin.runs.job_log import JobLog
from blade_plugin.stages.evaluation import EvalConfig, eval_fingerprint
from blade_plugin.stages.kit import kit_fingerprint

TEMPLATES = {"knowledge_generation.j2": "K {{ question }} {{ answer }}", "answer.j2": "A {{ question }} {{ knowledge }}",
             "small_model_query.j2": "Q {{ question }}", "system.j2": "S"}
ITEMS = [QAItem("1", "Which?", {"A": "x", "B": "y"}, ("B",)), QAItem("2", "Why?", None, "because")]
LLM = {"backend": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m", "temperature": 0.0, "max_tokens": 64}
# Written by the pre-refactor code: stages.kit.job_fingerprint(ITEMS, prompts, LLM).to_json()
OLD_KIT_HEADER = {"digest": "01f3c9a1e3d4c475", "parts": {
    "items": "d7bee15815c69cf3", "template answer.j2": "dc3a1c002e4b7d45",
    "template knowledge_generation.j2": "8f5b5bfdab9eb59f", "template system.j2": "dd6a2f9bc70c04ec",
    "llm endpoint": ["openai", "http://127.0.0.1:1/v1"], "llm model": "m",
    "llm sampling": {"max_tokens": 64, "temperature": 0.0}}}


def _prompts(tmp_path):
    for name, text in TEMPLATES.items():
        (tmp_path / name).write_text(text)
    return load_prompts(tmp_path)


def test_kit_fingerprint_matches_the_old_recipe_and_an_old_file_resumes(tmp_path):
    prompts = _prompts(tmp_path)
    assert kit_fingerprint(ITEMS, prompts, LLM).to_json() == OLD_KIT_HEADER
    path = tmp_path / "kit.jsonl.progress.jsonl"
    path.write_text(json.dumps({"type": "header", "fingerprint": OLD_KIT_HEADER}) + "\n"
                    + json.dumps({"type": "item", "id": "1", "kept": True}) + "\n")
    done = JobLog(path, kit_fingerprint(ITEMS, prompts, LLM)).load(key=lambda row: row["id"])
    assert list(done) == ["1"]


def test_evaluate_fingerprint_matches_the_old_recipe(tmp_path):
    config = EvalConfig(out_dir=tmp_path, modes=("llm",), fingerprint_extra={
        "small_model": {"path": "s"}, "adapter": None, "template": "qwen", "max_new_tokens": 32, "soft_prompt": None})
    assert eval_fingerprint(ITEMS, _prompts(tmp_path), config, LLM).to_json()["digest"] == "1977d0c8a64abe8a"


def test_optimize_fingerprint_matches_the_old_inline_recipe(tmp_path):
    prompts = _prompts(tmp_path)
    fingerprint = job_fingerprint(
        items={"dev_items": ITEMS[:1], "rescore_items": ITEMS[1:]}, prompts=prompts,
        template_names=tuple(n for n in prompts.template_names if n != "knowledge_generation.j2"),
        templates_part="templates", llm=LLM, llm_part="llm", rescore_source="holdout:0.25",
        small_model={"path": "s"}, adapter=None, chat_template="qwen", max_new_tokens=32, init="random", scale=0.5,
        answer_format="text")
    assert fingerprint.to_json()["digest"] == "d903a7ba8006260d"
