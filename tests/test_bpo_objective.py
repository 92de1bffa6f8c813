"""KnowledgeObjective's bookkeeping: per-item LLM errors counted and scored wrong; the baseline has no soft prompt."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from blade_plugin.bpo.objective import KnowledgeObjective
from blade_plugin.qa.answering import AnswerRecord, AnswerTimings, KnowledgeAnswerer


@dataclass
class _Usage:
    calls: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"calls": self.calls, "seconds": self.seconds}


class _RecordedClient:
    """Returns recorded answers instead of running the coroutine: the seam between BPO and answer_items.
    `calls` keeps the locals of the unstarted coroutine (KnowledgeAnswerer.answer: its `self` carries the soft prompt)."""

    def __init__(self, records):
        self.records, self.usage, self.calls = records, _Usage(), []

    def run(self, coro):
        self.calls.append(dict(coro.cr_frame.f_locals))
        coro.close()  # never started: no model, no HTTP
        self.usage.calls += len(self.records)
        self.usage.seconds += 1.25
        return self.records, AnswerTimings(generate_s=0.5, llm_wait_s=0.1, total_s=0.7)


class _Space:
    def __init__(self):
        self.projected = []

    def to_soft_prompt(self, z):
        self.projected.append(z)
        return torch.full((1, 4), 7.0)


def _objective(records):
    return KnowledgeObjective(items=[], answerer=KnowledgeAnswerer(prompts=None, client=_RecordedClient(records)),
                              space=_Space())


def test_errors_are_counted_and_scored_wrong():
    records = [AnswerRecord("q1", "k", "Answer: A", ["A"], True), AnswerRecord("q2", "k", "", None, True),
               AnswerRecord("q3", "k", "Answer: B", ["B"], True)]
    # a failed request scores wrong whatever its record's `correct` says (here True, so dropping the error
    # check would score 3/3)
    records[1].error = "400: prompt too long"
    result = _objective(records)(torch.zeros(3))
    assert result.details["errors"] == 1 and result.details["error_ids"] == ["q2"]
    assert result.correct == [True, False, True] and result.score == 2 / 3
    # request latency is a timing, not part of the reproducible usage counts
    assert result.usage == {"calls": 3} and result.timings["llm_request_s"] == 1.25


def test_records_without_errors_score_as_recorded_and_baseline_has_no_soft_prompt():
    records = [AnswerRecord("q1", "k", "Answer: A", ["A"], False), AnswerRecord("q2", "k", "Answer: C", ["C"], True)]
    objective = _objective(records)
    result = objective(None)
    assert result.details["errors"] == 0 and result.details["error_ids"] == []
    assert result.correct == [False, True] and result.score == 0.5 and result.details["correct"] == ["q2"]
    assert objective.space.projected == [] and objective.answerer.client.calls[0]["self"].soft_prompt is None
    z = torch.ones(3)
    objective(z)  # a trial: p = A z goes to answer_items
    assert objective.space.projected == [z] and torch.equal(objective.answerer.client.calls[1]["self"].soft_prompt,
                                                            torch.full((1, 4), 7.0))
