"""`blade-bpo init`: scaffold a user workspace that the recipes and commands work in."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..extras.errors import BladeError
from ..extras.paths import bundled_data_dir, recipes_dir, templates_dir

WORKSPACE_README = """# BLADE workspace

`blade.yaml` is the whole run: point its four data lines (`corpus`, `train`, `dev`, `test`) at your files, then,
with the blade-plugin venv active (`source <repo>/.venv/bin/activate`):

    blade-bpo run blade.yaml --dry-run     # the LLM calls, tokens and cost, before anything runs
    blade-bpo run blade.yaml               # DP -> probe -> KIT data -> KIT -> BPO -> ablation; re-run resumes
    blade-bpo run blade.yaml seed=1 output_dir=blade_run_s1     # any key, as llamafactory-cli takes them

As written it runs on the bundled demo domain copied into `data/` (English, generic JSONL; `group_by: kind`).
The report is `blade_run/report.md` (and `report.json`); every key is explained beside it in `blade.yaml` and by
`blade-bpo run --help`. The LLM is `$OPENAI_BASE_URL` / `$OPENAI_API_KEY` / `$BLADE_LLM_MODEL` (or the
`llm_*` keys); without an endpoint the offline evidence reader stands in for it.

`templates/*.j2` are the prompts (`templates_dir: templates`): edit them freely; a stage whose prompts changed
runs again. `recipes/` holds the LLaMA-Factory recipes for running the stages one by one (the repository's
docs/stages.md lists those commands, with the same defaults as `run`).
"""


def blade_yaml_for_workspace(variant: str | None, data_names: dict[str, str] | None, group_by: str | None) -> str:
    """The blade.yaml `init` writes: every key with its help, data lines pointing into the workspace."""
    from ..hparams.pipeline_config import render_blade_yaml

    values = {"templates_dir": "templates", "prompt_variant": variant, "group_by": group_by,
              "output_dir": "blade_run", **(data_names or {})}
    header = ("# blade-bpo run blade.yaml [key=value ...]: the whole BLADE pipeline on your domain.\n"
              "# Edit the four data lines; every other key has the measured default (docs/evidence.md).\n"
              "# Any LLaMA-Factory training key may be added: plain for DP and KIT, dp_KEY / kit_KEY for one.")
    return render_blade_yaml(values, header)


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
    if chosen:
        from ..presets import preset_blade_yaml

        blade_yaml = preset_blade_yaml(chosen)
    else:
        blade_yaml = blade_yaml_for_workspace(variant, {
            "corpus": "data/demo_corpus.jsonl", "train": "data/demo_qa_train.jsonl",
            "dev": "data/demo_qa_dev.jsonl", "test": "data/demo_qa_test.jsonl"}, "kind")
    planned: list[PlannedFile] = [PlannedFile(None, root / "README.md", readme),
                                  PlannedFile(None, root / "blade.yaml", blade_yaml)]
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
    from .pipeline import QUESTION_ONLY_QUERY

    for template in sorted(prompt_dir.iterdir()):
        if template.is_file() and template.suffix in {".j2", ".md"}:
            if template.name == "small_model_query.j2" and not chosen:
                # the measured default: the small model sees the question alone (the LLM sees the options)
                planned.append(PlannedFile(None, root / "templates" / template.name, QUESTION_ONLY_QUERY[variant]))
            else:
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
