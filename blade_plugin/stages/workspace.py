"""`blade-bpo init`: scaffold a user workspace that the recipes and commands work in."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..extras.errors import BladeError
from ..extras.paths import bundled_data_dir, recipes_dir, templates_dir

WORKSPACE_README = """# BLADE workspace

Run everything from this directory (the recipes use `dataset_dir: data`), with the blade-plugin venv active
(`source <repo>/.venv/bin/activate`). These are the README's Quickstart steps on the demo data:

    # 1. DP: continued pre-training on the corpus
    llamafactory-cli train recipes/blade_dp_full.yaml dataset=blade_demo_corpus output_dir=saves/dp
    # 2. KIT: knowledge from the LLM, grounded in the corpus passages that support each answer (--corpus),
    #    consistency-filtered, registered in data/dataset_info.json
    blade-bpo knowledge --train data/demo_qa_train.jsonl --corpus data/demo_corpus.jsonl --out data/kit.jsonl \\
        --dataset-dir data --dataset-name my_kit --templates-dir templates
    llamafactory-cli train recipes/blade_kit_lora.yaml dataset=my_kit dataset_dir=data model_name_or_path=saves/dp \\
        output_dir=saves/kit
    # 3. BPO: tune the soft prompt against the dev set
    blade-bpo optimize --small-model saves/dp --adapter saves/kit --dev data/demo_qa_dev.jsonl --out runs/bpo \\
        --templates-dir templates
    # 4. Evaluate: LLM alone vs + knowledge vs + BLADE soft prompt
    blade-bpo evaluate --small-model saves/dp --adapter saves/kit --soft-prompt runs/bpo/soft_prompt.safetensors \\
        --test data/demo_qa_test.jsonl --out runs/eval --templates-dir templates --group-by kind
    # 5. The ablation per kind of question, with the plain-retrieval baseline (BM25 over the corpus)
    blade-bpo ablate --dp saves/dp --kit saves/kit --soft-prompt runs/bpo/soft_prompt.safetensors \\
        --test data/demo_qa_test.jsonl --out runs/ablation --templates-dir templates \\
        --group-by kind --corpus data/demo_corpus.jsonl

Edit `templates/*.j2` to change every prompt; replace the demo files in `data/` with your own and
register them in `data/dataset_info.json` (LLaMA-Factory's schema). Raw public datasets with a few unusable
records (e.g. JEC-QA): add `--skip-invalid`.
"""


@dataclass(frozen=True)
class PlannedFile:
    source: Path | None  # None: written from `text`
    target: Path
    text: str | None = None


RAW_README = """Put the raw training file(s) here, unchanged (see ../README.md, step 1). They stay yours: no command
writes into raw/.
"""


def plan_workspace(root: Path, variant: str | None = None, preset: str | None = None) -> list[PlannedFile]:
    """Every file `init` would write, so that conflicts are found before anything is written. A `preset`
    (jec-qa, mlec-qa) brings its own README, prompt variant and paper recipes, and no demo data."""
    chosen = None
    if preset is not None:
        from ..presets import RECIPES_SUBDIR, get_preset, workspace_readme

        chosen = get_preset(preset)
        if variant is not None and variant != chosen.variant:
            raise BladeError(f"--preset {preset} uses the {chosen.variant} prompts; drop --variant {variant}")
        variant = chosen.variant
    readme = workspace_readme(chosen) if chosen else WORKSPACE_README
    planned: list[PlannedFile] = [PlannedFile(None, root / "README.md", readme)]
    recipe_files = sorted(recipes_dir().iterdir())
    if chosen:
        recipe_files += sorted((recipes_dir() / RECIPES_SUBDIR).iterdir())
    for recipe in recipe_files:
        if recipe.is_file() and recipe.suffix in {".yaml", ".yml", ".json"}:
            planned.append(PlannedFile(recipe, root / "recipes" / recipe.name))
    prompt_dir = templates_dir() / variant if variant else templates_dir()
    if not prompt_dir.is_dir():
        known = sorted(p.name for p in templates_dir().iterdir() if p.is_dir())
        raise BladeError(f"unknown template variant {variant!r}; known: {', '.join(known) or 'none'}")
    for template in sorted(prompt_dir.iterdir()):
        if template.is_file() and template.suffix in {".j2", ".md"}:
            planned.append(PlannedFile(template, root / "templates" / template.name))
    if chosen:
        # an empty registry: `split --corpus` and `knowledge --dataset-dir data` add the preset's datasets
        planned += [PlannedFile(None, root / "data" / "dataset_info.json", "{}\n"),
                    PlannedFile(None, root / "raw" / "README.md", RAW_README)]
        return planned
    for data_file in sorted(bundled_data_dir().iterdir()):
        if data_file.is_file() and data_file.suffix in {".json", ".jsonl"}:
            planned.append(PlannedFile(data_file, root / "data" / data_file.name))
    return planned


def init_workspace(root: str | Path, variant: str | None = None, force: bool = False,
                   preset: str | None = None) -> list[Path]:
    """Write the workspace; refuse (writing nothing) if any target exists, unless `force`."""
    root = Path(root)
    planned = plan_workspace(root, variant, preset)
    existing = [p.target for p in planned if p.target.exists()]
    if existing and not force:
        shown = ", ".join(str(p) for p in existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise BladeError(f"refusing to overwrite existing files: {shown} (use --force)")
    written = []
    for item in planned:
        item.target.parent.mkdir(parents=True, exist_ok=True)
        if item.source is None:
            item.target.write_text(item.text or "", encoding="utf-8")
        else:
            shutil.copyfile(item.source, item.target)
        written.append(item.target)
    return written
