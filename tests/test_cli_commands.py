"""The CLI paths no other test runs, as a user runs them (real `blade-bpo` subprocesses): `hook` into a
throw-away venv, `model` refusing what is not its own, `serve` option errors, `merge` with a bad adapter,
`answer` with bad stdin. Each failure is one line naming the input and the fix, before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from blade_plugin.lf.hook import PTH_LINE, PTH_NAME
from helpers import BIN, run_cli

WORKTREE = Path(__file__).resolve().parents[1]


def blade(args: list[str], cwd: Path, stdin: str | bytes | None = None, env: dict | None = None,
          python: str | None = None) -> subprocess.CompletedProcess:
    """`blade-bpo ARGS` (or `python -m blade_plugin.cli` under another interpreter), stdin given."""
    command = [python, "-m", "blade_plugin.cli", *args] if python else [str(BIN / "blade-bpo"), *args]
    data = stdin.encode() if isinstance(stdin, str) else stdin
    result = subprocess.run(command, cwd=cwd, env={**os.environ, **(env or {})}, input=data, capture_output=True,
                            timeout=600)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(errors="replace"),
                                       result.stderr.decode(errors="replace"))


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


# --- hook ----------------------------------------------------------------------------------------------
@pytest.fixture()
def scratch_venv(tmp_path) -> tuple[str, Path, dict]:
    """A new venv (no pip) whose interpreter sees this worktree and the shared venv's packages through
    PYTHONPATH, so `hook` writes into *its* site-packages; the shared venv is never touched."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    env = {"PYTHONPATH": os.pathsep.join([str(WORKTREE), sysconfig.get_paths()["purelib"]])}
    return python, Path(purelib), env


