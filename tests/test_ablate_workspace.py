"""`ablate --workspace OUTPUT_DIR` on a `blade-bpo run` folder queries the models as the run trained them: the run's
templates (its small-model query is question-only, the bundled one lists the options), chat template and knowledge
length, unless an option says otherwise. Checked on what a real HTTP server received and on the tokenizer's count."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from blade_testing.openai_stub_server import StubOpenAIServer

MARKER = "Answer from the workspace's own template."


def _run_folder(tmp_path, default_model_dir):
    from blade_plugin.extras.paths import templates_dir

    run = tmp_path / "blade_run"
    templates = run / "templates"
    shutil.copytree(templates_dir(), templates, ignore=shutil.ignore_patterns("zh_*"))
    answer = templates / "answer.j2"
    answer.write_text(f"{MARKER}\n" + answer.read_text(encoding="utf-8"), encoding="utf-8")
    (run / "saves").mkdir()
    (run / "saves" / "dp").symlink_to(default_model_dir, target_is_directory=True)
    (run / "report.json").write_text(json.dumps({
        "settings": {"template": "blade_chatml"}, "kit": {"max_new_tokens": 5},
        "artifacts": {"templates": str(templates)}}), encoding="utf-8")
    return run


def _ablate(run, demo_data_dir, out, *extra):
    from blade_plugin.cli import cli
    from blade_plugin.llm.reader import EvidenceReader

    with StubOpenAIServer(EvidenceReader(), models=("reader",)) as server:
        result = CliRunner().invoke(cli, [
            "ablate", "--workspace", str(run), "--test", str(demo_data_dir / "demo_qa_test.jsonl"), "--limit", "2",
            "--out", str(out), "--rows", "dp", "--bootstrap", "100", "--llm-base-url", server.base_url,
            "--llm-model", "reader", "--no-cache", *extra])
        sent = [r["messages"][-1]["content"] for r in server.requests if r.get("messages")]
    assert result.exit_code == 0, result.output + repr(result.exception)
    row = json.loads((out / "ablation.json").read_text())["rows"][0]
    knowledge = [json.loads(line)["knowledge"] for line in open(f"{row['dir']}/predictions.jsonl", encoding="utf-8")]
    return sent, knowledge


def test_ablate_takes_the_runs_templates_and_knowledge_length(tmp_path, demo_data_dir, default_model_dir,
                                                               isolated_home):
    from transformers import AutoTokenizer

    run = _run_folder(tmp_path, default_model_dir)
    sent, knowledge = _ablate(run, demo_data_dir, tmp_path / "a")
    assert len(sent) == 2 and all(text.startswith(MARKER) for text in sent)
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    lengths = [len(tokenizer(k, add_special_tokens=False)["input_ids"]) for k in knowledge]
    assert all(k for k in knowledge) and max(lengths) <= 5 + 1  # 5 new tokens (+1: decode/re-encode may split)

    # options win: the bundled templates and a longer knowledge
    from blade_plugin.extras.paths import templates_dir

    sent, knowledge = _ablate(run, demo_data_dir, tmp_path / "b", "--templates-dir", str(templates_dir()),
                              "--max-new-tokens", "24")
    assert len(sent) == 2 and not any(MARKER in text for text in sent)
    assert max(len(tokenizer(k, add_special_tokens=False)["input_ids"]) for k in knowledge) > 6


def test_a_workspace_without_a_report_keeps_the_defaults(tmp_path):
    from blade_plugin.stages.report import run_defaults

    assert run_defaults(tmp_path) == {}
    (tmp_path / "report.json").write_text("[1, 2]", encoding="utf-8")  # not a run's report
    assert run_defaults(tmp_path) == {}
    (tmp_path / "report.json").write_text(json.dumps({"artifacts": {"templates": str(tmp_path / "gone")},
                                                      "settings": {"template": "blade_qwen"}}), encoding="utf-8")
    assert run_defaults(tmp_path) == {"template": "blade_qwen"}  # a templates folder that is gone is not used
