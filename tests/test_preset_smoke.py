"""The jec-qa preset end to end on the real JEC-QA sample, on CPU: `blade-bpo init --preset jec-qa`, then the
workspace README's "CPU smoke run" block exactly as written (split -> DP -> KIT data -> KIT -> KIT on base ->
BPO -> ablate in the paper layout per type), with the embedded model and the offline evidence reader."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers import BIN, shared_data_dir

JECQA = shared_data_dir("jecqa")
SAMPLE = JECQA / "0_train_lines401-1000.json"


def _smoke_block(readme: str) -> str:
    return readme.split("## CPU smoke run", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
@pytest.mark.timeout(3300)  # longer than its subprocess limit (3000 s)
@pytest.mark.skipif(not SAMPLE.is_file(), reason=f"real JEC-QA sample not found at {SAMPLE} (../shared beside the "
                    "checkout, or $BLADE_SHARED_DIR)")
def test_jecqa_preset_readme_smoke_run_on_the_real_sample(tmp_path, default_model_dir):
    work = tmp_path / "w"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "BLADE_CACHE_DB": str(tmp_path / "llm_cache.sqlite3"), "BLADE_DEFAULT_MODEL_DIR": str(default_model_dir),
           "LLAMAFACTORY_VERBOSITY": "WARN"}
    init = subprocess.run([str(BIN / "blade-bpo"), "init", str(work), "--preset", "jec-qa"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    (work / "raw" / "0_train.json").symlink_to(SAMPLE)  # "put the raw file in raw/": read in place, not copied
    script = "set -euo pipefail\n" + _smoke_block((work / "README.md").read_text(encoding="utf-8"))
    run = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=3000)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]

    # split: 600 records, dev 6 + test 6, the raw records kept (the type field too), counts reported
    manifest = json.loads((work / "data/smoke/split.json").read_text())
    assert manifest["counts"] == {"train": {"0": 588}, "dev": {"0": 6}, "test": {"0": 6}}
    assert "train: 588 records" in run.stdout and "(type 0: 588)" in run.stdout
    raw_lines = set(SAMPLE.read_text(encoding="utf-8").splitlines())
    test_lines = (work / "data/smoke/test.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(test_lines) == 6 and set(test_lines) <= raw_lines

    # KIT data from the reader (it writes the correct option's text); the models were trained and saved
    kit = [json.loads(line) for line in (work / "data/smoke/kit.jsonl").read_text(encoding="utf-8").splitlines()]
    assert kit and all(row["output"] for row in kit)
    for model in ("dp", "kit_full", "kit_base_full"):
        state = json.loads((work / "saves/smoke" / model / "trainer_state.json").read_text())
        assert state["global_step"] == 2, model
    # BPO: the reference's 5 x 10 search space, the guard's choice written
    summary = json.loads((work / "runs/smoke/bpo/summary.json").read_text())
    assert summary["n_evaluations"] == 3 and summary["baseline"] is not None
    assert (work / "runs/smoke/bpo/selected_soft_prompt.safetensors").is_file()
    assert "selection guard:" in run.stdout

    # the paper-layout table per type, consistent with the full ablation table it was derived from
    table = json.loads((work / "runs/smoke/ablation/ablation.json").read_text())
    paper = json.loads((work / "runs/smoke/ablation/ablation_paper.json").read_text())
    assert paper["group_by"] == "type" and paper["groups"] == [["0", 6]]
    assert [r["paper"] for r in paper["rows"]] == ["LLM alone", "w/o DP", "w/o KIT", "w/o BPO", "BLADE"]
    full = {row["key"]: row for row in table["rows"]}
    for row in paper["rows"]:
        assert "skipped" not in row, row
        assert row["accuracy"]["all"] == pytest.approx(full[row["key"]]["accuracy"], abs=1e-4)  # ablation.json rounds
        assert row["accuracy"]["0"] == pytest.approx(full[row["key"]]["correct"] / 6)
    printed = (work / "runs/smoke/ablation/ablation_paper.md").read_text(encoding="utf-8")
    assert "| configuration | all (n=6) | type KD (knowledge-driven) (n=6) |" in printed
    assert printed in run.stdout  # the table is what the command printed
