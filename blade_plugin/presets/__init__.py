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
