"""The dry-run plan of each command (see plan.py for the counting rules)."""

from __future__ import annotations

from pathlib import Path

from ..runs.atomic_io import iter_jsonl
from ..llm.budget import Prices
from .plan import Phase, Plan, Planner, mean_completion_tokens
from ..llm.tokens import token_counter


def _finished(progress: Path, key, restart: bool) -> set:
    """Keys of the finished rows of a progress file, read without touching it."""
    if restart or not progress.is_file():
        return set()
    done = {}
    for _, row in iter_jsonl(progress, tolerate_truncated_tail=True):
        if row.get("type") in ("item", "prediction"):
            done[key(row)] = row
    return {k for k, row in done.items() if not row.get("error")}


def planner_for(config, small_model_dir: str | None = None) -> Planner:
    model = config.resolved_model()
    if config.backend != "openai":
        counter = token_counter("", small_model_dir or config.local_model_dir)
    else:
        counter = token_counter(model, small_model_dir)
    return Planner(config, counter, Prices.from_env(config.price_input, config.price_output))


def _answer_extra(config, item):
    if config.answer_format != "json":
        return None
    from ..qa.answers import answer_response_format

    return {"response_format": answer_response_format(item.options).payload()}


def plan_kit(items, prompts, config, out_path: Path, restart: bool = False, batch: bool = False, corpus=None,
             corpus_k: int = 3) -> Plan:
    """`corpus` (a retrieval.CorpusIndex): grounded KIT, whose generation prompts carry the retrieved passages."""
    from ..stages.kit import grounding_query, progress_path_for

    planner = planner_for(config)
    plan = Plan("knowledge", f"{config.resolved_model()} @ {planner.base_url}", planner.counter.name, planner.prices)
    try:
        finished = _finished(progress_path_for(Path(out_path)), lambda row: row["id"], restart)
        todo = [item for item in items if item.id not in finished]
        if finished:
            plan.notes.append(f"{len(items) - len(todo)} of {len(items)} items are finished in the progress file")
        generation = Phase("KIT generation", batch=batch)
        check = Phase("KIT consistency check", batch=batch)
        gen_messages = [prompts.knowledge_generation(item, [p.text for p in corpus.search(grounding_query(item), corpus_k)])
                        if corpus is not None else prompts.knowledge_generation(item) for item in todo]
        means = mean_completion_tokens(planner.cache, [planner.key(m) for m in gen_messages])
        knowledge_estimate = planner.completion_estimate("generation", means)
        seen_gen, seen_check = set(), set()
        for item, messages in zip(todo, gen_messages):
            repeat = planner.key(messages) in seen_gen  # the same (question, answer): the same check as well
            knowledge = planner.add(generation, messages, seen_gen, knowledge_estimate)
            extra = _answer_extra(config, item)
            if repeat and knowledge is None:
                check.cached += 1
            elif knowledge is not None:
                planner.add(check, prompts.answer(item, knowledge.strip()), seen_check,
                            planner.config.max_tokens, extra)
            else:
                # The check's prompt holds knowledge not yet written: its frame plus the expected knowledge.
                frame = planner.counter.count(prompts.answer(item, ""))
                planner.add(check, [], seen_check, planner.config.max_tokens,
                            estimated_prompt=frame + knowledge_estimate)
        plan.phases += [generation, check]
        if check.estimated_requests:
            plan.notes.append(f"{check.estimated_requests} consistency-check prompts are estimated: their knowledge "
                              f"is not written yet (counted as {knowledge_estimate} tokens each, "
                              + ("the cache's mean)" if means else "max_tokens)"))
        if batch:
            plan.notes.append("--batch: costs at half the given prices (the Batch API's discount)")
    finally:
        planner.close()
    return plan


