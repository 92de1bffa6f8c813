"""The BPO objective f(z): dev-set accuracy of the black-box LLM answering with the knowledge the small LM
writes under the soft prompt p = A z."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .run import TrialResult
from ..qa.answering import KnowledgeAnswerer
from ..qa.data import QAItem

if TYPE_CHECKING:
    from ..small_lm.soft_prompt import SoftPromptSpace


def usage_delta(before: dict, after: dict) -> dict:
    return {k: round(after[k] - before.get(k, 0), 4) for k, v in after.items() if isinstance(v, (int, float))}


@dataclass
class KnowledgeObjective:
    """Callable `z: Tensor[d] | None -> TrialResult`; the LLM cache makes repeated (question, knowledge) free."""

    items: list[QAItem]
    answerer: KnowledgeAnswerer  # its soft prompt is replaced by A z for each call
    space: SoftPromptSpace

    def __call__(self, z) -> TrialResult:
        """Score the soft prompt A z (z: Tensor[d]); z=None scores the small LM without soft tokens (baseline)."""
        soft_prompt = None if z is None else self.space.to_soft_prompt(z)
        client = self.answerer.client
        before = client.usage.as_dict()
        records, timings = self.answerer.with_soft_prompt(soft_prompt).answer_sync(self.items)
        # a request that failed for good marks its record (AnswerRecord.error) and scores it wrong
        errors = [r.id for r in records if r.error]
        correct = [bool(r.correct) and not r.error for r in records]
        usage = usage_delta(before, client.usage.as_dict())
        request_s = usage.pop("seconds", None)  # a timing, not a count: kept apart so usage is reproducible
        return TrialResult(
            score=sum(correct) / len(correct) if correct else 0.0,
            details={"correct": [r.id for r in records if r.correct],
                     "knowledge_chars": sum(len(r.knowledge) for r in records),
                     "errors": len(errors), "error_ids": errors},
            usage=usage,
            timings={"generate_s": round(timings.generate_s, 3), "llm_wait_s": round(timings.llm_wait_s, 3),
                     "total_s": round(timings.total_s, 3), "llm_request_s": request_s},
            correct=correct,
        )
