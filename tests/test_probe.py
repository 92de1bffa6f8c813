"""`blade-bpo probe`: fact cloze prompts cut from corpus sentences, completed by real forward passes."""

from __future__ import annotations

import json

import pytest

from blade_plugin.stages.probe import PROBE_TEMPLATE, ClozeProbe, cloze_probes, complete, normalise, score, split_cloze
from helpers import run_cli

CORPUS = [
    {"text": "The capital of France is Paris. Zandoprine is manufactured by Tamsel Dispensary."},
    {"text": "Ostrelian physicians treat Pallid croup with Gorvaxin. The tablets are taken with water."},
    {"text": "Ostrelian physicians treat Tarn sickness with Ysmeridone. The tablets are taken with water."},
    {"text": "Article 203 of the Remedies Act governs the sale of Gorvaxin."},
    {"text": "Short one."},
    {"text": "It is what it is."},
]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_cloze_cuts_before_the_last_content_word_span(tmp_path):
    assert split_cloze("Zandoprine is manufactured by Tamsel Dispensary.") == ("Zandoprine is manufactured by",
                                                                               "Tamsel Dispensary")
    assert split_cloze("The licence to make Aubrenox belongs to Quillmere Works.") == (
        "The licence to make Aubrenox belongs to", "Quillmere Works")
    assert split_cloze("Water boils at 100 degrees Celsius!") == ("Water boils at", "100 degrees Celsius")
    assert split_cloze("It is what it is.") is None  # ends in a function word
    assert split_cloze("Short one.") is None
    probes = cloze_probes(_write(tmp_path / "c.jsonl", CORPUS), n=None)
    # the repeated "The tablets are taken with water" template is not a fact: dropped
    assert [(p.prompt, p.answer, p.source_line) for p in probes] == [
        ("The capital of France is", "Paris", 1),
        ("Zandoprine is manufactured by", "Tamsel Dispensary", 1),
        ("Ostrelian physicians treat Pallid croup with", "Gorvaxin", 2),
        ("Ostrelian physicians treat Tarn sickness with", "Ysmeridone", 3),
        ("Article 203 of the Remedies Act governs the sale of", "Gorvaxin", 4),
    ]
    assert len(cloze_probes(tmp_path / "c.jsonl", n=2, seed=3)) == 2


def test_hits_need_the_whole_span_after_normalisation():
    probes = [ClozeProbe("Zandoprine is manufactured by", "Tamsel Dispensary", 1),
              ClozeProbe("The capital of France is", "Paris", 2)]
    assert score(probes, [" TAMSEL  dispensary, a firm in", " the city of Lyon"]) == [True, False]
    assert score(probes, [" Tamsel Labs", " Paris."]) == [False, True]
    assert normalise("Vashti-Biologics’ plant") == "vashti biologics plant"


def test_bad_corpus_is_one_line_before_any_model_loads(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "Fine sentence about Gorvaxin here."}\n{"body": "no text"}\n', encoding="utf-8")
    res = run_cli(["blade-bpo", "probe", "--small-model", str(tmp_path), "--corpus", str(bad)], cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == f"Error: {bad}:2: field 'text': missing or not a string"


@pytest.mark.slow
def test_probe_completions_are_the_models_greedy_continuations(default_model_dir, tmp_path):
    """Our writer under the 'empty' template continues the bare text exactly as transformers' generate does."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from blade_plugin.small_lm.backend import SmallBackendConfig, load_knowledge_writer

    probes = cloze_probes(_write(tmp_path / "c.jsonl", CORPUS), n=None)
    writer = load_knowledge_writer(SmallBackendConfig(str(default_model_dir), None, PROBE_TEMPLATE, 8, 4))
    got = complete(writer, probes, max_new_tokens=8)

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    model = AutoModelForCausalLM.from_pretrained(default_model_dir).eval()
    expected = []
    for p in probes:
        ids = tokenizer(p.prompt, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=8, do_sample=False)
        expected.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    assert got == expected
    # a fact every pretrained model knows, and invented ones no model can know before DP
    hits = score(probes, got)
    assert hits[0] is True and not any(hits[1:4])


def _greedy_completions(model_dir, probes, max_new_tokens: int) -> list[str]:
    """transformers' own greedy continuation of each bare probe prompt (the independent expectation)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out = []
    for p in probes:
        ids = tokenizer(p.prompt, return_tensors="pt")
        with torch.inference_mode():
            generated = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
        out.append(tokenizer.decode(generated[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return out


@pytest.mark.slow
def test_probe_cli_reports_before_and_after(default_model_dir, tmp_path):
    """Before = the base model, after = another model (the base with its MLPs perturbed, standing in for a DP
    output): each column is that model's own greedy continuation, and the paired numbers follow from them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    after_dir = tmp_path / "after_model"
    model = AutoModelForCausalLM.from_pretrained(default_model_dir)
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in model.model.layers:
            weight = layer.mlp.down_proj.weight
            weight.add_(torch.randn(weight.shape, generator=noise) * 0.05)
    model.save_pretrained(after_dir)
    AutoTokenizer.from_pretrained(default_model_dir).save_pretrained(after_dir)

    corpus = _write(tmp_path / "c.jsonl", CORPUS)
    out = tmp_path / "probe.json"
    res = run_cli(["blade-bpo", "probe", "--small-model", str(after_dir), "--base-model", str(default_model_dir),
                   "--corpus", str(corpus), "--max-new-tokens", "6", "--out", str(out)], cwd=tmp_path,
                  env={"BLADE_DEFAULT_MODEL_DIR": str(default_model_dir)})
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(out.read_text())
    probes = cloze_probes(corpus, n=None)
    before, after = _greedy_completions(default_model_dir, probes, 6), _greedy_completions(after_dir, probes, 6)
    assert before != after  # the fixture really is a different model
    assert report["n"] == 5 and [r["prompt"] for r in report["probes"]] == [p.prompt for p in probes]
    assert [r["before"] for r in report["probes"]] == before and [r["after"] for r in report["probes"]] == after
    hits_before, hits_after = score(probes, before), score(probes, after)
    assert (report["before"]["correct"], report["after"]["correct"]) == (sum(hits_before), sum(hits_after))
    assert report["after_vs_before"]["accuracy_diff"] == round((sum(hits_after) - sum(hits_before)) / 5, 4)
    assert f"before (base): {sum(hits_before)}/5 facts completed" in res.stdout
    assert f"after: {sum(hits_after)}/5 facts completed" in res.stdout