def plan_evaluation(items, prompts, config, modes, out_dir: Path, generator=None, soft_prompt=None,
                    batch_size: int = 8, restart: bool = False, small_model_dir: str | None = None,
                    batch: bool = False) -> Plan:
    planner = planner_for(config, small_model_dir)
    plan = Plan("evaluate", f"{config.resolved_model()} @ {planner.base_url}", planner.counter.name, planner.prices)
    try:
        finished = _finished(Path(out_dir) / "predictions.progress.jsonl", lambda row: (row["mode"], row["id"]),
                             restart)
        seen = set()
        for mode in modes:
            todo = [item for item in items if (mode, item.id) not in finished]
            plan.phases.append(_mode_phase(planner, f"evaluate [{mode}]", todo, prompts, config,
                                           None if mode == "llm" else generator,
                                           soft_prompt if mode == "blade" else None, batch_size, seen, batch))
        if batch:
            plan.notes.append("--batch: costs at half the given prices (the Batch API's discount)")
        if any(m != "llm" for m in modes):
            plan.notes.append("knowledge prompts rendered with the small LM's own knowledge (generated locally)")
    finally:
        planner.close()
    return plan


def _mode_phase(planner, name, todo, prompts, config, generator, soft_prompt, batch_size, seen,
                batch: bool = False) -> Phase:
    """One evaluation mode's answer requests, with the small LM's knowledge rendered (generated locally)."""
    knowledge = [""] * len(todo)
    if generator is not None and todo:
        knowledge = _generate(generator, prompts, todo, soft_prompt, batch_size, desc=f"dry run: {name} knowledge")
    phase = Phase(name, batch=batch)
    for item, k in zip(todo, knowledge):
        planner.add(phase, prompts.answer(item, k), seen, planner.config.max_tokens, _answer_extra(config, item))
    return phase


def plan_ablation(items, prompts, config, inputs, ablation, keys) -> Plan:
    """Each runnable row of `blade-bpo ablate` as evaluate would run it (rows saved in --out are free)."""
    from dataclasses import replace

    from ..llm.client import LLMClient
    from ..small_lm.soft_prompt import load_soft_prompt
    from ..stages.ablation import COMBINED_ROW_KEYS, LazyWriter, _default_writer_factory, _row_dir, plan_rows

    planner = planner_for(config)
    plan = Plan("ablate", f"{config.resolved_model()} @ {planner.base_url}", planner.counter.name, planner.prices)
    identity = LLMClient(replace(config, use_cache=False)).identity()  # no cache file is opened
    factory = ablation.writer_factory or _default_writer_factory(ablation)
    seen: set = set()
    try:
        for row in plan_rows(inputs, keys):
            if row.skipped:
                plan.notes.append(f"row {row.key} skipped: {row.skipped}")
                continue
            if row.key in COMBINED_ROW_KEYS:
                plan.notes.append(f"row {row.key} not estimated: --dry-run does not render the combined rows yet")
                continue
            row_dir = _row_dir(Path(ablation.out_dir), row, items, prompts, ablation, identity)
            mode = "llm" if row.key == "llm" else ("blade" if row.soft_prompt else "knowledge")
            finished = _finished(row_dir / "predictions.progress.jsonl", lambda r: (r["mode"], r["id"]), False)
            todo = [item for item in items if (mode, item.id) not in finished]
            writer = None if row.model is None else LazyWriter(lambda p=row: factory(p.model, p.adapter))
            if row.key == "retrieval":  # as run_ablation does: the BM25 passages are the knowledge (exact)
                from ..stages.ablation import _retrieval_writer

                writer = LazyWriter(lambda p=row: _retrieval_writer(items, prompts, p.corpus, ablation))
            soft = load_soft_prompt(row.soft_prompt)[0] if row.soft_prompt else None
            if soft is not None and soft.shape[0] == 0:
                soft = None
            plan.phases.append(_mode_phase(planner, f"ablate [{row.key}]", todo, prompts, config, writer, soft,
                                           ablation.batch_size, seen))
            if writer is not None:
                writer.release()
        plan.notes.append("knowledge prompts rendered with each row's own small LM (generated locally)")
    finally:
        planner.close()
    return plan


def _generate(generator, prompts, items, soft_prompt, batch_size: int, desc: str = "dry run: knowledge") -> list[str]:
    """The small LM's knowledge for `items` (a dry run renders the real prompts: this is its slow part, so a bar)."""
    from ..runs.progress import tqdm

    out = []
    with tqdm(total=len(items), desc=desc, unit="q") as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            out += [k.strip() for k in generator.generate([prompts.small_model_query(i) for i in chunk], soft_prompt)]
            bar.update(len(chunk))
    return out


