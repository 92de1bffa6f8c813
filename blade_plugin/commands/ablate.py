"""`blade-bpo ablate`: the paper's ablation table (LLM alone, + small LM, + DP, + KIT, + DP + KIT, full BLADE),
the BM25 baseline and the three rows that combine retrieval with the knowledge."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ..cost.options import dry_run_options
from ..extras.constants import GENERATION_BATCH_SIZE
from .arguments import llm_options
from .common import QA_FORMATS, prompt_options
from .grouping_options import (corpus_k_option, corpus_option, group_by_option, passage_chars_option,
                               retrieval_query_option)

logger = logging.getLogger(__name__)
_CKPT = click.Path(exists=True)


@click.command()
@click.option("--test", "test_path", required=True, type=click.Path(dir_okay=False), help="Test QA items.")
@click.option("--format", "fmt", type=QA_FORMATS, default="auto", show_default=True,
              help="QA file format: auto (detected from the first record), generic JSONL, raw JEC-QA (jecqa) or raw MLEC-QA (mlecqa).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for ablation.json, ablation.md, ablation.png and one sub-directory per row.")
@click.option("--workspace", type=click.Path(exists=True, file_okay=False), default=None,
              help="A demo-style workspace: saves/dp, saves/kit_full|kit_lora, saves/kit_base_full|kit_base_lora, "
                   "runs/bpo/selected_soft_prompt.safetensors or soft_prompt.safetensors; a `blade-bpo run` output "
                   "folder also gives its templates, chat template and knowledge length (explicit options win).")
@click.option("--base-model", type=click.Path(exists=True, file_okay=False), default=None,
              help="The small LM before DP (default: the embedded SmolLM2-135M-Instruct).")
@click.option("--dp", type=_CKPT, default=None, help="DP model directory (blade_dp_full output).")
@click.option("--kit", type=_CKPT, default=None,
              help="KIT on the DP model: a LoRA adapter (applied to --dp) or a full model directory.")
@click.option("--kit-base", type=_CKPT, default=None,
              help="KIT on the base model (the 'KIT only' row): a LoRA adapter or a full model directory.")
@click.option("--soft-prompt", type=click.Path(exists=True, dir_okay=False), default=None,
              help="soft_prompt.safetensors from `blade-bpo optimize` on the DP + KIT model.")
@click.option("--kit-passages", type=_CKPT, default=None,
              help="KIT on the DP model trained with retrieved passages in its query (`knowledge --query-corpus`): "
                   "the knowledge-from-passages row (a LoRA adapter or a full model directory).")
@click.option("--soft-prompt-passages", type=click.Path(exists=True, dir_okay=False), default=None,
              help="soft_prompt.safetensors tuned on the --kit-passages model (optional).")
@click.option("--rows", default=None,
              help="Comma-separated subset of llm,base,dp,kit,dp_kit,blade,retrieval,passages+knowledge,"
                   "knowledge-from-passages,knowledge-as-query (default: all; a row whose inputs are missing is "
                   "skipped with a note).")
@corpus_option
@corpus_k_option
@passage_chars_option
@retrieval_query_option
@group_by_option
@click.option("--template", default=None, help="LLaMA-Factory chat template (default: guessed from the model).")
@click.option("--max-new-tokens", type=click.IntRange(1), default=None,
              help="Length of the knowledge the small LM writes (default: the --workspace run's, else 128).")
@click.option("--batch-size", type=click.IntRange(1), default=GENERATION_BATCH_SIZE, show_default=True,
              help="Small-LM generation batch size.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Use only the first N items.")
@click.option("--bootstrap", type=click.IntRange(100), default=2000, show_default=True,
              help="Bootstrap resamples for the CIs.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True,
              help="Seed of the bootstrap resampling (the CIs).")
@click.option("--layout", type=click.Choice(["table", "paper"]), default="table", show_default=True,
              help="paper: also write ablation_paper.md/.json in the paper's rows (LLM alone, w/o DP, w/o KIT, "
                   "w/o BPO, BLADE) and print that table (broken down by --group-by, e.g. raw JEC-QA's type, "
                   "MLEC-QA's qtype).")
@dry_run_options
@prompt_options
@llm_options
def ablate(test_path, fmt, out_dir, workspace, base_model, dp, kit, kit_base, soft_prompt, kit_passages,
           soft_prompt_passages, rows, corpus, corpus_k, passage_chars, retrieval_query, group_by, template, max_new_tokens, batch_size, limit, bootstrap, seed, layout,
           dry_run, dry_run_json, templates_dir, variant, llm_args) -> None:
    """One row per pipeline configuration on the same test items: accuracy with 95% CI, paired McNemar tests
    against LLM alone and the row above, knowledge support, LLM cost and LLM prompt tokens per question
    (ablation_tokens.png plots accuracy against them). Rows whose checkpoints are missing are skipped with a
    note; re-running after adding a checkpoint evaluates only the new row."""
    from ..stages.ablation import ALL_ROW_KEYS, AblationConfig, AblationInputs, run_ablation
    from ..extras.errors import BladeError
    from ..llm.client import LLMClient
    from ..qa.data import load_qa
    from .common import load_prompt_set
    from ..small_lm.loading import guess_template, resolve_small_model

    keys = tuple(k.strip() for k in rows.split(",")) if rows else ALL_ROW_KEYS
    unknown = [k for k in keys if k not in ALL_ROW_KEYS]
    if unknown:
        raise BladeError(f"--rows: unknown row(s) {', '.join(unknown)} (choose from {', '.join(ALL_ROW_KEYS)})")
    keys = tuple(k for k in ALL_ROW_KEYS if k in keys)  # the table's order, whatever order they were given in

    # Everything that can be wrong with the inputs fails here, before any LLM request.
    items = load_qa(test_path, fmt=fmt, limit=limit)
    if group_by:
        from ..qa.groups import check_group_field

        check_group_field(items, group_by, path=test_path)
    if corpus:
        from ..retrieval import CorpusIndex

        CorpusIndex.from_jsonl(corpus)  # a bad corpus line fails now, not after the other rows ran
    if workspace:
        templates_dir, template, max_new_tokens = _run_defaults(Path(workspace), templates_dir, variant, template,
                                                                max_new_tokens)
    max_new_tokens = max_new_tokens or AblationConfig.max_new_tokens  # without a run to take it from
    prompts = load_prompt_set(templates_dir, variant)
    base = resolve_small_model(base_model)
    inputs = AblationInputs.from_workspace(Path(workspace), base) if workspace else AblationInputs(base_model=base)
    for name, value in (("dp", dp), ("kit", kit), ("kit_base", kit_base), ("soft_prompt", soft_prompt),
                        ("corpus", corpus), ("kit_passages", kit_passages),
                        ("soft_prompt_passages", soft_prompt_passages)):
        if value is not None:
            setattr(inputs, name, str(value))
    if workspace is None and not any((dp, kit, kit_base, soft_prompt, kit_passages)) and set(keys) - {"llm", "base"}:
        click.echo("No --workspace and no checkpoints given: only the LLM-alone and base-model rows can run.", err=True)
    from ..stages.ablation import COMBINED_ROW_KEYS, plan_rows

    running = [plan.key for plan in plan_rows(inputs, keys) if plan.key in COMBINED_ROW_KEYS and not plan.skipped]
    if running:
        from ..retrieval.combine import check_templates

        check_templates(prompts, running)  # an old edited template fails now, not after the other rows ran
    config = AblationConfig(out_dir=Path(out_dir), template=guess_template(inputs.dp or base, template),
                            max_new_tokens=max_new_tokens, batch_size=batch_size, bootstrap=bootstrap, seed=seed,
                            group_by=group_by, retrieval_k=corpus_k,
                            retrieval_options=retrieval_query == "question+options", passage_chars=passage_chars or None)
    if dry_run or dry_run_json:
        from ..cost.plan import check_json_target
        from ..cost.plans import plan_ablation

        check_json_target(dry_run_json, [test_path, llm_args.cache_db])
        plan_ablation(items, prompts, llm_args.to_config(), inputs, config, keys).emit(dry_run_json)
        return
    with LLMClient(llm_args.to_config()) as client:
        table = run_ablation(items, prompts, client, inputs, config, keys)
    if layout == "paper":
        from ..runs.atomic_io import atomic_write_json, atomic_write_text
        from ..stages.paper_layout import paper_table, render_paper_markdown

        paper = paper_table(table, items, group_by)
        atomic_write_json(Path(out_dir) / "ablation_paper.json", paper)
        atomic_write_text(Path(out_dir) / "ablation_paper.md", render_paper_markdown(paper))
        click.echo((Path(out_dir) / "ablation_paper.md").read_text(encoding="utf-8"))
    else:
        click.echo((Path(out_dir) / "ablation.md").read_text(encoding="utf-8"))
    click.echo(f"wrote {Path(out_dir) / 'ablation.json'}, ablation.md, ablation.png, ablation_tokens.png"
               + (", ablation_paper.md, ablation_paper.json" if layout == "paper" else ""))
    if not any("skipped" not in row for row in table["rows"]):
        raise BladeError("no ablation row could run (see the notes above)")


def _run_defaults(workspace: Path, templates_dir, variant, template, max_new_tokens):
    """The settings a `blade-bpo run` output folder trained its models with, where no option overrides them."""
    from ..stages.report import run_defaults

    found = run_defaults(workspace)
    used = []
    if templates_dir is None and variant is None and "templates_dir" in found:
        templates_dir = found["templates_dir"]
        used.append(f"templates {templates_dir}")
    if template is None and "template" in found:
        template = found["template"]
        used.append(f"chat template {template}")
    if max_new_tokens is None and "max_new_tokens" in found:
        max_new_tokens = found["max_new_tokens"]
        used.append(f"knowledge length {max_new_tokens} tokens")
    if used:
        logger.info("--workspace %s: the run's %s", workspace, ", ".join(used))
    return templates_dir, template, max_new_tokens
