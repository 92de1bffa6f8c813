"""Nothing a user owns is overwritten and every output is checked before the first LLM request: an output that
is (or would replace) an input, an unwritable directory, a bad dataset name; rewritten files keep their mode
and symlinks."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path

import pytest

from blade_plugin.runs.atomic_io import atomic_write_json
from blade_plugin.lf.dataset_info import register_dataset
from blade_testing.openai_stub_server import StubOpenAIServer
from helpers import run_cli


@pytest.fixture()
def train(tmp_path, demo_data_dir) -> Path:
    lines = (demo_data_dir / "demo_qa_train.jsonl").read_text(encoding="utf-8").splitlines()[:3]
    path = tmp_path / "same.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run(server, tmp_path, command, *args):
    return run_cli(["blade-bpo", command, *args, "--llm-base-url", server.base_url, "--llm-model", "stub",
                    "--cache-db", str(tmp_path / "cache.sqlite3"), "--max-retries", "0"],
                   cwd=tmp_path, env={"BLADE_HOME": str(tmp_path / "home")})


def _one_line_error(result) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("out_spelling", ["same.jsonl", "./same.jsonl", "sub/../same.jsonl", "link.jsonl"])
def test_knowledge_refuses_to_overwrite_its_input(tmp_path, train, out_spelling):
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.jsonl").symlink_to(train)
    before = train.read_bytes()
    with StubOpenAIServer() as server:
        line = _one_line_error(_run(server, tmp_path, "knowledge", "--train", "same.jsonl", "--out", out_spelling))
        assert server.request_count == 0
    assert line == (f"Error: --out would write {Path(out_spelling)}, which is the input --train same.jsonl: refusing to "
                    "overwrite an input; choose another output path")
    assert train.read_bytes() == before


def test_knowledge_refuses_an_output_whose_stats_file_is_the_input(tmp_path, train):
    stats_named = tmp_path / "kit.jsonl.stats.json"
    train.rename(stats_named)
    with StubOpenAIServer() as server:
        line = _one_line_error(_run(server, tmp_path, "knowledge", "--train", str(stats_named), "--out", "kit.jsonl"))
        assert server.request_count == 0
    assert "is the input --train" in line and "kit.jsonl.stats.json" in line


def test_evaluate_refuses_test_file_inside_out_dir_with_an_output_name(tmp_path, train):
    run_dir = tmp_path / "D"
    run_dir.mkdir()
    predictions = run_dir / "predictions.jsonl"
    predictions.write_bytes(train.read_bytes())
    with StubOpenAIServer() as server:
        line = _one_line_error(_run(server, tmp_path, "evaluate", "--test", "D/predictions.jsonl", "--out", "D",
                                    "--modes", "llm"))
        assert server.request_count == 0
    assert line.startswith("Error: --out would write D/predictions.jsonl, which is the input --test "
                           "D/predictions.jsonl")
    assert predictions.read_bytes() == train.read_bytes()


def _unwritable_dir(tmp_path) -> Path:
    """A directory this process cannot create files in: chmod 0555 (root ignores that, so /sys for root)."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        return locked
    try:
        with tempfile.TemporaryFile(dir="/sys"):
            pass
    except OSError:
        return Path("/sys")
    pytest.skip("running as root and /sys is writable: no unwritable directory to test with")


@pytest.mark.parametrize("option", ["--out", "--dataset-dir"])
def test_unwritable_outputs_fail_before_any_request(tmp_path, train, option):
    locked = _unwritable_dir(tmp_path)
    args = ["--train", str(train), "--out", str(tmp_path / "kit.jsonl")]
    if option == "--out":
        args[3] = str(locked / "kit.jsonl")
    else:
        args += ["--dataset-dir", str(locked / "data")]
    with StubOpenAIServer() as server:
        line = _one_line_error(_run(server, tmp_path, "knowledge", *args))
        assert server.request_count == 0
    assert line.startswith(f"Error: {option} {locked}/") and f"{locked} is not writable (" in line


def test_out_in_a_directory_that_cannot_be_made_names_both(tmp_path, train):
    locked = _unwritable_dir(tmp_path)
    args = ["--train", str(train), "--out", str(locked / "runs" / "kit.jsonl")]
    with StubOpenAIServer() as server:
        line = _one_line_error(_run(server, tmp_path, "knowledge", *args))
        assert server.request_count == 0
    assert line.startswith(f"Error: --out {locked}/runs/kit.jsonl: cannot create {locked}/runs: "
                           f"{locked} is not writable (")


def test_out_under_a_regular_file_fails_before_any_request(tmp_path, train):
    blocker = tmp_path / "runs"
    blocker.write_text("not a directory\n")
    with StubOpenAIServer() as server:
        line = _one_line_error(_run(server, tmp_path, "evaluate", "--test", str(train), "--out", "runs/eval",
                                    "--modes", "llm"))
        assert server.request_count == 0
    assert line == f"Error: --out runs/eval: cannot create it, {blocker} is a file, not a directory"


def test_bad_dataset_name_fails_before_any_request(tmp_path, train):
    with StubOpenAIServer() as server:
        line = _one_line_error(_run(server, tmp_path, "knowledge", "--train", str(train), "--out", "kit.jsonl",
                                    "--dataset-dir", "data", "--dataset-name", "my kit"))
        assert server.request_count == 0
    assert line == "Error: data/dataset_info.json: field 'name': invalid dataset name 'my kit' (no spaces or commas)"
    assert not (tmp_path / "kit.jsonl").exists()


# --- modes and symlinks of rewritten files ----------------------------------------------------------------
def test_existing_mode_is_kept_and_new_files_follow_the_umask(tmp_path):
    info = tmp_path / "data" / "dataset_info.json"
    info.parent.mkdir()
    info.write_text("{}\n")
    info.chmod(0o644)
    register_dataset("kit", tmp_path / "data" / "kit.jsonl", info.parent)
    assert stat.S_IMODE(info.stat().st_mode) == 0o644
    info.chmod(0o664)
    register_dataset("kit2", tmp_path / "data" / "kit.jsonl", info.parent)
    assert stat.S_IMODE(info.stat().st_mode) == 0o664

    old = os.umask(0o027)
    try:
        atomic_write_json(tmp_path / "new.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o640


def test_symlinked_dataset_info_stays_a_symlink_and_its_target_is_updated(tmp_path):
    shared = tmp_path / "shared" / "dataset_info.json"
    shared.parent.mkdir()
    shared.write_text(json.dumps({"corpus": {"file_name": "c.jsonl"}}) + "\n")
    shared.chmod(0o644)
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_info.json").symlink_to(shared)

    register_dataset("kit", data / "kit.jsonl", data)
    link = data / "dataset_info.json"
    assert link.is_symlink() and os.readlink(link) == str(shared)
    assert json.loads(shared.read_text()) == {"corpus": {"file_name": "c.jsonl"},
                                              # relative to dataset_dir, where LLaMA-Factory resolves it
                                              "kit": {"file_name": "kit.jsonl",
                                                      "formatting": "alpaca", "columns": {
                                                          "prompt": "instruction", "query": "input",
                                                          "response": "output"}}}
    assert stat.S_IMODE(shared.stat().st_mode) == 0o644
    assert sorted(p.name for p in shared.parent.iterdir()) == ["dataset_info.json"]  # no temp files left
