"""`blade-bpo demo`: the whole BLADE pipeline offline on the embedded model and the bundled demo data."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ..llm.options import llm_options

logger = logging.getLogger(__name__)


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False), default="blade_demo", show_default=True,
              help="Where every artifact goes; re-running resumes finished stages.")
@click.option("--dp-steps", type=click.IntRange(min=1), default=20, show_default=True, help="DP (continued pre-training) steps.")
@click.option("--kit-steps", type=click.IntRange(min=1), default=30, show_default=True, help="KIT (instruction tuning) steps.")
@click.option("--bpo-init", type=click.IntRange(min=1), default=3, show_default=True, help="Sobol initial BPO evaluations.")
@click.option("--bpo-iterations", type=click.IntRange(min=0), default=3, show_default=True, help="BO rounds after them.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True, help="Knowledge length (small LM).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only the first N items of each demo QA split.")
@click.option("--small-backend", type=click.Choice(["hf", "vllm"]), default="hf", show_default=True,
              envvar="BLADE_SMALL_BACKEND", help="Where BPO and evaluation run the small LM (vllm: the KIT model "
              "is merged and must be served with `vllm serve DIR --enable-prompt-embeds`).")
@click.option("--small-backend-url", "small_backend_urls", multiple=True, envvar="BLADE_SMALL_BACKEND_URL",
              help="vLLM server base URL (repeatable, round-robin).")
@llm_options
def demo(workdir, dp_steps, kit_steps, bpo_init, bpo_iterations, max_new_tokens, limit, small_backend,
         small_backend_urls, **llm_kwargs) -> None:
    """DP -> KIT data -> KIT training -> BPO -> evaluate, with a short budget (about 5-10 min on 2 CPU cores)."""
    from ..llm.options import config_from_options
    from ..output_paths import Output, check_outputs
    from ..pipeline import DemoConfig, run_demo

    check_outputs([Output("--workdir", Path(workdir), is_dir=True)], [("--cache-db", llm_kwargs.get("cache_db"))],
                  progress=Path(workdir), resume_hint="re-run `blade-bpo demo` with the same --workdir to resume")
    llm_config = config_from_options(**llm_kwargs)
    local = llm_config.backend == "local"
    if local:
        click.echo("No LLM endpoint configured (OPENAI_BASE_URL / --llm-base-url): the embedded small model stands "
                   "in for the black-box LLM. The pipeline runs for real, but its scores are NOT meaningful.",
                   err=True)
    config = DemoConfig(workdir=Path(workdir), dp_steps=dp_steps, kit_steps=kit_steps, bpo_init=bpo_init,
                        bpo_iterations=bpo_iterations, max_new_tokens=max_new_tokens,
                        limit_train=limit, limit_dev=limit, limit_test=limit, small_backend=small_backend,
                        small_backend_urls=tuple(small_backend_urls))
    result = run_demo(config, llm_config, local_scores_warning=local)
    click.echo("\nBLADE demo finished in {:.0f} s".format(result["this_run_seconds"]))
    click.echo(f"  KIT data kept: {result['kit']['kept']} / {result['kit']['total']}")
    click.echo(f"  BPO best dev accuracy: {result['bpo']['best_dev_accuracy']:.3f} "
               f"({result['bpo']['evaluations']} evaluations)")
    for mode, acc in result["test_accuracy"].items():
        click.echo(f"  test accuracy [{mode}]: {acc:.3f}")
    if local:
        click.echo("  (local stand-in LLM: these numbers only show the pipeline works)")
    click.echo("Artifacts:")
    for name, path in result["artifacts"].items():
        click.echo(f"  {name:>16}: {path}")
    click.echo(f"  {'summary':>16}: {(Path(workdir) / 'demo_summary.json').resolve()}")
