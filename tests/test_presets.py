"""`blade-bpo init --preset jec-qa|mlec-qa`: the workspace, its README commands, the paper recipes, the
paper-layout ablation table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from blade_plugin.cli import cli
from blade_plugin.extras.errors import BladeError
from blade_plugin.qa.data import QAItem
from blade_plugin.stages.workspace import init_workspace

REPO = Path(__file__).resolve().parents[1]
PRESET_RECIPES = REPO / "yaml_recipes" / "presets"


def _commands(readme: str, heading: str) -> list[str]:
    """The shell commands of the first ```bash block after `heading`, continuation lines joined."""
    block = readme.split(heading, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    joined = re.sub(r"\\\n\s*", "", block)
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_jecqa_preset_workspace(tmp_path):
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "w"), "--preset", "jec-qa"])
    assert result.exit_code == 0, result.output
    w = tmp_path / "w"
    for name in ("answer.j2", "knowledge_generation.j2", "small_model_query.j2"):  # the zh_legal prompts
        assert (w / "templates" / name).read_bytes() == (REPO / "templates" / "zh_legal" / name).read_bytes()
    assert json.loads((w / "data" / "dataset_info.json").read_text()) == {}  # no demo data
    assert not list((w / "data").glob("demo_*"))
    recipes = {p.name for p in (w / "recipes").iterdir()}
    assert {"qwen2.5-0.5b_dp_paper.yaml", "qwen2.5-1.5b_kit_paper.yaml", "cpu_dp_freeze.yaml",
            "ds_z2_config.json", "ds_z3_config.json"} <= recipes
    readme = (w / "README.md").read_text()
    split = next(c for c in _commands(readme, "## 1. Data") if c.startswith("blade-bpo split"))
    assert split.startswith("blade-bpo split raw/0_train.json raw/1_train.json --out-dir data ")
    assert "--seed 0" in split and "--group-by type" in split
    bpo = _commands(readme, "## 4. BPO")[0]
    for flag in ("--n-tokens 5", "--d 10", "--n-init 5", "--q 20", "--iterations 2", "--selection-guard",
                 "--max-new-tokens 512"):
        assert flag in bpo
    evaluate, ablate = _commands(readme, "## 5. Evaluate")
    assert evaluate.endswith("--group-by type") and "--layout paper --group-by type" in ablate
    assert all("--dry-run" in c for c in _commands(readme, "## 6. The bill"))
    # the BPO bill: 200 dev questions, a quarter held out: (1 + 5 + 40) x 150 + (3 + 1) x 50
    assert "+ 4 x 50 =\n7100 answer calls" in readme
    smoke = _commands(readme, "## CPU smoke run")
    assert smoke[0] == "SMALL=$(blade-bpo model default)"
    assert [c.split()[1] for c in smoke if c.startswith("blade-bpo")] == ["split", "knowledge", "optimize", "ablate"]
    assert sum(c.startswith("llamafactory-cli train recipes/cpu_") for c in smoke) == 3  # DP, KIT, KIT on base
    # the workspace refuses to be written twice
    again = CliRunner().invoke(cli, ["init", str(w), "--preset", "jec-qa"])
    assert again.exit_code != 0 and "refusing to overwrite" in str(again.exception or again.output)


def test_mlecqa_preset_uses_medical_prompts_and_qtype(tmp_path):
    init_workspace(tmp_path / "m", preset="mlec-qa")
    assert (tmp_path / "m" / "templates" / "answer.j2").read_bytes() == \
        (REPO / "templates" / "zh_medical" / "answer.j2").read_bytes()
    readme = (tmp_path / "m" / "README.md").read_text()
    assert "--group-by qtype" in readme and "--group-by type " not in readme
    with pytest.raises(BladeError, match="uses the zh_medical prompts"):
        init_workspace(tmp_path / "x", variant="zh_legal", preset="mlec-qa")
    with pytest.raises(BladeError, match="unknown preset"):
        init_workspace(tmp_path / "y", preset="medqa")


# The reference settings, typed in from the seed README's two llamafactory-cli commands (not read from code).
REFERENCE = {
    "dp": {"stage": "pt", "finetuning_type": "full", "learning_rate": 5e-6, "num_train_epochs": 10.0,
           "per_device_train_batch_size": 4, "gradient_accumulation_steps": 8, "lr_scheduler_type": "cosine"},
    "kit": {"stage": "sft", "finetuning_type": "full", "learning_rate": 5e-5, "num_train_epochs": 10.0,
            "per_device_train_batch_size": 4, "gradient_accumulation_steps": 4, "lr_scheduler_type": "cosine"},
}


@pytest.mark.parametrize("size", ["0.5b", "1.5b"])
@pytest.mark.parametrize("stage", ["dp", "kit"])
def test_paper_recipes_carry_the_reference_settings(size, stage):
    cfg = yaml.safe_load((PRESET_RECIPES / f"qwen2.5-{size}_{stage}_paper.yaml").read_text())
    assert {k: cfg[k] for k in REFERENCE[stage]} == REFERENCE[stage]
    assert cfg["deepspeed"] == "${blade:recipes}/ds_z%d_config.json" % (2 if stage == "dp" else 3)
    assert cfg["bf16"] is True and cfg["save_strategy"] == "no"
    if stage == "dp":
        assert cfg["model_name_or_path"] == f"Qwen/Qwen2.5-{size.upper()}"


def test_cpu_recipes_carry_the_measured_small_corpus_settings():
    dp = yaml.safe_load((PRESET_RECIPES / "cpu_dp_freeze.yaml").read_text())
    kit = yaml.safe_load((PRESET_RECIPES / "cpu_kit_freeze.yaml").read_text())
    for cfg in (dp, kit):
        assert cfg["finetuning_type"] == "freeze" and cfg["freeze_trainable_layers"] == 10
        assert cfg["disable_gradient_checkpointing"] is True and "deepspeed" not in cfg
    assert (dp["learning_rate"], dp["num_train_epochs"], dp["per_device_train_batch_size"]) == (1e-3, 6.0, 4)
    assert (kit["learning_rate"], kit["num_train_epochs"], kit["per_device_train_batch_size"]) == (3e-4, 5.0, 8)


def _row(tmp_path: Path, key: str, correct: dict[str, bool]) -> dict:
    d = tmp_path / key
    d.mkdir()
    (d / "predictions.jsonl").write_text("".join(json.dumps({"id": i, "correct": c}) + "\n" for i, c in correct.items()))
    return {"key": key, "title": key, "dir": str(d)}


def test_paper_layout_maps_rows_and_counts_per_type(tmp_path):
    from blade_plugin.stages.paper_layout import paper_table, render_paper_markdown

    items = [QAItem(f"q{i}", "题", {"A": "x", "B": "y"}, ("A",), {"type": t}) for i, t in enumerate("00011")]
    table = {"rows": [
        _row(tmp_path, "llm", {"q0": False, "q1": False, "q2": True, "q3": False, "q4": False}),
        {"key": "base", "title": "base", "skipped": "not asked"},
        _row(tmp_path, "dp", {"q0": True, "q1": False, "q2": True, "q3": False, "q4": False}),
        _row(tmp_path, "kit", {"q0": True, "q1": True, "q2": True, "q3": True, "q4": False}),
        _row(tmp_path, "dp_kit", {"q0": True, "q1": True, "q2": True, "q3": True, "q4": True}),
        {"key": "blade", "title": "blade", "skipped": "no BPO soft prompt"},
    ]}
    paper = paper_table(table, items, "type")
    assert paper["groups"] == [("0", 3), ("1", 2)]
    rows = {r["paper"]: r for r in paper["rows"]}
    assert [r["paper"] for r in paper["rows"]] == ["LLM alone", "w/o DP", "w/o KIT", "w/o BPO", "BLADE"]
    assert rows["w/o DP"]["key"] == "kit" and rows["w/o KIT"]["key"] == "dp"
    # by hand: kit is right on q0-q3: type 0 3/3, type 1 1/2, all 4/5
    assert rows["w/o DP"]["accuracy"] == {"all": 0.8, "0": 1.0, "1": 0.5}
    assert rows["w/o KIT"]["accuracy"] == {"all": 0.4, "0": 2 / 3, "1": 0.0}
    assert rows["LLM alone"]["accuracy"] == {"all": 0.2, "0": 1 / 3, "1": 0.0}
    assert rows["w/o BPO"]["vs_llm"]["accuracy_diff"] == pytest.approx(0.8)
    assert rows["BLADE"]["skipped"] == "no BPO soft prompt"
    text = render_paper_markdown(paper)
    assert "| type KD (knowledge-driven) (n=3) | type CA (case analysis) (n=2) |" in text
    assert "| w/o DP | 0.800 | 1.000 | 0.500 |" in text
    assert "| BLADE | - | - | - | - |" in text


def test_ablate_group_by_a_field_no_item_has_fails_before_any_work(tmp_path):
    test = tmp_path / "test.json"
    test.write_text(json.dumps({"answer": ["A"], "id": "1", "option_list": {"A": "甲", "B": "乙"}, "statement": "题",
                                "type": "0"}, ensure_ascii=False) + "\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["ablate", "--test", str(test), "--out", str(tmp_path / "out"), "--rows", "llm",
                                      "--layout", "paper", "--group-by", "subject", "--llm-backend", "reader"])
    assert result.exit_code != 0
    assert "--group-by subject: no item in" in str(result.exception) and "fields: source, type" in str(result.exception)
    assert not (tmp_path / "out").exists()