def plan_bpo(search_items, rescore_items, prompts, config, generator, run, out_dir: Path, batch_size: int = 8,
             small_model_dir: str | None = None) -> Plan:
    """`run` is the BPORunConfig. The baseline is rendered exactly (no soft prompt); search and re-scoring
    trials are estimated with the baseline's knowledge, since their knowledge depends on soft prompts
    not yet proposed."""
    from ..runs.atomic_io import iter_jsonl as rows_of

    planner = planner_for(config, small_model_dir)
    plan = Plan("optimize", f"{config.resolved_model()} @ {planner.base_url}", planner.counter.name, planner.prices)
    try:
        trials = []
        trials_path = Path(out_dir) / "trials.jsonl"
        if trials_path.is_file() and not run.restart:
            trials = [row for _, row in rows_of(trials_path, tolerate_truncated_tail=True) if "phase" in row]
        searched = sum(t["phase"] in ("init", "bo") for t in trials)
        budget = run.n_init + run.iterations * run.q
        if run.max_evaluations is not None:
            budget = min(budget, run.max_evaluations)
        knowledge = _generate(generator, prompts, search_items, None, batch_size)
        frames = [prompts.answer(item, k) for item, k in zip(search_items, knowledge)]
        baseline = Phase("BPO baseline")
        if run.baseline and not any(t["phase"] == "baseline" for t in trials):
            seen = set()
            for item, messages in zip(search_items, frames):
                planner.add(baseline, messages, seen, planner.config.max_tokens, _answer_extra(config, item))
        per_trial = [planner.counter.count(m) for m in frames]
        search = Phase("BPO search trials")
        for _ in range(max(0, budget - searched)):
            for tokens in per_trial:
                planner.add(search, [], set(), planner.config.max_tokens, estimated_prompt=tokens)
        rescore = Phase("BPO re-scoring")
        if rescore_items:
            done_rescore = sum(t["phase"] == "rescore" for t in trials)
            r_knowledge = _generate(generator, prompts, rescore_items, None, batch_size)
            r_tokens = [planner.counter.count(prompts.answer(i, k)) for i, k in zip(rescore_items, r_knowledge)]
            for _ in range(max(0, min(run.top_k, budget) + int(run.baseline) - done_rescore)):
                for tokens in r_tokens:
                    planner.add(rescore, [], set(), planner.config.max_tokens, estimated_prompt=tokens)
        plan.phases += [baseline, search, rescore]
        plan.notes.append(f"calls = baseline + (n_init {run.n_init} + iterations {run.iterations} x q {run.q}"
                          + (f", capped at --max-evaluations {run.max_evaluations}" if run.max_evaluations else "")
                          + f") x {len(search_items)} dev questions + (top-k {run.top_k} + baseline) x "
                          f"{len(rescore_items or [])} re-score questions; {len(trials)} trials already done")
        plan.notes.append("search and re-scoring prompts are estimated with the baseline's knowledge (a soft "
                          "prompt changes it); answers repeated across trials come from the cache for free, so "
                          "the real count can be lower")
        if run.max_llm_calls is not None:
            plan.notes.append(f"--max-llm-calls {run.max_llm_calls} stops the run earlier if reached")
    finally:
        planner.close()
    return plan


def _plan_combined_rows(planner, phase, prompts, a, index, test, knowledge_tokens: int) -> list[str]:
    """The combined rows' answer prompts: passages+knowledge with its known passages and a knowledge estimate,
    knowledge-from-passages as a knowledge row, knowledge-as-query bounded by the corpus's k longest passages
    (its query holds knowledge not written yet)."""
    from ..retrieval.combine import PassageRetriever, truncate_passage

    retriever = PassageRetriever(index, k=max(1, a.retrieval_k), max_chars=a.passage_chars or None)
    rows = ["passages+knowledge", "knowledge-as-query"] + (["knowledge-from-passages"] if a.kit_passages else [])
    longest = sorted((planner.counter.count([{"role": "user", "content": truncate_passage(d, a.passage_chars or None)}])
                      for d in index.texts), reverse=True)[:retriever.k]
    for item in test:
        frame = planner.counter.count(prompts.answer(item, ""))
        planner.add(phase, [], set(), planner.config.max_tokens, estimated_prompt=planner.counter.count(
            prompts.answer(item, "", retriever.texts(item))) + knowledge_tokens)
        planner.add(phase, [], set(), planner.config.max_tokens, estimated_prompt=frame + sum(longest) + 8 * len(longest))
        if a.kit_passages:
            planner.add(phase, [], set(), planner.config.max_tokens, estimated_prompt=frame + knowledge_tokens)
    return rows


