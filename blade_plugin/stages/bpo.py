"""BPO as a stage: the soft-prompt search both `blade-bpo optimize` and `blade-bpo run` call.

The search itself (botorch, trials, resume) is `bpo/run.py`; this module assembles it from a knowledge writer,
the prompts and the LLM: the projection space scaled to the writer's embeddings, the objective (dev accuracy of
the LLM answering with the writer's knowledge), an optional re-score objective, and the selection guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..bpo.run import BPORunConfig, BPOSummary


@dataclass
class BPOOutcome:
    """What a BPO stage produced: the search summary, the space it searched, and (with the guard) the choice."""

    summary: BPOSummary
    space: Any  # small_lm.soft_prompt.SoftPromptSpace
    selection: dict | None = None


def optimize_soft_prompt(items: list, prompts, client, writer, config: BPORunConfig, metadata: dict, *,
                         init: str = "random", rescore_items: list | None = None,
                         fingerprint: Callable[[Any], Any] | None = None, batch_size: int | None = None,
                         selection_guard: bool = False) -> BPOOutcome:
    """Search `config.n_tokens` soft tokens p = A z (z in [-1, 1]^d) that maximise the LLM's accuracy on `items`
    with `writer`'s knowledge; trial 0 is the writer without soft tokens.

    `metadata` goes into the soft prompt's file (the projection's scale is added); `fingerprint(space)` gives the
    caller's JobFingerprint for resume checks; `rescore_items` are scored again for the top candidates before
    the choice; `selection_guard` also writes selected_soft_prompt.safetensors (bpo/guard.py).
    """
    from ..bpo.guard import keep_better_soft_prompt
    from ..bpo.objective import KnowledgeObjective
    from ..bpo.run import run_bpo
    from ..qa.answering import KnowledgeAnswerer
    from ..small_lm.soft_prompt import SoftPromptSpace

    space = SoftPromptSpace.for_generator(writer, n_tokens=config.n_tokens, d=config.d, seed=config.seed, init=init)
    answerer = KnowledgeAnswerer(prompts, client, writer, **({"batch_size": batch_size} if batch_size else {}))
    objective = KnowledgeObjective(items, answerer, space)
    rescore = KnowledgeObjective(rescore_items, answerer, space) if rescore_items else None
    summary = run_bpo(config, objective, space.to_soft_prompt, {**metadata, "scale": space.scale},
                      fingerprint=fingerprint(space) if fingerprint else None, rescore=rescore,
                      spend=getattr(client, "budget", None))
    selection = None
    if selection_guard:
        # trial 0 of the run is the baseline: the small LM without soft tokens on the same dev questions
        selection = keep_better_soft_prompt(Path(config.out_dir), summary.best_score, summary.baseline["score"],
                                            writer.hidden_size, summary.noise.get("split_half_optimism"))
    return BPOOutcome(summary, space, selection)
