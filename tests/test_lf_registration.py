"""The .pth hook makes a plain LLaMA-Factory process see our templates, datasets and placeholders."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest

from blade_plugin.lf.hook import PTH_LINE, PTH_NAME
from helpers import python_in_subprocess

REPO = Path(__file__).resolve().parents[1]

PROBE_TEMPLATES = (
    "import llamafactory.data.template as t; "
    "print(sorted(n for n in t.TEMPLATES if n.startswith('blade_')))"
)


def test_pth_file_is_installed_and_matches_repo():
    assert (REPO / PTH_NAME).read_text() == PTH_LINE
    installed = Path(sysconfig.get_paths()["purelib"]) / PTH_NAME
    assert installed.is_file(), "run `blade-bpo hook install` after an editable install"
    assert installed.read_text() == PTH_LINE


def test_templates_registered_in_fresh_interpreter_from_any_cwd(tmp_path):
    result = python_in_subprocess(PROBE_TEMPLATES, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "['blade_chatml', 'blade_qwen']"


@pytest.mark.slow
def test_off_switch_disables_registration(tmp_path):
    result = python_in_subprocess(PROBE_TEMPLATES, cwd=tmp_path, env={"BLADE_PLUGIN_DISABLE_HOOK": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_blade_chatml_template_matches_model_chat_format(tmp_path, default_model_dir):
    code = (
        "from transformers import AutoTokenizer\n"
        "import llamafactory.data.template as t\n"
        f"tok = AutoTokenizer.from_pretrained({str(default_model_dir)!r})\n"
        "tpl = t.TEMPLATES['blade_chatml']\n"
        "ids, _ = tpl.encode_oneturn(tok, [{'role':'user','content':'Hi'},{'role':'assistant','content':''}])\n"
        "print(repr(tok.decode(ids)))\n"
        "print(tpl.get_stop_token_ids(tok))\n"
    )
    result = python_in_subprocess(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    prompt, stops = result.stdout.strip().splitlines()[-2:]
    assert prompt == repr("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert stops == "[2]"  # <|im_end|>


@pytest.mark.slow
def test_bundled_datasets_resolve_without_local_dataset_info(tmp_path):
    code = (
        "from llamafactory.data.parser import get_dataset_list\n"
        "for a in get_dataset_list(['blade_demo_corpus', 'blade_demo_kit'], 'data'):\n"
        "    print(a.load_from, a.dataset_name, a.formatting, a.prompt)\n"
    )
    result = python_in_subprocess(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.strip().splitlines()[-2:]]
    assert [r[0] for r in rows] == ["file", "file"]
    assert all(Path(r[1]).is_absolute() and Path(r[1]).is_file() for r in rows)
    assert rows[0][3] == "text" and rows[1][2] == "alpaca"


@pytest.mark.slow
def test_user_dataset_info_entry_wins_over_bundled(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "mine.jsonl").write_text('{"text": "hello"}\n')
    (data / "dataset_info.json").write_text(json.dumps(
        {"blade_demo_corpus": {"file_name": "mine.jsonl", "columns": {"prompt": "text"}}}))
    code = (
        "from llamafactory.data.parser import get_dataset_list\n"
        "print(get_dataset_list(['blade_demo_corpus'], 'data')[0].dataset_name)\n"
    )
    result = python_in_subprocess(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "mine.jsonl"


@pytest.mark.slow
def test_recipe_placeholders_expand_through_read_args(tmp_path, default_model_dir):
    code = (
        "import sys\n"
        "sys.argv = ['x', sys.argv[1], 'deepspeed=${blade:recipes}/ds_z2_config.json']\n"
        "from llamafactory.hparams import read_args\n"
        "args = read_args()\n"
        "print(args['model_name_or_path']); print(args['deepspeed'])\n"
    )
    recipe = REPO / "yaml_recipes" / "blade_dp_full.yaml"
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code, str(recipe)], cwd=tmp_path, capture_output=True, text=True,
                            env={**__import__("os").environ, "BLADE_DEFAULT_MODEL_DIR": str(default_model_dir)})
    assert result.returncode == 0, result.stderr[-2000:]
    model_path, ds_path = result.stdout.strip().splitlines()[-2:]
    assert Path(model_path) == default_model_dir
    assert Path(ds_path).is_file() and json.loads(Path(ds_path).read_text())["zero_optimization"]["stage"] == 2


@pytest.mark.slow
def test_a_recipe_typo_through_the_hook_is_one_line_naming_file_line_and_key(tmp_path):
    """`llamafactory-cli train` with a mistyped key (in the recipe or as an override) or broken YAML: one line
    naming the file, the line and the key, not transformers' traceback."""
    from helpers import run_cli

    recipe = tmp_path / "r.yaml"
    recipe.write_text("model_name_or_path: x\nstage: pt\nnum_train_epoch: 3\n", encoding="utf-8")
    typo = run_cli(["llamafactory-cli", "train", str(recipe)], cwd=tmp_path)
    assert typo.returncode != 0
    assert typo.stderr.strip().splitlines() == [
        f"llamafactory-cli: {recipe}:3: field 'num_train_epoch': unknown key (did you mean 'num_train_epochs'?)"]
    recipe.write_text("model_name_or_path: x\nstage: pt\n", encoding="utf-8")
    override = run_cli(["llamafactory-cli", "train", str(recipe), "lerning_rate=1e-4"], cwd=tmp_path)
    assert override.stderr.strip().splitlines() == [
        "llamafactory-cli: command line: field 'lerning_rate': unknown key (did you mean 'learning_rate'?)"]
    broken = tmp_path / "b.yaml"
    broken.write_text("stage: pt\ndataset: [a\n", encoding="utf-8")
    bad = run_cli(["llamafactory-cli", "train", str(broken)], cwd=tmp_path)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    assert bad.stderr.startswith(f"llamafactory-cli: {broken}:3: cannot read the recipe")
