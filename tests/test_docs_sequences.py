"""The README Quickstart and docs/stages.md, run command by command in a fresh `init` workspace as a reader would
type them, with the offline reader as the LLM and small step budgets: each does what its text says.

The commands run verbatim through bash, except: `source .venv/bin/activate` is this venv's PATH; the editing step
(a comment) is left as the bundled demo data `init` points at; `blade-bpo run` lines get small budgets appended
(the same ones on every line, so the stages' inputs agree), `evaluate` gets `--limit 4`."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from helpers import BIN

ROOT = Path(__file__).resolve().parents[1]
BUDGET = "limit=4 dp_max_steps=2 kit_max_steps=2 bpo_init=1 bpo_iterations=0 kit_on_base=false max_new_tokens=8"


def bash_block(doc: Path, after_heading: str, index: int = 0) -> list[str]:
    """The commands of the `index`-th bash block under a heading, continuation lines joined, comments dropped."""
    text = doc.read_text(encoding="utf-8")
    section = text[text.index(after_heading):]
    block = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[index]
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"\s+#\s.*$", "", line).strip()
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


def budgeted(command: str, extra: str = "") -> str:
    if command.startswith("blade-bpo run "):
        words = command.split(" --", 1)
        return f"{words[0]} {BUDGET} {extra}".rstrip() + (f" --{words[1]}" if len(words) > 1 else "")
    if command.startswith("blade-bpo evaluate "):
        return command + " --limit 4"
    return command


def budgeted_stages(command: str) -> str:
    return budgeted(command, "kit_passages=false")  # the stages one by one, without the third KIT training (time)


def run(command: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture()
def shell_env(tmp_path, default_model_dir) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_BASE_URL")}
    env.update(PATH=f"{BIN}{os.pathsep}{env['PATH']}", BLADE_DEFAULT_MODEL_DIR=str(default_model_dir),
               BLADE_CACHE_DB=str(tmp_path / "cache.sqlite3"))
    env.pop("BLADE_LLM_MODEL", None)
    return env


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_the_readme_quickstart_runs_as_written(tmp_path, shell_env):
    commands = bash_block(ROOT / "README.md", "## Quickstart: your own domain")
    assert commands[0] == "source .venv/bin/activate" and commands[1] == "blade-bpo init my_blade && cd my_blade"
    run("blade-bpo init my_blade", tmp_path, shell_env)
    work = tmp_path / "my_blade"
    assert (work / "blade.yaml").is_file()
    for command in commands[2:]:
        result = run(budgeted(command), work, shell_env)
        if "--dry-run" in command:  # the bill, and nothing written
            assert "LLM calls" in result.stdout or "calls" in result.stdout
            assert not (work / "blade_run").exists()
    report = json.loads((work / "blade_run" / "report.json").read_text())
    rows = [row["key"] for row in report["ablation"] if not row.get("skipped")]
    # kit_on_base=false: no KIT-only row; kit_passages (the default): the knowledge-from-passages row, its KIT data
    # recording the retrieved passages of each question
    assert rows == ["llm", "base", "dp", "dp_kit", "blade", "retrieval", "passages+knowledge", "knowledge-from-passages",
                    "knowledge-as-query"]
    kit_rows = [json.loads(line) for line in
                (work / "blade_run" / "data" / "kit_knowledge_passages.jsonl").read_text().splitlines()]
    assert kit_rows and all(row["query_passages"] and row["query_passages"][0] in row["instruction"] for row in kit_rows)
    assert (work / "blade_run" / "saves" / "kit_passages_full" / "blade_stage.json").is_file()
    assert "## Ablation" in (work / "blade_run" / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_docs_stages_run_one_by_one_as_written(tmp_path, shell_env):
    run("blade-bpo init w", tmp_path, shell_env)
    work = tmp_path / "w"
    out = work / "blade_run"
    one_by_one = bash_block(ROOT / "docs" / "stages.md", "## One stage at a time")
    assert [c.removeprefix("blade-bpo run blade.yaml").strip() for c in one_by_one] == [
        "--until dp", "--only probe", "--only kit_data --dry-run", "--until kit", ""]
    run(budgeted_stages(one_by_one[0]), work, shell_env)  # DP only
    assert (out / "saves" / "dp" / "blade_stage.json").is_file() and not (out / "data" / "kit_knowledge.jsonl").exists()
    run(budgeted_stages(one_by_one[1]), work, shell_env)  # the probe
    assert json.loads((out / "runs" / "probe.json").read_text())["n"] > 0
    before = sorted(str(p) for p in out.rglob("*"))
    dry = run(budgeted_stages(one_by_one[2]), work, shell_env)  # the KIT requests, exactly; nothing written
    assert "KIT generation" in dry.stdout and sorted(str(p) for p in out.rglob("*")) == before
    run(budgeted_stages(one_by_one[3]), work, shell_env)  # KIT data and training
    assert (out / "saves" / "kit_full" / "blade_stage.json").is_file() and not (out / "runs" / "bpo").exists()
    run(budgeted_stages(one_by_one[4]), work, shell_env)  # the rest
    assert (out / "report.md").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["ran_this_time"] == ["bpo", "ablation"]  # DP and KIT were done: skipped
    for command in bash_block(ROOT / "docs" / "stages.md", "## The stand-alone commands"):
        result = run(budgeted(command), work, shell_env)
        if command.startswith("blade-bpo answer"):
            assert re.search(r"\b[ABCD]\b", result.stdout)
    assert json.loads((work / "runs" / "eval" / "metrics.json").read_text())
