"""Paper presets for `blade-bpo init DIR --preset jec-qa|mlec-qa`: the paper's datasets, prompts and settings.

A preset is data: which prompt variant, which raw files and where they go, the field that names the question
type, split sizes, and the recipes to copy. `workspace_readme()` renders the workspace's README.md (one
command per stage) from `workspace_readme.md.j2` next to this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..extras.errors import BladeError

PRESET_DIR = Path(__file__).resolve().parent
RECIPES_SUBDIR = "presets"  # yaml_recipes/presets/: copied into the workspace's recipes/ with the others


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    variant: str  # bundled prompt templates (templates/<variant>/)
    raw_files: tuple[str, ...]  # training files with answers, as their release names them
    raw_source: str  # where a user gets them
    group_by: str  # the record field that names the question type
    group_note: str
    dev: int
    test: int
    seed: int = 0
    smoke_dev: int = 6  # Chinese text is ~2 tokens a character for the embedded model: keep prompts few
    smoke_test: int = 6
    smoke_train: int = 12


PRESETS: dict[str, Preset] = {
    "jec-qa": Preset(
        name="jec-qa", title="JEC-QA (Chinese national judicial examination, multiple answers)",
        variant="zh_legal", raw_files=("0_train.json", "1_train.json"),
        raw_source="the JEC-QA release (Zhong et al., AAAI 2020; jecqa.thunlp.org): `0_train.json` "
                   "(knowledge-driven) and `1_train.json` (case analysis); its test files carry no answers",
        group_by="type", group_note="`type`: 0 knowledge-driven (KD), 1 case analysis (CA)",
        dev=200, test=1000),
    "mlec-qa": Preset(
        name="mlec-qa", title="MLEC-QA (Chinese medical licensing examination, one best answer)",
        variant="zh_medical", raw_files=("train.json",),
        raw_source="the MLEC-QA release (Li et al., EMNLP 2021; github.com/Judenpech/MLEC-QA), one subset's "
                   "training file (Clinic, Stomatology, Public Health, TCM or Chinese Western Medicine)",
        group_by="qtype", group_note="`qtype`: the exam's question type (A1, A2, A3/A4, B1)",
        dev=200, test=1000),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise BladeError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None


def workspace_readme(preset: Preset) -> str:
    """The workspace README.md: one command per stage, the paper's settings, the dry runs, a CPU smoke run."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(PRESET_DIR), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    hold = round(preset.dev * 0.25)  # optimize's default --holdout
    search = preset.dev - hold
    # baseline + 5 Sobol + 2 x 20 proposals on the search part; top 3 candidates + baseline re-scored
    bpo = {"search": search, "hold": hold, "calls": (1 + 5 + 2 * 20) * search + 4 * hold}
    raw_args = " ".join(f"raw/{name}" for name in preset.raw_files)
    return env.get_template("workspace_readme.md.j2").render(p=preset, raw_args=raw_args, bpo=bpo,
                                                             smoke_raw=f"raw/{preset.raw_files[0]}")


def preset_blade_yaml(preset: Preset) -> str:
    """The preset workspace's blade.yaml: the data lines `split` fills in, the paper's prompts and settings (the
    reference code's DP and KIT recipes, BPO's 5 soft tokens, d = 10, 5 Sobol + 40 BO evaluations, 512 new
    tokens), ungrounded KIT without replay as the paper had it; every other key has blade's default."""
    from ..hparams.pipeline_config import render_blade_yaml

    values = {
        "corpus": "data/corpus.jsonl", "train": "data/train.jsonl", "dev": "data/dev.jsonl", "test": "data/test.jsonl",
        "group_by": preset.group_by, "seed": preset.seed, "output_dir": "blade_run",
        "prompt_variant": preset.variant, "templates_dir": "templates", "probe": "false",
        "finetuning_type": "full", "gradient_accumulation_steps": 8,
        "dp_num_train_epochs": 10.0, "dp_learning_rate": 5e-6, "dp_per_device_train_batch_size": 4,
        "dp_cutoff_len": 1024, "dp_packing": False,
        "kit_grounded": False, "kit_replay": 0, "kit_on_base": True,
        "kit_num_train_epochs": 10.0, "kit_learning_rate": 5e-5, "kit_per_device_train_batch_size": 4,
        "kit_cutoff_len": 1024, "max_new_tokens": 512, "bpo_init": 5, "bpo_iterations": 40,
    }
    header = (f"# blade-bpo run blade.yaml: {preset.title}, in the paper's setting.\n"
              "# The data lines are what `blade-bpo split` writes (README.md, step 1). On a GPU with Qwen2.5, set\n"
              "# model_name_or_path to its directory, template: blade_qwen, and uncomment the keys at the end.")
    text = render_blade_yaml(values, header, extra={"kit_gradient_accumulation_steps": 4})
    return text + ("# bf16: true\n"
                   "# dp_deepspeed: ${blade:recipes}/ds_z2_config.json\n"
                   "# kit_deepspeed: ${blade:recipes}/ds_z3_config.json\n")
