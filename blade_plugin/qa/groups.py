"""Metrics per group of items (`--group-by FIELD`): accuracy with CI, McNemar vs LLM alone, knowledge support.

A group is the value of one item field: any field of a generic record beyond id/question/options/answer
(the demo's `kind`: trained / reverse / corpus_only), a raw JEC-QA record's `type` (0 knowledge-driven, 1
case analysis) or any extra field it carries. Items without the field form the group "(none)".
"""

from __future__ import annotations

from collections.abc import Sequence

from ..extras.errors import BladeError
from .data import QAItem
from .knowledge_support import support_summary
from .metrics import accuracy_summary, paired_comparison

MISSING = "(none)"


def group_value(item: QAItem, field: str) -> str:
    """The item's group under `field`, as a string (lists/dicts as compact JSON-like text)."""
    if field == "id":
        return item.id
    value = item.meta.get(field)
    return MISSING if value is None else str(value)


def check_group_field(items: Sequence[QAItem], field: str, source: str = "--group-by",
                      path: str | None = None) -> None:
    """Refuse a field no item has, naming the file (when given) and the fields the items do have beyond
    id/question/options/answer (before any money is spent)."""
    if field == "id" or any(field in item.meta for item in items):
        return
    known = sorted({key for item in items for key in item.meta})
    where = f" in {path}" if path else ""
    raise BladeError(f"{source} {field}: no item{where} has a field {field!r} (fields: {', '.join(known) or 'none'})")


def groups_of(items: Sequence[QAItem], field: str) -> dict[str, list[int]]:
    """{group: item indices}, groups in order of first appearance."""
    out: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        out.setdefault(group_value(item, field), []).append(index)
    return out


def group_metrics(items: Sequence[QAItem], field: str, correct: Sequence[bool],
                  knowledge: Sequence[str] | None = None, llm_correct: Sequence[bool] | None = None,
                  n_resamples: int = 2000, seed: int = 0) -> dict[str, dict]:
    """{group: {n, correct, accuracy, ci95[, vs_llm][, knowledge_support]}} for one configuration.

    `correct` holds one flag per item (input order); `llm_correct` the LLM-alone flags for the paired test;
    `knowledge` the texts the small LM wrote (support is left out when all are empty)."""
    out = {}
    for group, idx in groups_of(items, field).items():
        summary = accuracy_summary([correct[i] for i in idx], n_resamples, seed)
        if llm_correct is not None:
            summary["vs_llm"] = paired_comparison([correct[i] for i in idx], [llm_correct[i] for i in idx],
                                                  n_resamples, seed)
        if knowledge is not None and any((knowledge[i] or "").strip() for i in idx):
            summary["knowledge_support"] = support_summary([items[i] for i in idx], [knowledge[i] for i in idx],
                                                           with_items=False)
        out[group] = summary
    return out
