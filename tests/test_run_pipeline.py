"""`blade-bpo run` as a new user meets it, on a small domain this test writes itself (not a bundled one): `init`,
the data lines of blade.yaml edited, `run`; a second run sends nothing and trains nothing; a run SIGKILLed inside
each stage and started again ends with the files of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from blade_plugin.qa.data import load_qa
from blade_testing.openai_stub_server import StubOpenAIServer
from blade_testing.scripted_llm import QAOracle
from helpers import BIN, run_cli

SHIPS = ["Marrowgale", "Tessaly", "Quillon", "Brannoch", "Velspar", "Odrine", "Kestrava", "Lumbrel", "Fennick",
         "Ysolde", "Harrowmere", "Calvath", "Drossel", "Imbrey", "Nuthaven", "Sorrel Dawn"]
PORTS = ["Gullwick", "Saltcombe", "Herrow Bay", "Pellingford", "Oskarth", "Vane Harbour", "Drum Quay", "Lanterby"]
CARGO = ["slate", "tallow", "indigo", "cork", "whale oil", "copper wire", "barley", "rope pitch"]


def write_domain(root: Path) -> dict[str, Path]:
    """An invented harbour registry: a corpus and train/dev/test questions, `kind` trained or corpus_only."""
    rng = random.Random(7)
    facts = [(ship, rng.choice(PORTS), rng.choice(CARGO)) for ship in SHIPS]
    corpus = [f"The {s} is registered at {p} and carries {c} along the coast." for s, p, c in facts]
    corpus += [f"Harbour notes: the {s} unloads {c} at {p} each spring." for s, p, c in facts[:8]]

    def question(i: int, phrasing: int, kind: str) -> dict:
        ship, port, _ = facts[i]
        wrong = rng.sample([p for p in PORTS if p != port], 3)
        letters = ["A", "B", "C", "D"]
        rng.shuffle(options := [port, *wrong])
        text = [f"Which port is the {ship} registered at?", f"Where does the {ship} have its home port?"][phrasing]
        return {"id": f"q{i}-{phrasing}", "question": text, "options": dict(zip(letters, options)),
                "answer": letters[options.index(port)], "kind": kind}

    splits = {"train": [question(i, 0, "trained") for i in range(6)],
              "dev": [question(i, 1, "trained") for i in range(2)] + [question(i, 0, "corpus_only") for i in (8, 9)],
              "test": [question(i, 1, "trained") for i in range(2, 5)]
              + [question(i, 0, "corpus_only") for i in (10, 11, 12)]}
    root.mkdir(parents=True)
    files = {"corpus": root / "registry.jsonl"}
    files["corpus"].write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus), encoding="utf-8")
    for name, rows in splits.items():
        files[name] = root / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return files


# Small step budgets (command-line overrides, as a user would try it first); grounded KIT is off because the
# scripted LLM knows the ungrounded knowledge-generation prompts exactly (grounded KIT: tests/test_demo.py).
BUDGET = ["dp_max_steps=2", "kit_max_steps=2", "bpo_init=1", "bpo_iterations=1", "max_new_tokens=8", "kit_replay=4",
          "kit_grounded=false", "kit_passages=false"]
STAGE_LINES = ["[1/6] DP", "[2/6] Probe", "[3/6] KIT data", "[4/6] KIT training", "[5/6] BPO", "[6/6] Ablation"]
# timing fields, and the accounting of what one invocation paid (a killed run had paid for some answers before)
TIMING = re.compile(r"second|_s$|time|elapsed|started|finished|duration|usage|cost|latency|mtime|llm_calls|"
                    r"cache_hits|_tokens$|^digest$")
# an ablation row's folder is named by a digest of its model's identity, which holds the model's path (so do
# the digests of the progress files' headers; their parts are compared)
ROW_DIGEST = re.compile(r"\b((?:rows/)?(?:llm|base|dp|kit|dp_kit|blade|retrieval|passages\+knowledge|knowledge-as-query|"
                        r"knowledge-from-passages))-[0-9a-f]{16}\b")


def _without_timing(value):
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if not TIMING.search(k)}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def _outputs(out: Path) -> dict[str, object]:
    """Every file a run leaves that carries results, timing fields aside: model weights and soft prompts by
    their tensors, JSON and JSONL by their values."""
    import hashlib

    import torch
    from safetensors.torch import load_file

    found = {}
    for path in sorted(out.rglob("*")):
        rel = ROW_DIGEST.sub(r"\1", str(path.relative_to(out)))
        if not path.is_file() or rel.startswith(("logs/", "report.")) or "trainer_log" in rel \
                or rel.endswith(("trainer_state.json", "all_results.json", "train_results.json", ".png", ".lock")):
            continue
        if path.suffix == ".safetensors":  # each tensor by a digest of its bytes (a 135M model as lists: GBs)
            found[rel] = {k: hashlib.sha256(v.contiguous().view(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
                          for k, v in load_file(path).items()}
        elif path.suffix == ".json":
            found[rel] = _without_timing(json.loads(ROW_DIGEST.sub(r"\1", path.read_text(encoding="utf-8").replace(
                str(out), "OUT"))))
        elif path.suffix == ".jsonl":
            text = ROW_DIGEST.sub(r"\1", path.read_text(encoding="utf-8").replace(str(out), "OUT"))
            rows = [_without_timing(json.loads(line)) for line in text.splitlines() if line]
            # progress files are written in completion order under concurrency: compare them as sets
            found[rel] = sorted(json.dumps(r, sort_keys=True) for r in rows) if "progress" in rel else rows
        elif path.suffix in (".md", ".j2", ".txt", ".yaml"):
            found[rel] = TIMING.sub("", path.read_text(encoding="utf-8")) if path.suffix != ".md" else None
    return found


def _run_killed_in(stage_line: str, args: list[str], cwd: Path, env: dict, log: Path) -> bool:
    """Start the run and SIGKILL its process group once it logs `stage_line`; False if it finished first."""
    with open(log, "w") as err:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    deadline = time.time() + 900
    while proc.poll() is None and time.time() < deadline:
        if stage_line in log.read_text(errors="replace"):
            time.sleep(1.0)  # inside the stage: its work has begun
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            return True
        time.sleep(0.1)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the run never reached {stage_line!r}: {log.read_text()[-2000:]}")
    return False


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_a_new_user_runs_blade_on_their_own_domain(tmp_path, default_model_dir, prompts):
    from blade_plugin.stages.workspace import init_workspace

    work = tmp_path / "ws"
    init_workspace(work)
    files = write_domain(work / "mine")
    # the four data lines edited, as a user would in an editor
    text = (work / "blade.yaml").read_text(encoding="utf-8")
    for key, path in files.items():
        text, n = re.subn(rf"^{key}: \S+", f"{key}: mine/{path.name}", text, flags=re.M)
        assert n == 1, key
    (work / "blade.yaml").write_text(text, encoding="utf-8")
    items = [it for name in ("train", "dev", "test") for it in load_qa(files[name])]
    env = {**os.environ, "BLADE_DEFAULT_MODEL_DIR": str(default_model_dir)}
    with StubOpenAIServer(QAOracle(items, prompts)) as server:
        llm = ["--llm-base-url", server.base_url, "--llm-model", "stub"]
        args = [str(BIN / "blade-bpo"), "run", "blade.yaml", *BUDGET, *llm]
        first = run_cli([*args, "--cache-db", str(tmp_path / "a.sqlite3")], cwd=work, env=env, timeout=1500)
        assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
        report = json.loads((work / "blade_run" / "report.json").read_text())
        rows = [row["key"] for row in report["ablation"]]
        assert rows == ["llm", "base", "dp", "kit", "dp_kit", "blade", "retrieval", "passages+knowledge",
                        "knowledge-as-query"]
        assert all(set(row["groups"]) == {"trained", "corpus_only"} for row in report["ablation"])
        assert report["ran_this_time"] == ["dp", "probe", "kit_data", "kit", "bpo", "ablation"]
        assert report["kit"]["kept"] == 6 and report["dp_probe"]["n"] > 0
        md = (work / "blade_run" / "report.md").read_text()
        assert "| LLM alone |" in md and "By kind" in md and "peak MB" in md and "kept" in md
        for name, path in report["artifacts"].items():
            assert Path(path).exists(), name
        assert "By kind:" in first.stdout and "Artifacts:" in first.stdout

        # a second run: every stage finished with the same inputs, so no request and no training
        server.reset_stats()
        again = run_cli([*args, "--cache-db", str(tmp_path / "a.sqlite3")], cwd=work, env=env, timeout=900)
        assert again.returncode == 0, again.stderr[-3000:]
        assert server.request_count == 0
        assert not any(line in again.stderr for line in STAGE_LINES)
        assert json.loads((work / "blade_run" / "report.json").read_text())["ran_this_time"] == []

        # the same run into another output_dir, SIGKILLed inside each stage in turn and started again
        killed_args = [*args, "output_dir=blade_killed", "--cache-db", str(tmp_path / "b.sqlite3")]
        for n, line in enumerate(STAGE_LINES):
            assert _run_killed_in(line, killed_args, work, env, tmp_path / f"kill{n}.log"), line
        server.settle()
        last = run_cli(killed_args, cwd=work, env=env, timeout=1500)
        assert last.returncode == 0, last.stderr[-3000:]
    assert _outputs(work / "blade_killed") == _outputs(work / "blade_run")
