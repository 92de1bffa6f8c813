"""The ablation in the paper's layout: LLM alone, w/o DP, w/o KIT, w/o BPO, BLADE, per question group.

The paper removes one component of BLADE at a time. `ablate`'s rows map onto its five rows like this:

===========  ==================  ============================================================
paper row    ablate row          what differs
===========  ==================  ============================================================
LLM alone    llm                 -
w/o DP       kit                 KIT on the base model, without BPO (the paper's keeps BPO)
w/o KIT      dp                  the DP model, without BPO (the paper's keeps BPO)
w/o BPO      dp_kit              -
BLADE        blade               -
===========  ==================  ============================================================

Per-group accuracy (e.g. JEC-QA's `type`: 0 knowledge-driven, 1 case analysis) is counted from each row's
saved predictions, so the table needs no model and no LLM call.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..qa.data import QAItem
from ..qa.metrics import paired_comparison

PAPER_ROWS = (("LLM alone", "llm"), ("w/o DP", "kit"), ("w/o KIT", "dp"), ("w/o BPO", "dp_kit"), ("BLADE", "blade"))
# Readable names for the groups of the paper's datasets; other values are shown as they are.
GROUP_LABELS = {"type": {"0": "KD (knowledge-driven)", "1": "CA (case analysis)"}}
ALL = "all"


def group_of(item: QAItem, field: str | None) -> str:
    if not field:
        return ALL
    value = item.meta.get(field)
    return "(none)" if value is None else str(value)


def _correct(row: dict) -> dict[str, bool]:
    path = Path(row["dir"]) / "predictions.jsonl"
    return {p["id"]: bool(p["correct"]) for p in map(json.loads, path.read_text("utf-8").splitlines()) if p}


def paper_table(table: dict, items: list[QAItem], group_by: str | None = None) -> dict:
    """{"groups": [(group, n)], "rows": [{"paper": name, "key": ablate row, "accuracy": {group: acc}, ...}]}
    from an `ablation.json` table and the test items it was run on."""
    groups: dict[str, list[QAItem]] = {}
    for item in items:
        groups.setdefault(group_of(item, group_by), []).append(item)
    order = sorted(groups, key=lambda g: (g == "(none)", g))
    by_key = {row["key"]: row for row in table["rows"]}
    llm = by_key.get("llm")
    llm_correct = _correct(llm) if llm and "skipped" not in llm else None
    rows = []
    for paper, key in PAPER_ROWS:
        row = by_key.get(key)
        entry: dict = {"paper": paper, "key": key, "title": row["title"] if row else key}
        if row is None or "skipped" in row:
            entry["skipped"] = row["skipped"] if row else "not requested (--rows)"
            rows.append(entry)
            continue
        correct = _correct(row)
        entry["accuracy"] = {ALL: sum(correct[it.id] for it in items) / len(items)}
        for group in order:
            entry["accuracy"][group] = sum(correct[it.id] for it in groups[group]) / len(groups[group])
        if llm_correct is not None and key != "llm":
            entry["vs_llm"] = paired_comparison([correct[it.id] for it in items], [llm_correct[it.id] for it in items],
                                                1000, 0)
        rows.append(entry)
    return {"group_by": group_by, "groups": [(g, len(groups[g])) for g in order], "n": len(items), "rows": rows}


def render_paper_markdown(paper: dict) -> str:
    labels = GROUP_LABELS.get(paper["group_by"] or "", {})
    grouped = paper["group_by"] and not (len(paper["groups"]) == 1 and paper["groups"][0][0] == ALL)
    header = ["configuration", f"all (n={paper['n']})"]
    if grouped:
        header += [f"{paper['group_by']} {labels.get(g, g)} (n={n})" for g, n in paper["groups"]]
    lines = [f"# BLADE ablation, paper layout ({paper['n']} test questions)", "",
             "| " + " | ".join(header + ["vs LLM alone (McNemar p)"]) + " |", "|" + "---|" * (len(header) + 1)]
    notes = []
    for row in paper["rows"]:
        if "skipped" in row:
            lines.append(f"| {row['paper']} | " + " | ".join("-" for _ in header[1:]) + " | - |")
            notes.append(f"- {row['paper']} (`{row['key']}`): skipped ({row['skipped']})")
            continue
        cells = [f"{row['accuracy'][ALL]:.3f}"]
        if grouped:
            cells += [f"{row['accuracy'][g]:.3f}" for g, _ in paper["groups"]]
        vs = row.get("vs_llm")
        cells.append(f"{vs['accuracy_diff']:+.3f} (p={vs['mcnemar_p']:.2g})" if vs else "-")
        lines.append(f"| {row['paper']} | " + " | ".join(cells) + " |")
    lines += ["", "Rows as `ablate` ran them: w/o DP = `kit` (KIT on the base model), w/o KIT = `dp` (DP only); "
              "unlike the paper, neither has a BPO soft prompt of its own. w/o BPO = `dp_kit`, BLADE = `blade`."]
    if notes:
        lines += ["", "Skipped:", *notes]
    return "\n".join(lines) + "\n"
