"""`blade-bpo demo`: `blade-bpo run` on a bundled blade.yaml (blade_plugin/data/<domain>.blade.yaml).

Its flags are shorthands for blade.yaml keys (`--dp-epochs 3` is `dp_num_train_epochs=3`); KEY=VALUE pairs set any
other key. There is no second code path: the demo is the pipeline on the bundled data.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click

from ..cost.options import dry_run_options
from ..hparams.pipeline_args import PipelineArguments
from .arguments import llm_options

DOMAINS = {"pharma": "the invented pharmacopoeia of Ostrelia (English, generic JSONL)",
           "statute": "the invented statute code of 澜泽 (Chinese, raw JEC-QA, zh_legal prompts)"}

# flag -> (blade.yaml key, click type, environment variable); a `/--no-` pair for booleans
FLAGS: list[tuple[str, str, object, str | None]] = [
    ("--dp-epochs", "dp_num_train_epochs", click.FloatRange(0, min_open=True), None),
    ("--dp-lr", "dp_learning_rate", click.FloatRange(0, min_open=True), None),
    ("--dp-steps", "dp_max_steps", click.IntRange(1), None),
    ("--kit-epochs", "kit_num_train_epochs", click.FloatRange(0, min_open=True), None),
    ("--kit-lr", "kit_learning_rate", click.FloatRange(0, min_open=True), None),
    ("--kit-steps", "kit_max_steps", click.IntRange(1), None),
    ("--trainable-layers", "freeze_trainable_layers", click.IntRange(1), None),
    ("--kit-on-base/--no-kit-on-base", "kit_on_base", bool, None),
    ("--kit-grounded/--no-kit-grounded", "kit_grounded", bool, "BLADE_KIT_GROUNDED"),
    ("--query-options/--no-query-options", "query_options", bool, "BLADE_QUERY_OPTIONS"),
    ("--kit-replay", "kit_replay", click.IntRange(0), None),
    ("--ablation-split", "ablation_split", click.Choice(["test", "dev"]), None),
    ("--seed", "seed", click.IntRange(0), "BLADE_SEED"),
    ("--bpo-init", "bpo_init", click.IntRange(1), None),
    ("--bpo-iterations", "bpo_iterations", click.IntRange(0), None),
    ("--max-new-tokens", "max_new_tokens", click.IntRange(1), None),
    ("--limit", "limit", click.IntRange(1), None),
    ("--small-backend", "small_backend", click.Choice(["hf", "vllm"]), "BLADE_SMALL_BACKEND"),
]


def _key_flags(func):
    specs = {f.name: f for f in fields(PipelineArguments)}
    for flag, key, kind, envvar in reversed(FLAGS):
        spec = specs[key]
        default = "required" if spec.default is None and spec.metadata.get("required") else spec.default
        text = f"{spec.metadata['help']} (blade.yaml `{key}`; default {default})"
        extra = {"envvar": envvar, "show_envvar": True} if envvar else {}
        if kind is bool:
            func = click.option(flag, key, default=None, help=text, **extra)(func)
        else:
            func = click.option(flag, key, type=kind, default=None, help=text, **extra)(func)
    return func


def demo_config_file(domain: str) -> Path:
    from ..extras.paths import bundled_data_dir

    return bundled_data_dir() / f"{domain}.blade.yaml"


@click.command()
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--domain", type=click.Choice(sorted(DOMAINS)), default="pharma", show_default=True,
              envvar="BLADE_DEMO_DOMAIN", show_envvar=True,
              help="Bundled domain: " + "; ".join(f"{k}: {v}" for k, v in DOMAINS.items()) + ".")
@click.option("--workdir", type=click.Path(file_okay=False), default="blade_demo", show_default=True,
              envvar="BLADE_DEMO_WORKDIR", show_envvar=True,
              help="Where every artifact goes (blade.yaml `output_dir`); re-running resumes finished stages.")
@_key_flags
@click.option("--small-backend-url", "small_backend_urls", multiple=True, envvar="BLADE_SMALL_BACKEND_URL",
              show_envvar=True, help="vLLM server base URL serving WORKDIR/saves/kit_full (repeatable, round-robin).")
@click.option("--only", type=click.Choice(["dp", "probe", "kit_data", "kit", "bpo", "ablation"]), default=None,
              help="Run this stage alone (as `blade-bpo run --only`).")
@click.option("--until", type=click.Choice(["dp", "probe", "kit_data", "kit", "bpo", "ablation"]), default=None,
              help="Stop after this stage.")
@dry_run_options
@llm_options
def demo(overrides, domain, workdir, small_backend_urls, only, until, dry_run, dry_run_json, llm_args,
         **keys) -> None:
    """DP -> DP probe -> KIT data -> KIT training -> BPO -> the ablation table, on a bundled fictional domain
    (budgets sized for 2 CPU cores): `blade-bpo run` on blade_plugin/data/DOMAIN.blade.yaml. Without an endpoint
    the offline evidence reader stands in for the LLM."""
    from ..hparams.pipeline_config import load_pipeline_config
    from .run import execute

    if only and until:
        raise click.UsageError("--only and --until exclude each other")
    words = [f"output_dir={Path(workdir).resolve()}"]
    words += [f"{key}={str(value).lower() if isinstance(value, bool) else value}"
              for key, value in keys.items() if value is not None]
    if small_backend_urls:
        words.append("small_backend_urls=[" + ",".join(small_backend_urls) + "]")
    config = load_pipeline_config(demo_config_file(domain), [*words, *overrides])
    execute(config, llm_args, only, until, dry_run, dry_run_json, title="BLADE demo")
