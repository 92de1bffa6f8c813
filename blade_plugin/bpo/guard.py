"""The selection guard: keep BPO's soft prompt only when its dev win is larger than selection noise.

Written as `<run>/selected_soft_prompt.safetensors` next to BPO's own `soft_prompt.safetensors`; `ablate
--workspace` and the demo read the selected one first.
"""

from __future__ import annotations

from pathlib import Path

SELECTED = "selected_soft_prompt.safetensors"


def keep_better_soft_prompt(bpo_dir: Path, best_score: float, baseline: float, hidden: int,
                            optimism: float | None = None) -> dict:
    """BPO's soft prompt only if its dev score beats the no-soft-prompt baseline by more than the selection
    optimism BPO itself estimated (how much the best of several trials overstates on this dev set, split-half;
    0 when unknown), else an empty one (Tensor[0, hidden]): BLADE then falls back to DP + KIT, never below it
    on dev, and a tie or a noise-sized win keeps the simpler model."""
    import torch

    from ..small_lm.soft_prompt import load_soft_prompt, save_soft_prompt

    bpo_dir = Path(bpo_dir)
    margin = max(0.0, optimism or 0.0)
    keep = best_score - baseline > margin
    tensor, meta = load_soft_prompt(bpo_dir / "soft_prompt.safetensors")
    chosen = tensor if keep else torch.zeros(0, hidden)
    save_soft_prompt(bpo_dir / SELECTED, chosen,
                     {**meta, "selected": "bpo" if keep else "baseline (no soft prompt)",
                      "dev_best": best_score, "dev_baseline": baseline, "optimism": margin})
    return {"kept_soft_prompt": keep, "dev_best": best_score, "dev_baseline": baseline, "optimism": margin}
