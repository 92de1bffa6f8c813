"""`blade-bpo demo`: the whole BLADE pipeline offline on the embedded model and the bundled demo data."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import click

from ..cost.options import dry_run_options
from .arguments import llm_options

logger = logging.getLogger(__name__)


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False), default="blade_demo", show_default=True,
              help="Where every artifact goes; re-running resumes finished stages.")
@click.option("--dp-epochs", type=click.FloatRange(0, min_open=True), default=6.0, show_default=True,
              help="DP (continued pre-training) epochs over the corpus, one document per example.")
@click.option("--dp-lr", type=click.FloatRange(0, min_open=True), default=1e-3, show_default=True,
              help="DP learning rate (top --trainable-layers layers).")
@click.option("--dp-steps", type=click.IntRange(1), default=None, help="Stop DP after this many steps (max_steps).")
@click.option("--kit-epochs", type=click.FloatRange(0, min_open=True), default=5.0, show_default=True,
              help="KIT (knowledge instruction tuning) epochs.")
@click.option("--kit-lr", type=click.FloatRange(0, min_open=True), default=3e-4, show_default=True,
              help="KIT learning rate (top --trainable-layers layers).")
@click.option("--kit-steps", type=click.IntRange(1), default=None, help="Stop KIT after this many steps.")
@click.option("--trainable-layers", type=click.IntRange(1), default=10, show_default=True,
              help="DP and KIT tune the top N decoder layers (LLaMA-Factory's finetuning_type freeze).")
@click.option("--kit-on-base/--no-kit-on-base", default=True, show_default=True,
              help="Also train KIT on the base model, for the ablation's 'KIT only' row (a second KIT "
                   "training: about a quarter of the demo's time).")
@click.option("--kit-grounded/--no-kit-grounded", default=True, show_default=True,
              envvar="BLADE_KIT_GROUNDED", show_envvar=True,
              help="Ground KIT data in the corpus (knowledge --corpus): the LLM sees the BM25 passages that support "
                   "the correct answer and writes knowledge in their terms.")
@click.option("--query-options/--no-query-options", default=False, show_default=True,
              envvar="BLADE_QUERY_OPTIONS", show_envvar=True,
              help="List the options in the small model's query (default: the question only).")
@click.option("--kit-replay", type=click.IntRange(0), default=54, show_default=True,
              help="Mix N corpus documents into the KIT data (query: the document's first half; answer: the "
                   "document), so KIT keeps what DP taught about facts no KIT question asks; 0: none.")
@click.option("--domain", type=click.Choice(["pharma", "statute"]), default="pharma", show_default=True,
              envvar="BLADE_DEMO_DOMAIN", show_envvar=True,
              help="Bundled domain: pharma (invented pharmacopoeia, English) or statute (invented statute code, "
                   "Chinese, raw JEC-QA format, zh_legal prompts).")
@click.option("--ablation-split", type=click.Choice(["test", "dev"]), default="test", show_default=True,
              help="Where the ablation runs: dev to compare settings without reading the test set.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True,
              envvar="BLADE_SEED", show_envvar=True,
              help="Training, BPO and bootstrap seed.")
@click.option("--bpo-init", type=click.IntRange(1), default=2, show_default=True, help="Sobol initial BPO evaluations.")
@click.option("--bpo-iterations", type=click.IntRange(0), default=2, show_default=True, help="BO rounds after them.")
@click.option("--max-new-tokens", type=click.IntRange(1), default=None,
              help="Knowledge length (small LM) in BPO and the ablation; default: the 90th percentile of the KIT "
                   "training knowledge's token length, between 24 and 64.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Use only the first N items of each demo QA split.")
@click.option("--small-backend", type=click.Choice(["hf", "vllm"]), default="hf", show_default=True,
              envvar="BLADE_SMALL_BACKEND", show_envvar=True, help="Where BPO runs the small LM (vllm: serve the KIT model "
              "WORKDIR/saves/kit_full, a full model directory, with `vllm serve DIR --enable-prompt-embeds`; the "
              "ablation loads its rows' models here).")
@click.option("--small-backend-url", "small_backend_urls", multiple=True, envvar="BLADE_SMALL_BACKEND_URL", show_envvar=True,
              help="vLLM server base URL (repeatable, round-robin).")
@dry_run_options
@llm_options
def demo(workdir, dp_epochs, dp_lr, dp_steps, kit_epochs, kit_lr, kit_steps, trainable_layers, kit_on_base,
         kit_grounded, query_options, kit_replay, domain, ablation_split, seed, bpo_init, bpo_iterations,
         max_new_tokens, limit, small_backend, small_backend_urls, dry_run, dry_run_json, llm_args) -> None:
    """DP -> DP probe -> KIT data -> KIT training -> BPO -> the ablation table, on the bundled fictional domain
    (budgets sized for 2 CPU cores). Without an endpoint the offline evidence reader stands in for the LLM."""
    from ..runs.outputs import Output, check_outputs
    from ..stages.demo import DemoConfig, run_demo

    check_outputs([Output("--workdir", Path(workdir), is_dir=True)], [("--cache-db", llm_args.cache_db)],
                  progress=Path(workdir), resume_hint="re-run `blade-bpo demo` with the same --workdir to resume")
    if llm_args.llm_backend is None and not llm_args.llm_base_url:  # $OPENAI_BASE_URL arrives through click
        llm_args = replace(llm_args, llm_backend="reader")
    llm_config = llm_args.to_config()
    local = llm_config.backend == "local"
    if local:
        click.echo("--llm-backend local: the embedded small model stands in for the black-box LLM. The pipeline "
                   "runs for real, but its scores are NOT meaningful.", err=True)
    elif llm_config.backend == "reader":
        click.echo("No LLM endpoint configured: the offline evidence reader stands in for the LLM. Its accuracy "
                   "measures whether the small model's knowledge states the right facts, not LLM reasoning.",
                   err=True)
    config = DemoConfig(workdir=Path(workdir), domain=domain, dp_epochs=dp_epochs, dp_lr=dp_lr, dp_steps=dp_steps,
                        kit_epochs=kit_epochs, kit_lr=kit_lr, kit_steps=kit_steps, kit_on_base=kit_on_base,
                        kit_grounded=kit_grounded, query_options=query_options, kit_replay=kit_replay, seed=seed,
                        ablation_split=ablation_split,
                        trainable_layers=trainable_layers,
                        bpo_init=bpo_init, bpo_iterations=bpo_iterations, max_new_tokens=max_new_tokens,
                        limit_train=limit, limit_dev=limit, limit_test=limit, small_backend=small_backend,
                        small_backend_urls=tuple(small_backend_urls))
    if dry_run or dry_run_json:
        from ..cost.plan import check_json_target
        from ..cost.plans import plan_demo

        check_json_target(dry_run_json, [llm_args.cache_db])
        plan_demo(llm_config, config).emit(dry_run_json)
        return
    result = run_demo(config, llm_config, local_scores_warning=local)
    click.echo("\nBLADE demo finished in {:.0f} s".format(result["this_run_seconds"]))
    probe = result["dp_probe"]
    if probe:
        click.echo(f"  DP probe (fact cloze from the corpus): {probe['hits_before']}/{probe['n']} before DP, "
                   f"{probe['hits_after']}/{probe['n']} after (McNemar p={probe['mcnemar_p']:.2g})")
    click.echo(f"  KIT data kept: {result['kit']['kept']} / {result['kit']['total']}")
    bpo = result["bpo"]
    click.echo(f"  BPO best dev accuracy: {bpo['best_dev_accuracy']:.3f} ({bpo['evaluations']} evaluations; "
               f"no soft prompt: {bpo['dev_baseline']:.3f}; selection noise +{bpo['optimism']:.3f}; "
               f"{'soft prompt kept' if bpo['kept_soft_prompt'] else 'soft prompt dropped, BLADE = DP + KIT'})")
    click.echo("  stage            seconds   peak MB")
    for stage, peak in result["stage_peak_memory_mb"].items():
        click.echo(f"  {stage:<14} {result['stage_seconds'].get(stage + '_s', 0):>9.1f} {peak:>9}")
    if local:
        click.echo("  (local stand-in LLM: these numbers only show the pipeline works)")
    click.echo("")
    click.echo(Path(result["artifacts"]["ablation_table"]).read_text(encoding="utf-8"))
    click.echo("Artifacts:")
    for name, path in result["artifacts"].items():
        if path is None:
            continue
        click.echo(f"  {name:>20}: {path}")
    click.echo(f"  {'summary':>20}: {(Path(workdir) / 'demo_summary.json').resolve()}")
