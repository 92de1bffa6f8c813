from __future__ import annotations

import shutil

import pytest

from blade_plugin.extras.errors import BladeInputError
from blade_plugin.extras.paths import templates_dir
from blade_plugin.qa.prompts import load_prompts
from blade_plugin.qa.data import QAItem

ITEM = QAItem("1", "Which enzyme does aspirin inhibit?", {"A": "COX-1", "B": "ACE"}, ("A",), {})
FREE = QAItem("2", "Capital of France?", None, "Paris", {})


def test_default_prompts_render_all_variables(prompts):
    [kg] = prompts.knowledge_generation(ITEM)
    assert kg["role"] == "user" and "Which enzyme" in kg["content"] and "A. COX-1" in kg["content"]
    assert "Correct answer: A" in kg["content"]
    with_knowledge = prompts.answer(ITEM, "Aspirin acetylates COX-1.")[0]["content"]
    baseline = prompts.answer(ITEM, "")[0]["content"]
    assert "Aspirin acetylates COX-1." in with_knowledge and "knowledge" not in baseline.lower()
    assert "Answer: X" in baseline
    assert prompts.small_model_query(ITEM).endswith("B. ACE")
    assert "Options" not in prompts.small_model_query(FREE)


@pytest.mark.parametrize("variant, marker", [("zh_legal", "法律"), ("zh_medical", "医学")])
def test_chinese_variants(variant, marker):
    p = load_prompts(variant=variant)
    assert marker in p.knowledge_generation(ITEM)[0]["content"]
    assert "答案：X" in p.answer(ITEM, "")[0]["content"]


def test_edited_copy_changes_rendering_and_system_message(tmp_path):
    mine = tmp_path / "templates"
    shutil.copytree(templates_dir(), mine)
    (mine / "small_model_query.j2").write_text("Q: {{ question }}")
    (mine / "system.j2").write_text("You are a careful pharmacist.")
    p = load_prompts(mine)
    assert p.small_model_query(ITEM) == "Q: Which enzyme does aspirin inhibit?"
    assert p.answer(ITEM, "")[0] == {"role": "system", "content": "You are a careful pharmacist."}


def test_unknown_variable_fails_at_load_naming_the_file(tmp_path):
    mine = tmp_path / "templates"
    shutil.copytree(templates_dir(), mine)
    (mine / "answer.j2").write_text("{{ question }} {{ gold_answer }}")
    with pytest.raises(BladeInputError) as err:
        load_prompts(mine)
    assert str(err.value).startswith(str(mine / "answer.j2"))
    assert "gold_answer" in str(err.value)


def test_syntax_error_reports_file_and_line(tmp_path):
    mine = tmp_path / "templates"
    shutil.copytree(templates_dir(), mine)
    (mine / "knowledge_generation.j2").write_text("line one\n{% if question %}\nno endif")
    with pytest.raises(BladeInputError, match=r"knowledge_generation.j2:\d+: template syntax error"):
        load_prompts(mine)


def test_missing_template_and_unknown_variant(tmp_path):
    with pytest.raises(BladeInputError, match="template missing"):
        load_prompts(tmp_path)
    with pytest.raises(BladeInputError, match="variants here: zh_legal, zh_medical"):
        load_prompts(variant="fr_tax")


def test_sandbox_blocks_attribute_escape(tmp_path):
    mine = tmp_path / "templates"
    shutil.copytree(templates_dir(), mine)
    (mine / "small_model_query.j2").write_text("{{ question.__class__.__mro__ }}")
    p = load_prompts(mine)
    with pytest.raises(BladeInputError, match=r"small_model_query.j2: template error: access to attribute .* unsafe"):
        p.small_model_query(ITEM)