def test_hook_install_status_uninstall_in_a_scratch_venv(scratch_venv, tmp_path):
    python, site, env = scratch_venv
    shared = Path(sysconfig.get_paths()["purelib"]) / PTH_NAME
    shared_before = shared.read_bytes() if shared.exists() else None
    pth = site / PTH_NAME
    assert str(site).startswith(str(tmp_path)) and not pth.exists()

    status = blade(["hook", "status"], tmp_path, env=env, python=python)
    assert status.returncode == 0, status.stderr
    assert f".pth file: {pth} (MISSING: run blade-bpo hook install)" in status.stdout
    # without the .pth a fresh interpreter's LLaMA-Factory knows nothing of ours
    assert "templates registered, datasets patched (fresh interpreter): False False" in status.stdout

    install = blade(["hook", "install"], tmp_path, env=env, python=python)
    assert install.returncode == 0 and install.stdout.strip() == f"installed {pth}"
    assert pth.read_text(encoding="utf-8") == PTH_LINE
    status = blade(["hook", "status"], tmp_path, env=env, python=python)
    assert f".pth file: {pth} (present)" in status.stdout
    assert "templates registered, datasets patched (fresh interpreter): True True" in status.stdout
    # plain llamafactory code in that venv now sees our template
    probe = subprocess.run([python, "-c", "import llamafactory.data.template as t; print('blade_chatml' in t.TEMPLATES)"],
                           env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert probe.stdout.strip() == "True", probe.stderr[-2000:]

    uninstall = blade(["hook", "uninstall"], tmp_path, env=env, python=python)
    assert uninstall.stdout.strip() == f"removed {pth}" and not pth.exists()
    again = blade(["hook", "uninstall"], tmp_path, env=env, python=python)
    assert again.returncode == 0 and again.stdout.strip() == f"not installed: {pth}"
    assert (shared.read_bytes() if shared.exists() else None) == shared_before  # the shared venv is untouched


# --- model ---------------------------------------------------------------------------------------------
def test_model_default_refuses_a_foreign_directory_even_with_force(tmp_path):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    for extra in ([], ["--force"]):
        result = blade(["model", "default", "--dest", str(dest), *extra], tmp_path)
        assert result.returncode == 1
        assert last_line(result) == (f"Error: {dest.resolve()} exists and is not a blade-materialised model "
                                     "directory; pick another --dest")
        assert [p.name for p in dest.iterdir()] == ["notes.txt"] and (dest / "notes.txt").read_text() == "keep me"


def test_model_default_dest_that_is_a_file_and_unknown_subcommands(tmp_path):
    afile = tmp_path / "a.txt"
    afile.write_text("x")
    result = blade(["model", "default", "--dest", str(afile)], tmp_path)
    assert result.returncode == 2 and f"Directory '{afile}' is a file." in result.stderr
    assert afile.read_text() == "x"
    result = blade(["model", "download"], tmp_path)
    assert result.returncode == 2 and "No such command 'download'" in result.stderr


def test_model_default_into_an_existing_copy_is_instant_and_keeps_it(default_model_dir, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in default_model_dir.iterdir()}
    result = blade(["model", "default", "--dest", str(default_model_dir)], tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == str(default_model_dir)
    assert {p.name: p.stat().st_mtime_ns for p in default_model_dir.iterdir()} == before


# --- serve ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, env, code, message", [
    ([], {"OPENAI_BASE_URL": ""}, 2, "serve needs an upstream LLM: pass --llm-base-url or set OPENAI_BASE_URL"),
    (["--llm-base-url", "http://127.0.0.1:9/v1", "--api-key-env", "BLADE_TEST_NO_SUCH_KEY"], {}, 1,
     "Error: --api-key-env BLADE_TEST_NO_SUCH_KEY: the environment variable is unset or empty"),
    (["--llm-base-url", "http://127.0.0.1:9/v1", "--api-key-env", "BLADE_TEST_BLANK_KEY"],
     {"BLADE_TEST_BLANK_KEY": "  "}, 1, "Error: --api-key-env BLADE_TEST_BLANK_KEY: the environment variable is "
                                       "unset or empty"),
    (["--llm-base-url", "http://127.0.0.1:9/v1", "--port", "70000"], {}, 2,
     "Invalid value for '--port': 70000 is not in the range 1<=x<=65535."),
    (["--llm-base-url", "http://127.0.0.1:9/v1", "--max-queue", "0"], {}, 2,
     "Invalid value for '--max-queue': 0 is not in the range x>=1."),
    (["--llm-base-url", "http://127.0.0.1:9/v1", "--max-body-bytes", "10"], {}, 2,
     "Invalid value for '--max-body-bytes': 10 is not in the range x>=1024."),
    (["--llm-base-url", "http://127.0.0.1:9/v1", "--batch-size", "0"], {}, 2,
     "Invalid value for '--batch-size': 0 is not in the range x>=1."),
    (["--llm-base-url", "http://127.0.0.1:9/v1", "--soft-prompt", "missing.safetensors"], {}, 2,
     "Invalid value for '--soft-prompt': File 'missing.safetensors' does not exist."),
])
def test_serve_option_errors_come_before_the_model_loads(tmp_path, args, env, code, message):
    result = blade(["serve", *args], tmp_path, env=env)
    assert result.returncode == code
    assert message in result.stderr and "Traceback" not in result.stderr
    assert "Loading" not in result.stderr and "BLADE serving" not in result.stderr


# --- merge ---------------------------------------------------------------------------------------------
def _merge(default_model_dir, adapter: Path, out: Path, cwd: Path):
    return blade(["merge", "--model", str(default_model_dir), "--adapter", str(adapter), "--out", str(out)], cwd)


@pytest.mark.parametrize("files, message", [
    ({}, "not a LoRA adapter directory (no adapter_config.json)"),
    ({"adapter_config.json": "{not json"}, "adapter_config.json is not valid JSON (Expecting property name"),
    ({"adapter_config.json": json.dumps({"peft_type": "PREFIX_TUNING"})},
     "adapter_config.json is a PREFIX_TUNING adapter, not LoRA"),
    ({"adapter_config.json": "[]"}, "adapter_config.json is a typeless adapter, not LoRA"),
    ({"adapter_config.json": json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"]})},
     "no adapter weights (adapter_model.safetensors)"),
])
def test_merge_refuses_a_bad_adapter_before_loading_anything(default_model_dir, tmp_path, files, message):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    for name, text in files.items():
        (adapter / name).write_text(text)
    out = tmp_path / "merged"
    result = _merge(default_model_dir, adapter, out, tmp_path)
    assert result.returncode == 1 and last_line(result).startswith(f"Error: --adapter {adapter}: {message}")
    assert not out.exists() and not list(tmp_path.glob(".merged.merging-*"))


def test_merge_of_an_adapter_for_another_model_is_one_line_and_leaves_nothing(default_model_dir, tmp_path):
    """A LoRA whose shapes do not fit the base (trained on another model): peft's size-mismatch error, on one
    line naming both directories, and no half-written output."""
    import torch
    from safetensors.torch import save_file

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"],
        "base_model_name_or_path": "another-model", "lora_dropout": 0.0, "bias": "none"}))
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 1000),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(1000, 4)},
              str(adapter / "adapter_model.safetensors"))
    out = tmp_path / "merged"
    result = _merge(default_model_dir, adapter, out, tmp_path)
    assert result.returncode == 1, result.stdout[-1000:]
    line = last_line(result)
    assert line.startswith(f"Error: --adapter {adapter}: cannot be applied to --model {default_model_dir}: ")
    assert "size mismatch" in line and "Traceback" not in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".merged.merging-*"))


