"""`blade-bpo optimize`: Bayesian Prompted Optimization of the small LM's soft prompt."""

from __future__ import annotations

from pathlib import Path

import click

from ..cost.options import dry_run_options
from .arguments import llm_options, optimize_arguments, small_model_options
from .common import load_prompt_set, prompt_options, report_skipped


@click.command()
@optimize_arguments
@dry_run_options
@small_model_options
@prompt_options
@llm_options
def optimize(args, dry_run, dry_run_json, small_args, templates_dir, variant, llm_args) -> None:
    """Tune n soft tokens p = A z by Bayesian optimisation so the LLM scores best on the dev set.

    Trial 0 is a baseline without soft tokens; the best candidates are re-scored on questions the search
    did not see before the soft prompt is chosen. Re-running the same command resumes.
    """
    import logging

    from ..bpo.run import BPORunConfig
    from ..runs.fingerprint import digest_file, job_fingerprint, model_identity
    from ..llm.client import LLMClient
    from ..runs.outputs import Output, check_outputs
    from ..qa.data import load_qa
    from ..stages.bpo import optimize_soft_prompt

    # BPO counts --max-llm-calls over the whole run (trials.jsonl, resumes included) and stops between
    # trials; --max-cost is this invocation's spend, checked before each request.
    from dataclasses import replace

    max_llm_calls = llm_args.max_llm_calls
    llm_config = replace(llm_args.to_config(), max_llm_calls=None)
    out = Path(args.out_dir)
    check_outputs([Output("--out", out, is_dir=True)] + [Output("--out", out / name) for name in
                   ("trials.jsonl", "config.json", "soft_prompt.safetensors", "summary.json", "convergence.png",
                    "selected_soft_prompt.safetensors")],
                  [("--dev", args.dev_path), ("--rescore-dev", args.rescore_path), ("--cache-db", llm_args.cache_db)],
                  progress=out / "trials.jsonl", resume_hint="re-run the same command to resume")
    if args.resume:
        logging.getLogger(__name__).warning("--resume is the default now and will be removed; drop it")
    items = load_qa(args.dev_path, fmt=args.fmt, limit=args.limit, skip_invalid=args.skip_invalid)
    search_items, rescore_items, rescore_source = split_dev(items, args.dev_path, args.rescore_path, args.holdout,
                                                            args.fmt, args.seed)
    prompts = load_prompt_set(templates_dir, variant)
    generator = small_args.load_writer()
    config = BPORunConfig(out_dir=Path(args.out_dir), d=args.dim, n_tokens=args.n_tokens, n_init=args.n_init, q=args.q,
                          iterations=args.iterations, max_evaluations=args.max_evaluations,
                          max_llm_calls=max_llm_calls, seed=args.seed, restart=args.restart, top_k=args.top_k)
    if dry_run or dry_run_json:
        from ..cost.plan import check_json_target
        from ..cost.plans import plan_bpo

        check_json_target(dry_run_json, [args.dev_path, args.rescore_path, llm_args.cache_db])
        plan_bpo(search_items, rescore_items, prompts, llm_config, generator, config, out,
                 batch_size=small_args.batch_size).emit(dry_run_json)
        return
    model = generator.model_fingerprint
    metadata = {
        **model,
        "template": generator.template_name,
        "max_new_tokens": small_args.max_new_tokens,
        "init": args.init_mode,
        "dev_file": str(args.dev_path),
        "dev_digest": digest_file(args.dev_path),
        "rescore": rescore_source,
    }
    used_templates = tuple(name for name in prompts.template_names
                           if name != "knowledge_generation.j2")  # BPO never asks for KIT knowledge
    with LLMClient(llm_config) as client:
        def fingerprint(space):
            return job_fingerprint(
                items={"dev_items": search_items, "rescore_items": rescore_items or []},
                prompts=prompts, template_names=used_templates, templates_part="templates",
                llm=client.identity(), llm_part="llm", rescore_source=rescore_source,
                small_model=model_identity(model.get("base_model")), adapter=model_identity(model.get("adapter")),
                chat_template=generator.template_name, max_new_tokens=small_args.max_new_tokens,
                init=args.init_mode, scale=space.scale, answer_format=getattr(client.config, "answer_format", "text"))

        from ..llm.budget import BudgetExceeded

        try:
            outcome = optimize_soft_prompt(search_items, prompts, client, generator, config, metadata,
                                           init=args.init_mode, rescore_items=rescore_items, fingerprint=fingerprint,
                                           batch_size=small_args.batch_size, selection_guard=args.selection_guard)
        except BudgetExceeded:  # summary.json says "stopped"; this is the one line that says how to go on
            raise BudgetExceeded(client.budget.stop_message(str(out / "trials.jsonl"))) from None
    summary = outcome.summary
    for line in report_lines(summary, len(search_items), len(rescore_items or []), rescore_source):
        click.echo(line)
    if outcome.selection is not None:
        from ..bpo.guard import SELECTED

        guard = outcome.selection
        verdict = "kept BPO's soft prompt" if guard["kept_soft_prompt"] else "no soft prompt (BLADE = DP + KIT)"
        click.echo(f"selection guard: {verdict} (dev {guard['dev_best']:.3f} vs baseline "
                   f"{guard['dev_baseline']:.3f}, margin {guard['optimism']:.3f}); {out / SELECTED}")
    report_skipped(items, out / "summary.json")
    click.echo(f"best dev accuracy {summary.best_score:.3f} after {summary.n_evaluations} evaluations "
               f"({summary.stop_reason}); soft prompt: {Path(args.out_dir) / 'soft_prompt.safetensors'}")
    if summary.status == "stopped":
        click.echo(f"stopped at the budget: {summary.resume}")


