"""The run's one report: OUTPUT_DIR/report.json and report.md (the ablation overall and per group, stage
times and peak memory, whether BPO's soft prompt was kept, where each artifact is)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..runs.atomic_io import atomic_write_json, atomic_write_text

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


def _previous(out: Path) -> dict:
    try:
        previous = json.loads((out / REPORT_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return previous if isinstance(previous, dict) else {}


def run_defaults(out: Path) -> dict[str, Any]:
    """What `blade-bpo run` gave its small models in OUTPUT_DIR `out`, from its report.json: the prompt templates
    (`templates_dir`), the chat `template` and the knowledge length (`max_new_tokens`). A later `ablate
    --workspace OUTPUT_DIR` must use the same, or the models are queried unlike how they were trained (the run
    writes a question-only query; the bundled template adds the options). Empty without a report."""
    report = _previous(out)
    templates = (report.get("artifacts") or {}).get("templates")
    found = {"templates_dir": templates if isinstance(templates, str) and Path(templates).is_dir() else None,
             "template": (report.get("settings") or {}).get("template"),
             "max_new_tokens": (report.get("kit") or {}).get("max_new_tokens")}
    return {k: v for k, v in found.items() if v is not None}


def write_report(state, stages_run: list[str]) -> dict:
    """Write and return the report of the stages known in `state` (every stage, or those `--only`/`--until`
    reached). Stage times add up over resumed runs, peak memory keeps the larger figure, so a re-run that skips
    finished stages does not erase their cost."""
    out, a = state.out, state.args
    previous = _previous(out)
    seconds = {k: round(v + float((previous.get("stage_seconds") or {}).get(k, 0) or 0), 1)
               for k, v in state.seconds.items()}
    seconds = {**(previous.get("stage_seconds") or {}), **seconds}
    peaks = {**(previous.get("stage_peak_memory_mb") or {}),
             **{k: max(v, int((previous.get("stage_peak_memory_mb") or {}).get(k, 0) or 0))
                for k, v in state.peak_mb.items()}}
    o = state.outputs
    probe = (o.get("probe") or {}).get("report")
    bpo = o.get("bpo")
    kit_data = o.get("kit_data")
    ablation = o.get("ablation")
    table = ablation["table"] if ablation else None
    rows = {row["key"]: row for row in table["rows"] if "skipped" not in row} if table else {}
    llm = state.llm_config
    result: dict[str, Any] = {
        "config": str(state.config.source),
        "output_dir": str(out),
        "llm": llm.describe() if hasattr(llm, "describe") else str(getattr(llm, "model", llm)),
        "scores_meaningful": getattr(llm, "backend", None) != "local",
        "stages_run": stages_run,
        "ran_this_time": list(state.ran),
        "kit": None if not kit_data else {"kept": kit_data["stats"]["kept"], "total": kit_data["stats"]["total"],
                                          "file": kit_data["file"], "max_new_tokens": kit_data["max_new_tokens"]},
        "dp_probe": None if not probe else {
            "n": probe["n"], "hits_before": probe["before"]["correct"], "hits_after": probe["after"]["correct"],
            "mcnemar_p": probe["after_vs_before"]["mcnemar_p"]},
        "bpo": None if not bpo else {"best_dev_accuracy": bpo["best_score"], "evaluations": bpo["evaluations"],
                                     **(bpo["selection"] or {})},
        "test_accuracy": {key: row["accuracy"] for key, row in rows.items()},
        "ablation": None if not table else [{k: row.get(k) for k in ("key", "title", "accuracy", "ci95", "skipped",
                                                                      "groups")} for row in table["rows"]],
        "group_by": a.group_by,
        "settings": state.config.as_dict(),
        "artifacts": artifacts(state),
        "stage_seconds": seconds,
        "stage_peak_memory_mb": peaks,
        "this_run_seconds": state.seconds.get("total_s"),
    }
    atomic_write_json(out / REPORT_JSON, result)
    atomic_write_text(out / REPORT_MD, render_report(result, out))
    return result


def artifacts(state) -> dict[str, str | None]:
    """Where each artifact of the known stages is (only those that exist)."""
    out = state.out
    o = state.outputs
    paths: dict[str, Path | str | None] = {}
    if "dp" in o:
        paths["dp_model"] = o["dp"]["model"]
    if (o.get("probe") or {}).get("file"):
        paths["dp_probe"] = o["probe"]["file"]
    if "kit_data" in o:
        paths["kit_data"] = o["kit_data"]["file"]
    if "kit" in o:
        paths["kit_model"] = o["kit"]["model"]
        paths["kit_base_model"] = o["kit"]["base_model"]
    if "bpo" in o:
        bpo = Path(o["bpo"]["dir"])
        paths.update(soft_prompt=bpo / "soft_prompt.safetensors",
                     selected_soft_prompt=bpo / "selected_soft_prompt.safetensors",
                     bpo_trials=bpo / "trials.jsonl", convergence_plot=bpo / "convergence.png")
    if "ablation" in o:
        ab = Path(o["ablation"]["dir"])
        paths.update(ablation_table=ab / "ablation.md", ablation_json=ab / "ablation.json",
                     ablation_chart=ab / "ablation.png")
    paths["templates"] = state.prompts.directory if state.prompts is not None else None
    paths["logs"] = out / "logs"
    return {name: str(path) for name, path in paths.items() if path is not None and Path(path).exists()}


def render_report(result: dict, out: Path) -> str:
    """report.md: what a person reads after a run."""
    lines = [f"# BLADE run: {result['config']}", "", f"LLM: {result['llm']}"]
    if not result["scores_meaningful"]:
        lines.append("(local stand-in LLM: these numbers only show the pipeline works)")
    lines.append("")
    table = Path(result["artifacts"].get("ablation_table", ""))
    if result["ablation"] and table.is_file():
        lines += ["## Ablation", "", table.read_text(encoding="utf-8").strip(), ""]
        if (out / "runs").exists() and result["artifacts"].get("ablation_chart"):
            lines += [f"![ablation]({Path(result['artifacts']['ablation_chart']).relative_to(out)})", ""]
    probe = result["dp_probe"]
    if probe:
        lines += [f"DP probe (fact cloze from the corpus): {probe['hits_before']}/{probe['n']} before DP, "
                  f"{probe['hits_after']}/{probe['n']} after (McNemar p={probe['mcnemar_p']:.2g})", ""]
    if result["kit"]:
        lines += [f"KIT data kept: {result['kit']['kept']} / {result['kit']['total']}; knowledge length "
                  f"{result['kit']['max_new_tokens']} tokens", ""]
    bpo = result["bpo"]
    if bpo:
        kept = "kept" if bpo.get("kept_soft_prompt") else "dropped: full BLADE = DP + KIT"
        lines += [f"BPO: best dev accuracy {bpo['best_dev_accuracy']:.3f} after {bpo['evaluations']} evaluations; "
                  f"no soft prompt {bpo.get('dev_baseline', float('nan')):.3f}, selection noise "
                  f"+{bpo.get('optimism', 0):.3f}: soft prompt {kept}", ""]
    lines += ["## Stages", "", "| stage | seconds (all runs) | peak MB |", "|---|---|---|"]
    for stage, peak in result["stage_peak_memory_mb"].items():
        lines.append(f"| {stage} | {result['stage_seconds'].get(stage + '_s', 0):.1f} | {peak} |")
    lines += ["", "## Artifacts", ""]
    lines += [f"- {name}: `{path}`" for name, path in result["artifacts"].items()]
    return "\n".join(lines) + "\n"
