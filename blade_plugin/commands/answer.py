"""`blade-bpo answer`: ad-hoc BLADE inference for one question or a JSONL batch on stdin."""

from __future__ import annotations

import json
import sys

import click

from .arguments import llm_options, small_model_options
from .common import load_prompt_set, prompt_options
from .grouping_options import corpus_k_option, corpus_option, passage_chars_option, retrieval_query_option

COMBINE_CHOICES = ("knowledge", "passages+knowledge", "knowledge-from-passages", "knowledge-as-query")


def _parse_option(text: str) -> tuple[str, str]:
    letter, sep, body = text.partition("=")
    if not sep or not letter.strip():
        raise click.BadParameter(f"{text!r}: expected LETTER=TEXT, e.g. --option 'A=Aspirin'")
    return letter.strip().upper(), body.strip()


def _stdin_records():
    """(line number, JSON object) for each non-blank stdin line; BladeInputError naming the line otherwise."""
    from ..extras.errors import BladeInputError

    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise BladeInputError("<stdin>", f"not UTF-8 text (byte 0x{data[err.start]:02x})", line=line) from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise BladeInputError("<stdin>", f"invalid JSON ({err.msg})", line=number) from None
        if not isinstance(record, dict):
            kind = {list: "an array", str: "a string"}.get(type(record), type(record).__name__)
            raise BladeInputError("<stdin>", f"expected a JSON object, got {kind}", line=number)
        yield number, record


@click.command()
@click.option("--question", default=None, help="The question; omit it to read JSONL items from stdin.")
@click.option("--option", "options", multiple=True, help="A multiple-choice option, LETTER=TEXT (repeatable).")
@click.option("--soft-prompt", type=click.Path(exists=True, dir_okay=False), default=None,
              help="soft_prompt.safetensors from `blade-bpo optimize`.")
@click.option("--no-knowledge", is_flag=True, help="Ask the LLM alone (baseline), without small-LM knowledge.")
@click.option("--combine", type=click.Choice(COMBINE_CHOICES), default="knowledge", show_default=True,
              envvar="BLADE_COMBINE", show_envvar=True,
              help="What the LLM sees: the small LM's knowledge alone, or with BM25 passages from --corpus "
                   "(passages+knowledge: both, labelled; knowledge-from-passages: knowledge the small LM wrote from "
                   "the question and the passages; knowledge-as-query: the passages retrieved with the question and "
                   "the knowledge). See docs/retrieval.md.")
@corpus_option
@corpus_k_option
@passage_chars_option
@retrieval_query_option
@small_model_options
@prompt_options
@llm_options
def answer(question, options, soft_prompt, no_knowledge, combine, corpus, corpus_k, passage_chars, retrieval_query,
           small_args, templates_dir, variant, llm_args) -> None:
    """Print the small LM's knowledge and the LLM's answer (JSONL in -> JSONL out in batch mode)."""

    from ..qa.answers import parse_choices
    from ..extras.errors import BladeInputError
    from ..qa.answering import KnowledgeAnswerer
    from ..llm.client import LLMClient
    from ..qa.data import QAItem, item_from_record

    if question is not None:
        opts = dict(_parse_option(o) for o in options) or None
        items = [QAItem(id="q1", question=question, options=opts, answer=(), meta={})]
        batch = False
    else:
        if sys.stdin.isatty():
            raise click.UsageError("give --question, or pipe JSONL items ({\"question\", \"options\"}) on stdin")
        items = [item_from_record(record, "<stdin>", number, require_answer=False)
                 for number, record in _stdin_records()]
        if not items:
            raise BladeInputError("<stdin>", "no JSONL items (one {\"question\", \"options\"} object per line)")
        batch = True

    mode = None if combine == "knowledge" else combine
    if mode is not None and no_knowledge:
        raise click.UsageError(f"--combine {combine} needs the small LM's knowledge: drop --no-knowledge")
    if mode is not None and not corpus:
        raise click.UsageError(f"--combine {combine} retrieves passages: give --corpus (the DP corpus JSONL)")
    prompts = load_prompt_set(templates_dir, variant)
    retriever = None
    if mode is not None:
        from ..retrieval.combine import PassageRetriever, check_templates

        check_templates(prompts, [mode])
        retriever = PassageRetriever.from_jsonl(corpus, corpus_k, passage_chars or None,
                                                retrieval_query == "question+options")
    generator = prompt_tensor = None
    if not no_knowledge:
        generator = small_args.load_writer()
        if soft_prompt:
            from ..small_lm.soft_prompt import load_soft_prompt

            prompt_tensor, _ = load_soft_prompt(soft_prompt, expected_hidden=generator.hidden_size)
    with LLMClient(llm_args.to_config()) as client:
        answerer = KnowledgeAnswerer(prompts, client, generator, prompt_tensor, small_args.batch_size,
                                     retriever=retriever, combine=mode)
        records, _ = answerer.answer_sync(items, max_errors=0)  # ad-hoc answers: a failure is an error, not an empty answer
    for item, record in zip(items, records):
        parsed = parse_choices(record.raw, sorted(item.options)) if item.options else None
        extra = {k: v for k, v in record.as_dict().items() if k in ("passages", "query_passages", "small_knowledge")}
        if batch:
            click.echo(json.dumps({"id": item.id, "knowledge": record.knowledge, **extra, "llm_output": record.raw,
                                   "answer": list(parsed) if parsed else record.raw.strip()}, ensure_ascii=False))
        else:
            for label, key in (("Small LM's knowledge (the BM25 query with the question)", "small_knowledge"),
                               ("Passages the small LM read", "query_passages")):
                if extra.get(key):
                    text = extra[key] if isinstance(extra[key], str) else "\n".join(f"- {p}" for p in extra[key])
                    click.echo(f"{label}:\n{text}\n")
            if record.knowledge:
                title = "Passages (BM25, knowledge-expanded query)" if mode == "knowledge-as-query" else \
                    "Knowledge (small LM)"
                click.echo(f"{title}:\n{record.knowledge}\n")
            if extra.get("passages"):
                click.echo("Passages (BM25):\n" + "\n".join(f"- {p}" for p in extra["passages"]) + "\n")
            click.echo(f"LLM answer:\n{record.raw.strip()}")
            if parsed:
                click.echo(f"\nParsed choice: {', '.join(parsed)}")
