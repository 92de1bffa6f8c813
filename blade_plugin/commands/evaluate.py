"""`blade-bpo evaluate`: LLM alone vs. with small-LM knowledge vs. with the BPO soft prompt."""

from __future__ import annotations

from pathlib import Path

import click

from ..cost.options import batch_options, dry_run_options
from .arguments import evaluate_arguments, llm_options, small_model_options
from .common import load_prompt_set, prompt_options, report_skipped


@click.command()
@evaluate_arguments
@dry_run_options
@batch_options
@small_model_options
@prompt_options
@llm_options
def evaluate(args, dry_run, dry_run_json, use_batch, batch_retry, batch_poll_seconds, small_args, templates_dir,
             variant, llm_args) -> None:
    """Score the black-box LLM on a test set in each mode and compare them on the same items.

    With --batch, the LLM's answers come through the OpenAI Batch API (half price, within 24 h) after the
    small LM wrote every mode's knowledge locally; the outputs are those of an online run.

    With --corpus, --modes may name the modes that combine BM25 passages with the knowledge (docs/retrieval.md):
    passages+knowledge, knowledge-from-passages, knowledge-as-query. Every mode reports the LLM prompt tokens
    per question beside its accuracy."""
    from ..extras.errors import BladeError
    from ..retrieval.combine import COMBINED_MODES
    from ..stages.evaluation import ALL_MODES, EvalConfig, format_tokens, run_evaluation
    from ..qa.answering import KnowledgeAnswerer
    from ..runs.fingerprint import digest_file, model_identity
    from ..llm.client import LLMClient
    from ..runs.outputs import Output, check_outputs
    from ..qa.data import load_qa

    chosen = tuple(m.strip() for m in args.modes.split(",")) if args.modes else \
        (("llm", "knowledge", "blade") if args.soft_prompt else ("llm", "knowledge"))
    unknown = [m for m in chosen if m not in ALL_MODES]
    if unknown:
        raise BladeError(f"--modes: unknown mode(s) {', '.join(unknown)} (choose from {', '.join(ALL_MODES)})")
    if "blade" in chosen and not args.soft_prompt:
        raise BladeError("--modes includes blade but no --soft-prompt was given")
    combined = [m for m in chosen if m in COMBINED_MODES]
    if combined and not args.corpus:
        raise BladeError(f"--modes {','.join(combined)} retrieve passages: give --corpus (the DP corpus JSONL)")
    if combined and (use_batch or dry_run or dry_run_json):
        raise BladeError(f"--modes {','.join(combined)}: --batch and --dry-run do not run the combined modes yet")

    out = Path(args.out_dir)
    check_outputs([Output("--out", out, is_dir=True)] + [Output("--out", out / name) for name in
                   ("predictions.jsonl", "predictions.progress.jsonl", "metrics.json", "report.md")],
                  [("--test", args.test_path), ("--soft-prompt", args.soft_prompt), ("--cache-db", llm_args.cache_db)],
                  progress=out / "predictions.progress.jsonl")
    items = load_qa(args.test_path, fmt=args.fmt, limit=args.limit, skip_invalid=args.skip_invalid)
    if args.group_by:
        from ..qa.groups import check_group_field

        check_group_field(items, args.group_by, path=args.test_path)
    prompts = load_prompt_set(templates_dir, variant)
    retriever = None
    if combined:
        from ..retrieval.combine import PassageRetriever, check_templates

        check_templates(prompts, combined)  # before a model loads or a request is paid for
        retriever = PassageRetriever.from_jsonl(args.corpus, args.corpus_k, args.passage_chars or None,
                                                args.retrieval_query == "question+options")
    generator = prompt_tensor = None
    if any(m != "llm" for m in chosen):
        generator = small_args.load_writer()
        if args.soft_prompt:
            from ..small_lm.soft_prompt import check_compatible, load_soft_prompt

            prompt_tensor, metadata = load_soft_prompt(args.soft_prompt, expected_hidden=generator.hidden_size)
            check_compatible(metadata, generator)
    # What the knowledge depends on (the generator's own identity when one is loaded, so the default model
    # counts too); an LLM-only evaluation does not depend on the small model at all.
    small = {}
    if generator is not None:
        fingerprint = generator.model_fingerprint
        small = {"small_model": model_identity(fingerprint.get("base_model")),
                 "adapter": model_identity(fingerprint.get("adapter")), "template": generator.template_name,
                 "max_new_tokens": small_args.max_new_tokens}
    if dry_run or dry_run_json:
        from ..cost.plan import check_json_target
        from ..cost.plans import plan_evaluation

        check_json_target(dry_run_json, [args.test_path, args.soft_prompt, llm_args.cache_db])
        plan_evaluation(items, prompts, llm_args.to_config(), chosen, out, generator, prompt_tensor,
                        batch_size=small_args.batch_size, restart=args.restart, batch=use_batch).emit(dry_run_json)
        return
    from ..stages.evaluation_batch import BatchSettings

    config = EvalConfig(
        out_dir=Path(args.out_dir), modes=chosen, bootstrap=args.bootstrap, seed=args.seed, restart=args.restart,
        max_errors=args.max_errors, fingerprint_extra={**small, "soft_prompt": digest_file(args.soft_prompt),
                                                       # only with a combined mode: older progress stays valid
                                                       **({"retrieval": retriever.settings()} if retriever else {})},
        group_by=args.group_by,
        batch=BatchSettings(batch_retry, batch_poll_seconds) if use_batch else None,
    )
    with LLMClient(llm_args.to_config()) as client:
        writer = generator
        if combined and generator is not None:
            from ..stages.ablation import LazyWriter

            # knowledge, passages+knowledge and knowledge-as-query ask the same queries: generate them once
            writer = LazyWriter(lambda: generator)
        answerer = KnowledgeAnswerer(prompts, client, writer, prompt_tensor, small_args.batch_size,
                                     retriever=retriever)
        metrics = run_evaluation(items, answerer, config)
    report_skipped(items, out / "metrics.json")
    for mode, m in metrics["modes"].items():
        click.echo(f"{mode:>9}: accuracy {m['accuracy']:.3f}  95% CI [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]  "
                   f"(n={m['n']})  LLM prompt tokens/question {format_tokens(m.get('llm_prompt_tokens'))}")
    for name, p in metrics["paired"].items():
        click.echo(f"{name}: {p['accuracy_diff']:+.3f} (wins {p['wins']}, losses {p['losses']}, "
                   f"McNemar p={p['mcnemar_p']:.3g})")
    if metrics.get("groups"):
        from ..stages.evaluation import format_support, format_vs

        click.echo(f"by {args.group_by}:")
        for group, by_mode in metrics["groups"]["values"].items():
            for mode, g in by_mode.items():
                click.echo(f"  {group:>12} {mode:>9}: accuracy {g['accuracy']:.3f}  95% CI [{g['ci95'][0]:.3f}, "
                           f"{g['ci95'][1]:.3f}]  (n={g['n']})  vs llm {format_vs(g.get('vs_llm'))}  "
                           f"support {format_support(g.get('knowledge_support'))}")
    if metrics.get("errors"):
        click.echo(f"{len(metrics['errors'])} prediction(s) failed after retries and are scored wrong (listed in "
                   f"report.md); re-running the same command retries them")
    click.echo(f"wrote {Path(args.out_dir) / 'predictions.jsonl'}, metrics.json, report.md")