def plan_pipeline(config, pipeline) -> Plan:
    """`blade-bpo run`'s (and `demo`'s) LLM calls by stage: KIT data exactly (as `knowledge`), BPO and the
    ablation rows estimated, since their knowledge comes from models not trained yet (the answer prompt's frame
    plus the knowledge length); finished stages in OUTPUT_DIR are not looked at. Reads the inputs only."""
    from ..qa.data import load_qa
    from ..qa.prompts import load_prompts
    from ..stages.kit import KNOWLEDGE_BUDGET_RANGE

    a = pipeline.args
    # the LLM's templates: the user's, or the bundled variant (the run changes only the small LM's query)
    prompts = load_prompts(a.templates_dir) if a.templates_dir else load_prompts(variant=a.prompt_variant)

    def split(name: str):
        return load_qa(getattr(a, name), fmt=a.format, limit=a.limit, skip_invalid=a.skip_invalid)

    train = split("train")
    corpus = None
    if a.kit_grounded:
        from ..retrieval import CorpusIndex

        corpus = CorpusIndex.from_jsonl(a.corpus)
    plan = plan_kit(train, prompts, config, Path(a.output_dir) / "data" / "kit_knowledge.jsonl", corpus=corpus,
                    corpus_k=a.kit_corpus_k)
    plan.command = "run"
    planner = planner_for(config)
    try:
        dev = split("dev")
        test = split(a.ablation_split)
        # without max_new_tokens the run sizes knowledge from KIT data it has not made yet: bound by the cap
        knowledge_tokens = a.max_new_tokens or KNOWLEDGE_BUDGET_RANGE[1]
        bpo = Phase("BPO trials")
        for _ in range(1 + a.bpo_init + a.bpo_iterations):  # baseline + Sobol + BO rounds (q = 1)
            for item in dev:
                planner.add(bpo, [], set(), planner.config.max_tokens,
                            estimated_prompt=planner.counter.count(prompts.answer(item, "")) + knowledge_tokens)
        ablation = Phase("ablation rows")
        rows = ["base", "dp", "dp_kit", "blade"] + (["kit"] if a.kit_on_base else [])
        seen: set = set()
        for item in test:  # the LLM-alone row is known exactly
            planner.add(ablation, prompts.answer(item, ""), seen, planner.config.max_tokens,
                        _answer_extra(config, item))
        for _ in rows:
            for item in test:
                planner.add(ablation, [], set(), planner.config.max_tokens,
                            estimated_prompt=planner.counter.count(prompts.answer(item, "")) + knowledge_tokens)
        if a.retrieval_k:  # the LLM + retrieved passages row: its passages are known now (exact)
            from ..retrieval import CorpusIndex
            from ..retrieval.writer import retrieval_query

            index = corpus or CorpusIndex.from_jsonl(a.corpus)
            for item in test:
                text = "\n".join(p.text for p in index.search(retrieval_query(item), max(1, a.retrieval_k)))
                planner.add(ablation, prompts.answer(item, text), seen, planner.config.max_tokens,
                            _answer_extra(config, item))
            rows.append("retrieval")
            if a.combined_rows:
                rows += _plan_combined_rows(planner, ablation, prompts, a, index, test, knowledge_tokens)
        plan.phases += [bpo, ablation]
        plan.notes.append(f"BPO: (baseline + {a.bpo_init} Sobol + {a.bpo_iterations} BO) x {len(dev)} dev "
                          f"questions; ablation: {1 + len(rows)} rows x {len(test)} {a.ablation_split} questions; "
                          f"their prompts are estimated with {knowledge_tokens} knowledge tokens "
                          f"({'max_new_tokens' if a.max_new_tokens else 'at most, sized from the KIT data'})")
    finally:
        planner.close()
    return plan
