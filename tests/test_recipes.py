"""The bundled DP and KIT recipes train for real with `llamafactory-cli train` on the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import run_cli

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "yaml_recipes"
RECIPE_NAMES = ["blade_dp_full.yaml", "blade_dp_lora.yaml", "blade_kit_full.yaml", "blade_kit_lora.yaml"]


def _recipes() -> list[Path]:
    """The shipped recipes, exactly (a glob that matched nothing would let every loop below pass)."""
    paths = sorted(RECIPES.glob("blade_*.yaml"))
    assert [p.name for p in paths] == RECIPE_NAMES
    return paths


def _generate(model, tokenizer, text: str) -> str:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["blade_dp_full", "blade_dp_lora", "blade_kit_full", "blade_kit_lora"])
def test_recipe_runs_two_steps_and_output_loads(recipe, tmp_path, default_model_dir):
    out_dir = tmp_path / "out"
    result = run_cli(
        ["llamafactory-cli", "train", str(RECIPES / f"{recipe}.yaml"), "max_steps=2", f"output_dir={out_dir}",
         "per_device_train_batch_size=1", "gradient_accumulation_steps=1", "cutoff_len=128",
         "save_strategy=no"],  # the README's documented override, written exactly as a user types it
        cwd=tmp_path,  # no data/ here: the bundled demo datasets must resolve through the hook
        env={"BLADE_DEFAULT_MODEL_DIR": str(default_model_dir)},
    )
    assert result.returncode == 0, (result.stdout[-3000:] + result.stderr[-3000:])
    state = json.loads((out_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert not list(out_dir.glob("checkpoint-*"))  # only the final model is saved

    from transformers import AutoModelForCausalLM, AutoTokenizer

    if recipe.endswith("lora"):
        from peft import PeftModel

        assert (out_dir / "adapter_model.safetensors").is_file()
        base = AutoModelForCausalLM.from_pretrained(default_model_dir)
        model = PeftModel.from_pretrained(base, out_dir)
    else:
        assert (out_dir / "model.safetensors").is_file()
        model = AutoModelForCausalLM.from_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    assert _generate(model.eval(), tokenizer, "Name one antibiotic.").strip()


def test_recipes_are_cpu_safe_by_default():
    import yaml

    for path in _recipes():
        cfg = yaml.safe_load(path.read_text())
        assert "deepspeed" not in cfg, path
        assert cfg["preprocessing_num_workers"] == 1 and cfg["dataloader_num_workers"] == 0, path
        assert cfg["model_name_or_path"] == "${blade:default_model}", path
        assert cfg["stage"] == ("pt" if "_dp_" in path.name else "sft"), path


def test_bare_no_override_reaches_transformers_as_the_string_no():
    """OmegaConf reads `save_strategy=no` as False (YAML 1.1); our read_args wrapper hands "no" on."""
    import llamafactory.hparams.parser as parser
    from omegaconf import OmegaConf
    from transformers.trainer_utils import SaveStrategy

    assert OmegaConf.to_container(OmegaConf.from_cli(["save_strategy=no"])) == {"save_strategy": False}
    from blade_plugin.lf.registry import patch_read_args

    patch_read_args(parser)  # idempotent when the .pth hook already did it
    import sys

    argv = sys.argv
    try:
        sys.argv = ["llamafactory-cli", str(RECIPES / "blade_kit_lora.yaml"), "save_strategy=no",
                    "eval_strategy=no", "plot_loss=no"]
        args = parser.read_args()
    finally:
        sys.argv = argv
    assert args["save_strategy"] == "no" and SaveStrategy(args["save_strategy"]) is SaveStrategy.NO
    assert args["eval_strategy"] == "no"
    assert args["plot_loss"] is False  # a real boolean stays a boolean


def test_recipes_save_only_the_final_model_and_do_not_pack():
    import yaml

    for path in _recipes():
        cfg = yaml.safe_load(path.read_text())
        assert cfg["save_strategy"] == "no", path
        if cfg["stage"] == "pt":
            assert cfg["packing"] is False, path  # one document = one example for small corpora


PRESET_RECIPES = RECIPES / "presets"
# What a CPU run must override in the GPU recipes: the DeepSpeed config, bf16, the hub model id; sizes kept small.
GPU_OVERRIDES = ["deepspeed=null", "bf16=false"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(p.stem for p in PRESET_RECIPES.glob("*.yaml")))
def test_preset_recipe_trains_one_step_on_the_embedded_model(recipe, tmp_path, default_model_dir):
    out_dir = tmp_path / "out"
    dataset = "blade_demo_corpus" if "_dp_" in recipe else "blade_demo_kit"
    overrides = GPU_OVERRIDES if recipe.startswith("qwen") else []
    result = run_cli(
        ["llamafactory-cli", "train", str(PRESET_RECIPES / f"{recipe}.yaml"), "max_steps=1",
         f"model_name_or_path={default_model_dir}", f"dataset={dataset}", f"output_dir={out_dir}",
         "per_device_train_batch_size=1", "gradient_accumulation_steps=1", "cutoff_len=128",
         "warmup_ratio=0", *overrides],  # the one step at the recipe's lr, not at warm-up's 0
        cwd=tmp_path,
    )
    assert result.returncode == 0, (result.stdout[-3000:] + result.stderr[-3000:])
    state = json.loads((out_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 1
    assert (out_dir / "model.safetensors").is_file()
    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(out_dir)
    base = AutoModelForCausalLM.from_pretrained(default_model_dir)
    changed = [name for name, p in trained.named_parameters()
               if not torch.equal(p, dict(base.named_parameters())[name])]
    assert changed  # one optimiser step moved weights
    if "freeze" in recipe:  # freeze tuning: only the top 10 of 30 decoder layers may move
        assert all(any(f".layers.{i}." in name for i in range(20, 30)) for name in changed), changed[:5]