def split_dev(items: list, dev_path: str, rescore_path: str | None, holdout: float | None, fmt: str, seed: int):
    """(search items, re-score items or None, a description of the re-score source).

    A held-out split is drawn with a private `random.Random(seed)`: the same seed gives the same split.
    """
    import random

    from ..extras.errors import BladeError
    from ..qa.data import load_qa

    if rescore_path is not None:
        if holdout:
            raise BladeError("--holdout and --rescore-dev exclude each other: the second dev set is the hold-out")
        return items, load_qa(rescore_path, fmt=fmt), f"file:{rescore_path}"
    fraction = 0.25 if holdout is None else holdout
    if fraction == 0:
        return items, None, None
    n_hold = round(len(items) * fraction)
    if n_hold < 1 or n_hold >= len(items):
        raise BladeError(f"--holdout {fraction:g} of {len(items)} dev items in {dev_path} leaves no question to "
                         "re-score on or to search with; pass --holdout 0, another fraction, or --rescore-dev FILE")
    held = set(random.Random(seed).sample(range(len(items)), n_hold))
    return ([it for i, it in enumerate(items) if i not in held], [it for i, it in enumerate(items) if i in held],
            f"holdout:{fraction:g}")


def report_lines(summary, n_search: int, n_rescore: int, rescore_source: str | None) -> list[str]:
    """What the user needs to judge the result: baseline, choice, optimism and a small-dev warning."""
    lines = []
    base = summary.baseline
    if base is not None:
        ci = base.get("ci95") or []
        lines.append(f"baseline (no soft prompt): dev {base['score']:.3f}"
                     + (f" [95% CI {ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
                     + (f", re-scored {base['rescore_score']:.3f}" if base.get("rescore_score") is not None else ""))
    sel = summary.selection
    chosen = next((c for c in sel.get("candidates", []) if c["trial"] == sel.get("chosen_trial")), None)
    if chosen is not None:
        text = f"chosen soft prompt: trial {chosen['trial']}, dev {chosen['dev_score']:.3f} on {n_search} questions"
        if chosen.get("rescore_score") is not None:
            text += f", re-scored {chosen['rescore_score']:.3f} on {n_rescore} other questions ({rescore_source})"
        lines.append(text)
    if summary.beat_baseline is not None:
        cmp = summary.baseline_comparison or {}
        detail = (f" ({cmp['on']}: {cmp['accuracy_diff']:+.3f}, {cmp['wins']} won / {cmp['losses']} lost, "
                  f"McNemar p={cmp['mcnemar_p']:.3g})") if cmp else ""
        lines.append(f"BPO beat the baseline: {'yes' if summary.beat_baseline else 'no'}{detail}")
    if sel.get("expected_optimism") is not None:
        lines.append(f"expected optimism (dev-best score minus its re-score): {sel['expected_optimism']:+.3f}"
                     + (f"; relative to the baseline {sel['optimism_vs_baseline']:+.3f}"
                        if sel.get("optimism_vs_baseline") is not None else ""))
    noise = summary.noise
    if noise.get("split_half_optimism") is not None:
        lines.append(f"expected optimism of best-of-{summary.n_evaluations} on the dev set (split halves): "
                     f"{noise['split_half_optimism']:+.3f}")
    if noise.get("dev_too_small"):
        lines.append(f"warning: {noise['n_dev']} dev questions cannot tell soft prompts apart: a difference needs "
                     f"about {noise['min_detectable_difference']:.3f} accuracy, trial scores span only "
                     f"{noise['trial_score_spread']:.3f}; use a larger --dev")
    if summary.errors:
        lines.append(f"warning: {summary.errors} answers failed with an LLM error (scored wrong; see trials.jsonl)")
    return lines
