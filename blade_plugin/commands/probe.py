"""`blade-bpo probe`: how many corpus facts the small model completes, before (base) and after DP."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..extras.constants import GENERATION_BATCH_SIZE


@click.command()
@click.option("--small-model", required=True, type=click.Path(exists=True, file_okay=False),
              help="The trained small LM (e.g. the DP output directory).")
@click.option("--adapter", type=click.Path(exists=True, file_okay=False), default=None,
              help="LoRA adapter on --small-model (e.g. from blade_dp_lora).")
@click.option("--base-model", type=click.Path(exists=True, file_okay=False), default=None,
              help="The model before DP (default: the embedded SmolLM2-135M-Instruct).")
@click.option("--no-base", is_flag=True, help="Probe only --small-model (skip the 'before' run).")
@click.option("--corpus", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Corpus JSONL ({\"text\": ...} per line) the probes are cut from. Pass phrasings DP did not "
                   "see to test recall rather than memorised wording.")
@click.option("--n", "n", type=click.IntRange(1), default=40, show_default=True, help="Number of probes.")
@click.option("--max-new-tokens", type=click.IntRange(1), default=12, show_default=True,
              help="Tokens of each cloze completion (greedy).")
@click.option("--batch-size", type=click.IntRange(1), default=GENERATION_BATCH_SIZE, show_default=True,
              help="Completions generated at once (lower it if memory is short).")
@click.option("--seed", type=int, default=0, show_default=True, help="Which sentences are sampled.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the full report as JSON here.")
def probe(small_model, adapter, base_model, no_base, corpus, n, max_new_tokens, batch_size, seed, out) -> None:
    """Fact cloze probes: each corpus sentence cut before its last content-word span, completed greedily;
    a hit when the completion contains the span. Reports hits before (base model) and after DP."""
    from ..runs.atomic_io import atomic_write_json
    from ..stages.probe import PROBE_TEMPLATE, cloze_probes, complete, probe_report
    from ..small_lm.backend import SmallBackendConfig, load_knowledge_writer
    from ..small_lm.loading import resolve_small_model

    probes = cloze_probes(Path(corpus), n, seed)  # input errors surface before any model loads
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        from ..extras.errors import BladeError

        raise BladeError(f"--adapter {adapter}: not a LoRA adapter directory (no adapter_config.json)")

    def run(model: str, lora: str | None) -> list[str]:
        writer = load_knowledge_writer(SmallBackendConfig(resolve_small_model(model), lora, PROBE_TEMPLATE,
                                                          max_new_tokens, batch_size))
        return complete(writer, probes, max_new_tokens)

    before = None if no_base else run(base_model, None)
    after = run(small_model, adapter)
    report = probe_report(probes, before, after)
    report["inputs"] = {"small_model": small_model, "adapter": adapter, "base_model": base_model, "corpus": corpus,
                        "seed": seed, "max_new_tokens": max_new_tokens}
    if out:
        atomic_write_json(Path(out), report)
    for row in report["probes"][:5]:
        click.echo(f"  {row['prompt']} [{row['answer']}] -> {row['after']!r}")
    if "before" in report:
        b = report["before"]
        click.echo(f"before (base): {b['correct']}/{b['n']} facts completed")
    a = report["after"]
    click.echo(f"after: {a['correct']}/{a['n']} facts completed")
    if "after_vs_before" in report:
        p = report["after_vs_before"]
        click.echo(f"after - before: {p['accuracy_diff']:+.3f} (gained {p['wins']}, lost {p['losses']}, "
                   f"McNemar p={p['mcnemar_p']:.3g})")
    if out:
        click.echo(f"wrote {out}")
    else:
        click.echo(json.dumps({k: v for k, v in report.items() if k != "probes"}))
