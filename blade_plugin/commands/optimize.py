"""`blade-bpo optimize`: Bayesian Prompted Optimization of the small LM's soft prompt."""

from __future__ import annotations

from pathlib import Path

import click

from ..llm.options import llm_options
from .common import (QA_FORMATS, load_generator, load_prompt_set, prompt_options, report_skipped,
                     skip_invalid_option, small_model_options)


@click.command()
@click.option("--dev", "dev_path", required=True, type=click.Path(dir_okay=False),
              help="Dev QA items the objective scores (accuracy of the LLM with the small LM's knowledge).")
@click.option("--format", "fmt", type=QA_FORMATS, default="auto", show_default=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory: trials.jsonl, soft_prompt.safetensors, summary.json, convergence.png.")
@click.option("--n-tokens", type=click.IntRange(min=1), default=5, show_default=True, help="Soft tokens prepended to the input.")
@click.option("--d", "dim", type=click.IntRange(min=1), default=10, show_default=True, help="Dimension of the search space z.")
@click.option("--n-init", type=click.IntRange(min=1), default=5, show_default=True, help="Scrambled Sobol initial points.")
@click.option("--q", type=click.IntRange(min=1), default=1, show_default=True, help="Proposals per BO round (qLogEI when > 1).")
@click.option("--iterations", type=click.IntRange(min=0), default=10, show_default=True, help="BO rounds after the initial points.")
@click.option("--max-evaluations", type=click.IntRange(min=1), default=None, help="Stop after this many objective evaluations.")
@click.option("--max-llm-calls", type=click.IntRange(min=1), default=None, help="Stop once this many LLM API calls were made.")
@click.option("--init", "init_mode", type=click.Choice(["random", "vocab"]), default="random", show_default=True,
              help="Search around the origin (random) or around real token embeddings (vocab).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seeds the projection A and the optimiser.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only the first N dev items.")
@click.option("--resume", is_flag=True, help="Continue a killed run in --out without re-evaluating finished trials.")
@skip_invalid_option
@small_model_options
@prompt_options
@llm_options
def optimize(dev_path, fmt, out_dir, n_tokens, dim, n_init, q, iterations, max_evaluations, max_llm_calls,
             init_mode, seed, limit, resume, skip_invalid, small_model, adapter, template, max_new_tokens, batch_size,
             templates_dir, variant, **llm_kwargs) -> None:
    """Tune n soft tokens p = A z by Bayesian optimisation so the LLM scores best on the dev set."""
    from ..bpo.objective import KnowledgeObjective
    from ..bpo.run import BPORunConfig, run_bpo
    from ..evaluation import file_digest
    from ..llm.client import LLMClient
    from ..llm.options import config_from_options
    from ..output_paths import Output, check_outputs
    from ..qa.data import load_qa
    from ..small_lm.soft_prompt import SoftPromptSpace

    out = Path(out_dir)
    check_outputs([Output("--out", out, is_dir=True)] + [Output("--out", out / name) for name in
                   ("trials.jsonl", "config.json", "soft_prompt.safetensors", "summary.json", "convergence.png")],
                  [("--dev", dev_path), ("--cache-db", llm_kwargs.get("cache_db"))],
                  progress=out / "trials.jsonl", resume_hint="re-run the same command with --resume")
    items = load_qa(dev_path, fmt=fmt, limit=limit, skip_invalid=skip_invalid)
    prompts = load_prompt_set(templates_dir, variant)
    generator = load_generator(small_model, adapter, template, max_new_tokens, batch_size)
    space = SoftPromptSpace.for_generator(generator, n_tokens=n_tokens, d=dim, seed=seed, init=init_mode)
    config = BPORunConfig(out_dir=Path(out_dir), d=dim, n_tokens=n_tokens, n_init=n_init, q=q, iterations=iterations,
                          max_evaluations=max_evaluations, max_llm_calls=max_llm_calls, seed=seed, resume=resume)
    metadata = {
        **generator.model_fingerprint,
        "template": generator.template_name,
        "max_new_tokens": max_new_tokens,
        "init": init_mode,
        "scale": space.scale,
        "dev_file": str(dev_path),
        "dev_digest": file_digest(dev_path),
    }
    with LLMClient(config_from_options(**llm_kwargs)) as client:
        objective = KnowledgeObjective(items, prompts, client, generator, space, batch_size=batch_size)
        summary = run_bpo(config, objective, space.to_soft_prompt, metadata)
    report_skipped(items, out / "summary.json")
    click.echo(f"best dev accuracy {summary.best_score:.3f} after {summary.n_evaluations} evaluations "
               f"({summary.stop_reason}); soft prompt: {Path(out_dir) / 'soft_prompt.safetensors'}")
