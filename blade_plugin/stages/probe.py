"""Did DP teach the small model its corpus? Fact cloze prompts from corpus sentences, completed greedily.

Each probe cuts a sentence before its last content-word span ("Zandoprine is manufactured by" | "Tamsel
Dispensary") and asks the model to continue the bare text (no chat template: DP is plain next-token
training). A probe is a hit when the normalised completion contains the normalised span. The same probes run
on the base model and on the DP model, so the difference is what DP taught, paired item by item.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ..extras.errors import BladeInputError
from ..runs.atomic_io import iter_jsonl

# Function words that never end a fact: the span is the run of other words at the sentence's end.
_STOP = frozenset("""a an the of and or to in on at by for with from as is are was were be been being it its this
that these those which who whom whose than then into onto over under per via not no nor but so if when while
has have had do does did can could may might must shall should will would""".split())
_SENTENCE = re.compile(r"(?<=[.!?\u3002\uff01\uff1f])\s+")
_WORD = re.compile(r"\S+")
_TRAIL = ".,;:!?\"')]}\u3002\uff0c\uff1b\uff1a\uff01\uff1f\u201d\u2019"
_NORM = re.compile(r"[^0-9a-z\u4e00-\u9fff]+")
PROBE_TEMPLATE = "empty"  # LLaMA-Factory's template that adds nothing around the text


@dataclass
class ClozeProbe:
    prompt: str  # the sentence up to (not including) its last content-word span, no trailing space
    answer: str  # the span
    source_line: int  # 1-based line of the corpus document


def normalise(text: str) -> str:
    return " ".join(_NORM.sub(" ", text.lower()).split())


def split_cloze(sentence: str) -> tuple[str, str] | None:
    """(prompt, span) for one sentence, or None when it has no usable span (too short, ends in a stop word)."""
    words = _WORD.findall(sentence.strip())
    if len(words) < 4:
        return None
    words[-1] = words[-1].rstrip(_TRAIL)
    if not words[-1]:
        words.pop()
    span: list[str] = []
    for word in reversed(words):
        if word.strip(_TRAIL).lower() in _STOP:
            break
        span.insert(0, word)
    prefix = words[:len(words) - len(span)]
    if not span or len(prefix) < 3:
        return None
    return " ".join(prefix), " ".join(span)


def cloze_probes(corpus: Path, n: int | None = 40, seed: int = 0) -> list[ClozeProbe]:
    """Up to `n` probes from distinct corpus sentences, spread over the corpus by a seeded sample.

    Boilerplate (a prompt that occurs in several documents, e.g. "The tablets are taken with") is dropped:
    it tests a template the corpus repeats, not a fact.
    """
    candidates: list[ClozeProbe] = []
    for line, row in iter_jsonl(corpus):
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(text, str):
            raise BladeInputError(corpus, "missing or not a string", line=line, field="text")
        for sentence in _SENTENCE.split(text):
            cut = split_cloze(sentence)
            if cut:
                candidates.append(ClozeProbe(cut[0], cut[1], line))
    counts: dict[str, int] = {}
    for probe in candidates:
        counts[normalise(probe.prompt)] = counts.get(normalise(probe.prompt), 0) + 1
    unique = [p for p in candidates if counts[normalise(p.prompt)] == 1]
    if not unique:
        raise BladeInputError(corpus, "no sentence yields a fact cloze (need >= 4 words ending in a content word)")
    if n is not None and n < len(unique):
        picked = sorted(random.Random(seed).sample(range(len(unique)), n))
        unique = [unique[i] for i in picked]
    return unique


def complete(writer, probes: list[ClozeProbe], max_new_tokens: int = 12) -> list[str]:
    """Greedy continuation of each probe's prompt by a KnowledgeWriter built with PROBE_TEMPLATE."""
    return writer.generate([p.prompt for p in probes], None, max_new_tokens)


def score(probes: list[ClozeProbe], completions: list[str]) -> list[bool]:
    return [normalise(p.answer) in normalise(c) for p, c in zip(probes, completions)]


def probe_report(probes: list[ClozeProbe], before: list[str] | None, after: list[str]) -> dict:
    """Hits before/after, a paired McNemar test, and every probe with both completions."""
    from ..qa.metrics import accuracy_summary, paired_comparison

    hits_after = score(probes, after)
    report: dict = {"n": len(probes), "after": accuracy_summary(hits_after)}
    rows = [{**asdict(p), "after": c, "hit_after": h} for p, c, h in zip(probes, after, hits_after)]
    if before is not None:
        hits_before = score(probes, before)
        report["before"] = accuracy_summary(hits_before)
        report["after_vs_before"] = paired_comparison(hits_after, hits_before)
        for row, c, h in zip(rows, before, hits_before):
            row.update(before=c, hit_before=h)
    report["probes"] = rows
    return report


def probe_dp(corpus: Path, base_model: str, dp_model: str, seed: int, n: int = 40) -> dict:
    """Fact-cloze probes from `corpus` completed by the base and the DP model (greedy, 12 tokens): did DP teach
    the corpus? The report holds both models' hits and McNemar's p between them."""
    from ..small_lm.backend import SmallBackendConfig, load_knowledge_writer

    probes = cloze_probes(corpus, n, seed)
    completions = []
    for model in (base_model, dp_model):
        writer = load_knowledge_writer(SmallBackendConfig(model, None, PROBE_TEMPLATE, 12))
        completions.append(complete(writer, probes, 12))
        del writer
    return {**probe_report(probes, completions[0], completions[1]), "corpus": str(corpus)}


def spaced_words(corpus: Path, sample: int = 50) -> bool:
    """True if the corpus separates words with spaces (the cloze probe needs words): English yes, Chinese no."""
    from ..runs.atomic_io import jsonl_records

    texts = [row.get("text", "") for _, row in jsonl_records(corpus)][:sample]
    chars = sum(len(t) for t in texts)
    return chars > 0 and sum(t.count(" ") for t in texts) / chars > 0.05