# --- answer --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stdin, message", [
    ('{"question": "Q1?"}\n{"question": \n', "Error: <stdin>:2: invalid JSON (Expecting value)"),
    ('{"question": "Q1?"}\n["not", "an", "object"]\n', "Error: <stdin>:2: expected a JSON object, got an array"),
    ('{"options": {"A": "x"}}\n', "Error: <stdin>:1: field 'question': missing"),
    ('{"question": "Q?", "options": 5}\n', "Error: <stdin>:1: field 'options': expected a non-empty object"),
    ('{"question": "Q?", "options": {"AB": "x"}}\n', "Error: <stdin>:1: field 'options': option key 'AB' is not"),
    ("\n\n", "Error: <stdin>: no JSONL items (one {\"question\", \"options\"} object per line)"),
    (b'{"question": "Q1?"}\n{"question": "caf\xe9?"}\n', "Error: <stdin>:2: not UTF-8 text (byte 0xe9)"),
])
def test_answer_refuses_bad_stdin_in_one_line(tmp_path, stub_llm, stdin, message):
    result = blade(["answer", "--no-knowledge", "--llm-base-url", stub_llm.base_url, "--llm-model", "stub",
                    "--no-cache"], tmp_path, stdin=stdin)
    assert result.returncode == 1, result.stdout
    assert last_line(result).startswith(message) and "Traceback" not in result.stderr
    assert stub_llm.request_count == 0 and result.stdout == ""  # nothing asked, nothing half-printed


def test_answer_with_options_but_no_letter_is_a_usage_error(tmp_path):
    result = run_cli(["blade-bpo", "answer", "--question", "Q?", "--option", "=x", "--no-knowledge",
                      "--llm-base-url", "http://127.0.0.1:9/v1", "--llm-model", "stub"], cwd=tmp_path)
    assert result.returncode == 2 and "expected LETTER=TEXT" in result.stderr


def test_every_option_has_help_and_every_environment_variable_is_in_the_help():
    """A newcomer reads `--help`: every visible option says what it does, an option that reads an environment
    variable shows it, and every BLADE_*/OPENAI_* variable the package reads appears in some command's help."""
    import re
    from pathlib import Path

    import click

    from blade_plugin.cli import COMMANDS, cli

    ctx = click.Context(cli)
    helps, silent = [], []

    def walk(cmd: click.Command, name: str) -> None:
        helps.append(cmd.get_help(click.Context(cmd, info_name=name, parent=ctx)))
        if isinstance(cmd, click.Group):
            for sub_name, sub in cmd.commands.items():
                walk(sub, f"{name} {sub_name}")
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.hidden:
                if not param.help or (param.envvar and not param.show_envvar):
                    silent.append(f"{name} {param.opts[0]}")

    for command in COMMANDS:
        walk(cli.get_command(ctx, command), command)
    assert silent == []
    shown = " ".join(helps)
    package = Path(__file__).resolve().parents[1] / "blade_plugin"
    read = set()
    for path in package.rglob("*.py"):
        if "testing" in path.parts:  # the test servers' own knobs are not the commands'
            continue
        read |= set(re.findall(r"[\"'$]((?:BLADE|OPENAI)_[A-Z_]+)\b", path.read_text(encoding="utf-8")))
    assert {"BLADE_HOME", "BLADE_PROGRESS_INTERVAL", "BLADE_DEFAULT_MODEL_DIR", "OPENAI_BASE_URL"} <= read
    assert sorted(v for v in read if v not in shown) == []
