"""KnowledgeObjective against the stub OpenAI server (real HTTP on 127.0.0.1, the real LLM client and answering
pipeline): per-item LLM errors are counted and scored wrong, each trial's soft prompt reaches the knowledge the
LLM is asked with, and the baseline has no soft prompt. Only the small LM is scripted (a writer that says which
soft prompt it wrote under), so the requests the stub received show what the objective sent."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import llm_config

from blade_plugin.bpo.objective import KnowledgeObjective
from blade_plugin.llm.client import LLMClient
from blade_plugin.qa.answering import KnowledgeAnswerer
from blade_plugin.qa.data import QAItem

OPTIONS = {"A": "Cyclooxygenase", "B": "Vitamin K epoxide reductase", "C": "HMG-CoA reductase"}
ITEMS = [QAItem("q1", "Which enzyme does aspirin irreversibly inhibit?", OPTIONS, ("A",)),
         QAItem("q2", "Which enzyme do statins inhibit?", OPTIONS, ("C",)),
         QAItem("q3", "Which enzyme does warfarin inhibit?", OPTIONS, ("B",))]
# The stub's answer per question: right for q1 and q3, wrong for q2 (A instead of C).
REPLIES = {"aspirin": "A", "statins": "A", "warfarin": "B"}


def reply(messages: list[dict], body: dict) -> str:
    """The upstream's answer to the question in the prompt, in the shape the request asks for."""
    content = messages[-1]["content"]
    [letter] = [letter for word, letter in REPLIES.items() if word in content]
    return json.dumps({"answer": [letter]}) if body.get("response_format") else f"Answer: {letter}"


class _Writer:
    """The small LM's seam: knowledge that names the soft prompt it was written under."""

    def generate(self, texts: list[str], soft_prompt: torch.Tensor | None = None) -> list[str]:
        under = "no soft prompt" if soft_prompt is None else f"soft prompt {soft_prompt.tolist()}"
        return [f"Knowledge {i} under {under}." for i in range(len(texts))]


class _Space:
    def __init__(self):
        self.projected = []

    def to_soft_prompt(self, z):
        self.projected.append(z)
        return torch.full((1, 2), float(z.sum()))


@pytest.fixture()
def objective(stub_llm, tmp_path, prompts):
    stub_llm.responder = reply
    with LLMClient(llm_config(stub_llm, tmp_path)) as client:
        answerer = KnowledgeAnswerer(prompts=prompts, client=client, writer=_Writer())
        yield KnowledgeObjective(items=ITEMS, answerer=answerer, space=_Space())


def _asked(stub, question: str) -> str:
    """The messages of the last request the stub received for `question`, as one text."""
    return [json.dumps(r["messages"], ensure_ascii=False) for r in stub.requests
            if question in json.dumps(r["messages"], ensure_ascii=False)][-1]


def test_errors_are_counted_and_scored_wrong(objective, stub_llm):
    # a prompt the API refuses for good (400, not retried), for a question the stub would answer right
    stub_llm.fail_matching(ITEMS[2].question, status=400)
    result = objective(torch.zeros(3))
    assert stub_llm.request_count == 3 and stub_llm.fault_count == 1
    assert result.details["errors"] == 1 and result.details["error_ids"] == ["q3"]
    assert result.correct == [True, False, False] and result.score == 1 / 3 and result.details["correct"] == ["q1"]
    # request latency is a timing, not part of the reproducible usage counts
    assert result.usage["calls"] == 3 and result.usage["failures"] == 1 and "seconds" not in result.usage
    assert isinstance(result.timings["llm_request_s"], float)


def test_records_without_errors_score_as_recorded_and_baseline_has_no_soft_prompt(objective, stub_llm):
    result = objective(None)
    assert result.details["errors"] == 0 and result.details["error_ids"] == []
    assert result.correct == [True, False, True] and result.score == 2 / 3
    assert result.details["correct"] == ["q1", "q3"] and result.usage["calls"] == 3
    assert objective.space.projected == []
    for item in ITEMS:  # the LLM was asked each question with knowledge written without a soft prompt
        asked = _asked(stub_llm, item.question)
        assert "under no soft prompt." in asked and "soft prompt [" not in asked

    z = torch.tensor([1.0, 2.0, 4.0])
    trial = objective(z)  # a trial: p = A z reaches the writer, and its knowledge the LLM
    assert len(objective.space.projected) == 1 and objective.space.projected[0] is z
    for item in ITEMS:
        assert "under soft prompt [[7.0, 7.0]]." in _asked(stub_llm, item.question)
    assert stub_llm.request_count == 6
    assert trial.correct == [True, False, True] and trial.usage["calls"] == 3
