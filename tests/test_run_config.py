"""blade.yaml (hparams/pipeline_config.py): what `init` writes loads as it is; every bad key, type, path or QA line
is one error naming file, line and key before anything runs; LLaMA-Factory keys pass through to the trainings."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from blade_plugin.extras.errors import BladeError, BladeInputError
from blade_plugin.hparams.pipeline_args import PipelineArguments
from blade_plugin.hparams.pipeline_config import load_pipeline_config
from helpers import run_cli

DATA_LINES = ("corpus", "train", "dev", "test")


@pytest.fixture()
def workspace(tmp_path) -> Path:
    from blade_plugin.stages.workspace import init_workspace

    init_workspace(tmp_path / "w")
    return tmp_path / "w"


def test_init_writes_a_blade_yaml_with_every_key_commented_that_loads_with_the_demo_defaults(workspace):
    text = (workspace / "blade.yaml").read_text(encoding="utf-8")
    lines = {line.split(":", 1)[0]: line for line in text.splitlines() if line and not line.startswith("#")}
    for f in fields(PipelineArguments):
        assert f.name in lines, f.name
        assert "  # " in lines[f.name], f"{f.name} has no comment"
    config = load_pipeline_config(workspace / "blade.yaml")
    a = config.args
    assert a.corpus == str(workspace / "data" / "demo_corpus.jsonl")  # relative to the YAML's folder
    assert a.output_dir == str(workspace / "blade_run")
    assert a.templates_dir == str(workspace / "templates")
    # the demo's measured settings (docs/evidence.md), not the stand-alone commands' general defaults
    assert (a.finetuning_type, a.freeze_trainable_layers, a.dp_learning_rate, a.dp_packing, a.dp_cutoff_len) == \
        ("freeze", 10, 1e-3, True, 64)
    assert (a.kit_grounded, a.kit_replay, a.kit_num_train_epochs, a.max_new_tokens, a.group_by) == \
        (True, 54, 5.0, None, "kind")
    # the small model's query is the question alone (the LLM still sees the options)
    query = (workspace / "templates" / "small_model_query.j2").read_text(encoding="utf-8")
    assert "{{ question }}" in query and "options" not in query.split("-#}")[-1]


def test_run_help_lists_every_key(tmp_path):
    result = run_cli(["blade-bpo", "run", "--help"], cwd=tmp_path)
    assert result.returncode == 0
    flat = " ".join(result.stdout.split())
    for f in fields(PipelineArguments):
        assert f"{f.name} [" in flat, f.name


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("body, line, key, words", [
    ("dp_epoch: 3\n", 6, "dp_epoch", "did you mean 'dp_num_train_epochs'"),
    ("kit_learning_rat: 1.0e-4\n", 6, "kit_learning_rat", "did you mean 'kit_learning_rate'"),
    ("seed: -1\n", 6, "seed", "must be >= 0"),
    ("kit_replay: many\n", 6, "kit_replay", "expected a whole number"),
    ("dp_packing: 1\n", 6, "dp_packing", "expected true or false"),
    ("probe: maybe\n", 6, "probe", "is not one of auto, true, false"),
    ("dataset: mine\n", 6, "dataset", "set by `blade-bpo run`"),
    ("seed: 1\nseed: 2\n", 7, "seed", "given twice (first on line 6)"),
    ("dp_learning_rate: .nan\n", 6, "dp_learning_rate", "finite"),
])
def test_a_bad_key_is_one_error_naming_file_line_and_key(workspace, body, line, key, words):
    base = (workspace / "blade.yaml").read_text(encoding="utf-8").splitlines()
    data = [line for line in base if line.split(":")[0] in DATA_LINES]
    path = _write(workspace / "mine.yaml", "# mine\n" + "\n".join(data) + "\n" + body)
    with pytest.raises(BladeInputError) as err:
        load_pipeline_config(path)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), line, key)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_missing_paths_and_keys_and_yaml_syntax_name_their_line(workspace):
    path = _write(workspace / "a.yaml", "corpus: data/demo_corpus.jsonl\ntrain: data/nope.jsonl\n"
                                        "dev: data/demo_qa_dev.jsonl\ntest: data/demo_qa_test.jsonl\n")
    with pytest.raises(BladeInputError, match=r"a\.yaml:2: field 'train': .*nope\.jsonl does not exist"):
        load_pipeline_config(path)
    path = _write(workspace / "b.yaml", "corpus: data/demo_corpus.jsonl\ntrain: data/demo_qa_train.jsonl\n")
    with pytest.raises(BladeInputError, match=r"b\.yaml: field 'dev': required key missing or empty: dev, test"):
        load_pipeline_config(path)
    path = _write(workspace / "c.yaml", "corpus: data/demo_corpus.jsonl\ntrain: [data/x\n")
    with pytest.raises(BladeInputError, match=r"c\.yaml:3: YAML syntax error"):
        load_pipeline_config(path)
    with pytest.raises(BladeInputError, match="command line: field 'seeed': unknown key"):
        load_pipeline_config(workspace / "blade.yaml", ["seeed=1"])
    with pytest.raises(BladeInputError, match="command line: expected key=value"):
        load_pipeline_config(workspace / "blade.yaml", ["seed"])


def test_llamafactory_keys_pass_through_to_both_or_one_training(workspace):
    from blade_plugin.stages.train import train_overrides

    path = _write(workspace / "gpu.yaml", (workspace / "blade.yaml").read_text(encoding="utf-8")
                  + "bf16: true\nlora_rank: 16\nkit_lora_rank: 32\ndp_warmup_ratio: 0.1\n")
    config = load_pipeline_config(path, ["finetuning_type=lora", "kit_learning_rate=5.0e-5", "deepspeed=ds.json"])
    dp, kit = train_overrides(config, "dp"), train_overrides(config, "kit")
    assert dp["bf16"] is True and kit["bf16"] is True and dp["deepspeed"] == kit["deepspeed"] == "ds.json"
    assert (dp["lora_rank"], kit["lora_rank"]) == (16, 32)  # kit_lora_rank wins for KIT only
    assert dp["warmup_ratio"] == 0.1 and "warmup_ratio" not in kit
    assert kit["learning_rate"] == 5e-5 and dp["learning_rate"] == 1e-3
    assert "freeze_trainable_layers" not in dp  # a freeze setting, not a LoRA one
    assert (dp["cutoff_len"], dp["packing"], kit["cutoff_len"], kit["template"]) == (64, True, 256, "blade_chatml")


def test_the_preset_blade_yaml_holds_the_paper_settings(tmp_path):
    from blade_plugin.stages.train import train_overrides
    from blade_plugin.stages.workspace import init_workspace

    init_workspace(tmp_path / "p", preset="jec-qa")
    with pytest.raises(BladeInputError, match=r"blade\.yaml:\d+: field 'corpus': .*does not exist"):
        load_pipeline_config(tmp_path / "p" / "blade.yaml")  # `split` has not written the data yet
    for name in ("corpus", "train", "dev", "test"):  # what `split` writes
        (tmp_path / "p" / "data" / f"{name}.jsonl").write_text("{}\n")
    config = load_pipeline_config(tmp_path / "p" / "blade.yaml")
    a = config.args
    assert (a.prompt_variant, a.group_by, a.kit_grounded, a.kit_replay, a.max_new_tokens) == \
        ("zh_legal", "type", False, 0, 512)
    assert (a.bpo_init, a.bpo_iterations, a.n_tokens, a.d) == (5, 40, 5, 10)  # 45 evaluations, as the reference
    dp, kit = train_overrides(config, "dp"), train_overrides(config, "kit")
    assert (dp["learning_rate"], dp["num_train_epochs"], dp["gradient_accumulation_steps"]) == (5e-6, 10.0, 8)
    assert (kit["learning_rate"], kit["num_train_epochs"], kit["gradient_accumulation_steps"]) == (5e-5, 10.0, 4)
    assert dp["finetuning_type"] == "full"


def test_run_refuses_bad_input_in_one_line_before_anything_is_written(workspace, tmp_path):
    bad_qa = workspace / "data" / "bad.jsonl"
    lines = (workspace / "data" / "demo_qa_test.jsonl").read_text(encoding="utf-8").splitlines()[:3]
    lines[1] = lines[1].replace('"answer": "', '"answer": "Z')
    bad_qa.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {"BLADE_CACHE_DB": str(tmp_path / "cache.sqlite3")}
    result = run_cli(["blade-bpo", "run", "blade.yaml", "test=data/bad.jsonl"], cwd=workspace, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert "bad.jsonl:2: field 'answer'" in result.stderr
    assert not (workspace / "blade_run").exists()
    for body, words in (("dp_epochs: 3\n", "blade.yaml:"), ):
        (workspace / "blade.yaml").write_text((workspace / "blade.yaml").read_text() + body)
        result = run_cli(["blade-bpo", "run", "blade.yaml"], cwd=workspace, env=env)
        assert result.returncode == 1 and "field 'dp_epochs': unknown key" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr
    assert not (workspace / "blade_run").exists()


def test_the_dry_run_predicts_the_kit_requests_exactly_and_writes_nothing(workspace, tmp_path):
    """On a user's own small domain: the KIT generation prompts are known before the run (exact tokens); BPO and
    the ablation are bounds. Nothing is written, no request is sent (the reader is offline anyway)."""
    plan_file = tmp_path / "plan.json"
    result = run_cli(["blade-bpo", "run", "blade.yaml", "limit=5", "--dry-run-json", str(plan_file)], cwd=workspace,
                     env={"BLADE_CACHE_DB": str(tmp_path / "cache.sqlite3")})
    assert result.returncode == 0, result.stderr
    plan = json.loads(plan_file.read_text())
    # 7 rows and the 3 combined rows (kit_passages is on by default)
    assert [p["requests"] for p in plan["phases"]] == [5, 5, (1 + 2 + 2) * 5, (7 + 3) * 5]
    assert not (workspace / "blade_run").exists()


def test_only_refuses_a_stage_whose_inputs_have_not_finished(workspace):
    from blade_plugin.stages.pipeline import run_pipeline

    config = load_pipeline_config(workspace / "blade.yaml", ["llm_backend=reader"])
    with pytest.raises(BladeError, match=r"stage 'dp' has not finished .* --until dp first"):
        run_pipeline(config, type("C", (), {"backend": "reader"})(), only="bpo")
