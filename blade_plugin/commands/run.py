"""`blade-bpo run blade.yaml [key=value ...]`: the whole pipeline on the user's own domain."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from ..cost.options import dry_run_options
from ..hparams.pipeline_args import STAGES
from .arguments import llm_options

# blade.yaml keys that have a command-line flag too: the flag, when given, wins over the file
LLM_KEYS = ("llm_base_url", "llm_model", "llm_backend")


def _keys_epilog() -> str:
    from ..hparams.pipeline_config import keys_help

    return "\b\nKeys of blade.yaml (default in brackets; plus any LLaMA-Factory training key, plain for both " \
           "trainings or as dp_KEY / kit_KEY):\n" + keys_help()


def resolve_llm(llm_args, config):
    """The LLM: a command-line flag, else blade.yaml's key, else the environment; with no endpoint at all, the
    offline evidence reader."""
    ctx = click.get_current_context(silent=True)
    for key in LLM_KEYS:
        from_file = getattr(config.args, key)
        source = ctx.get_parameter_source(key) if ctx else None
        explicit = source is not None and source.name == "COMMANDLINE"
        if from_file is not None and not explicit:
            llm_args = replace(llm_args, **{key: from_file})
    if llm_args.llm_backend is None and not llm_args.llm_base_url:
        llm_args = replace(llm_args, llm_backend="reader")
    return llm_args


def announce_llm(llm_config) -> None:
    if llm_config.backend == "local":
        click.echo("llm_backend local: the embedded small model stands in for the black-box LLM. The pipeline "
                   "runs for real, but its scores are NOT meaningful.", err=True)
    elif llm_config.backend == "reader":
        click.echo("No LLM endpoint configured: the offline evidence reader stands in for the LLM. Its accuracy "
                   "measures whether the small model's knowledge states the right facts, not LLM reasoning.",
                   err=True)


def execute(config, llm_args, only: str | None, until: str | None, dry_run: bool, dry_run_json: str | None,
            title: str = "BLADE run") -> None:
    """What `run` and `demo` share: the dry run, or the pipeline and its printed report."""
    from ..runs.outputs import Output, check_outputs

    out = Path(config.args.output_dir)
    llm_args = resolve_llm(llm_args, config)
    llm_config = llm_args.to_config()
    if dry_run or dry_run_json:
        from ..cost.plan import check_json_target
        from ..cost.plans import plan_pipeline
        from ..stages.pipeline import check_inputs

        check_json_target(dry_run_json, [llm_args.cache_db])
        check_inputs(config)
        plan = plan_pipeline(llm_config, config)
        plan.command = "demo" if title == "BLADE demo" else "run"
        plan.emit(dry_run_json)
        return
    from ..stages.pipeline import check_inputs, run_pipeline

    check_inputs(config)  # a bad line is one error before anything is written or said
    check_outputs([Output("output_dir", out, is_dir=True)], [("--cache-db", llm_args.cache_db)],
                  progress=out, resume_hint=f"re-run `blade-bpo run {config.source}` to resume")
    announce_llm(llm_config)

    result = run_pipeline(config, llm_config, only=only, until=until, checked=True)
    print_report(result, title)


def print_report(result: dict, title: str) -> None:
    click.echo(f"\n{title} finished in {result['this_run_seconds']:.0f} s")
    probe = result["dp_probe"]
    if probe:
        click.echo(f"  DP probe (fact cloze from the corpus): {probe['hits_before']}/{probe['n']} before DP, "
                   f"{probe['hits_after']}/{probe['n']} after (McNemar p={probe['mcnemar_p']:.2g})")
    if result["kit"]:
        click.echo(f"  KIT data kept: {result['kit']['kept']} / {result['kit']['total']}")
    bpo = result["bpo"]
    if bpo:
        click.echo(f"  BPO best dev accuracy: {bpo['best_dev_accuracy']:.3f} ({bpo['evaluations']} evaluations; "
                   f"no soft prompt: {bpo['dev_baseline']:.3f}; selection noise +{bpo['optimism']:.3f}; "
                   f"{'soft prompt kept' if bpo['kept_soft_prompt'] else 'soft prompt dropped, BLADE = DP + KIT'})")
    click.echo("  stage            seconds   peak MB")
    for stage, peak in result["stage_peak_memory_mb"].items():
        click.echo(f"  {stage:<14} {result['stage_seconds'].get(stage + '_s', 0):>9.1f} {peak:>9}")
    if not result["scores_meaningful"]:
        click.echo("  (local stand-in LLM: these numbers only show the pipeline works)")
    click.echo("")
    table = result["artifacts"].get("ablation_table")
    if table:
        click.echo(Path(table).read_text(encoding="utf-8"))
    click.echo("Artifacts:")
    for name, path in result["artifacts"].items():
        click.echo(f"  {name:>20}: {path}")
    out = Path(result["output_dir"])
    click.echo(f"  {'report':>20}: {out / 'report.md'} ({out / 'report.json'})")


@click.command()
@click.argument("config_file", metavar="FILE", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--only", type=click.Choice(STAGES), default=None,
              help="Run this stage alone; the stages before it must have finished (their outputs are reused).")
@click.option("--until", type=click.Choice(STAGES), default=None, help="Stop after this stage.")
@dry_run_options
@llm_options
def run(config_file, overrides, only, until, dry_run, dry_run_json, llm_args) -> None:
    """DP -> probe -> KIT data -> KIT -> BPO -> ablation, as FILE says (a blade.yaml: `blade-bpo init DIR`
    writes one, with every key explained).

    KEY=VALUE pairs override its keys, as `llamafactory-cli train` takes them. A stage that finished before with
    the same inputs is skipped, so a re-run resumes; the report is OUTPUT_DIR/report.md and report.json."""
    from ..hparams.pipeline_config import load_pipeline_config

    if only and until:
        raise click.UsageError("--only and --until exclude each other")
    config = load_pipeline_config(config_file, overrides)
    execute(config, llm_args, only, until, dry_run, dry_run_json)


run.epilog = _keys_epilog()
