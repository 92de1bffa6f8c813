"""What every small-LM knowledge writer offers (the `KnowledgeWriter` protocol) and the helpers both
backends share; the factory that picks one is `backend.py` (LLaMA-Factory keeps `chat/base_engine.py`
apart from `chat/chat_model.py` the same way, so the backends import this module and nothing imports back).

Every writer decodes greedily and stops at the template's stop tokens, so both give the same tokens for the
same prompts and soft prompt; tests hold the two backends to that. (One known difference: for a model whose
generation_config sets a repetition_penalty, vLLM also penalises prompt tokens, transformers with
inputs_embeds only generated ones.)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

MERGE_RECORD = "blade_merge.json"  # written by `blade-bpo merge`: which base model and adapter a merged dir came from


@runtime_checkable
class KnowledgeWriter(Protocol):
    """A small LM that writes knowledge for prompts, optionally under a soft prompt.

    A soft prompt is a Tensor[n_tokens, hidden_size] of input embeddings placed before the templated prompt.
    """

    backend: str
    """The backend's name ("hf", ...), as `--small-backend` spells it."""
    template_name: str
    """The LLaMA-Factory chat template used to wrap each prompt."""
    max_new_tokens: int
    """Default length limit of the knowledge written (tokens)."""

    @property
    def hidden_size(self) -> int:
        """Width of the input embeddings (a soft prompt's second dimension)."""

    @property
    def embedding_matrix(self) -> torch.Tensor:
        """Tensor[vocab, hidden_size]: the input embeddings (read-only; soft-prompt spaces sample from it)."""

    @property
    def mean_embedding_norm(self) -> float:
        """Mean L2 norm of a token embedding: the scale a soft token should have."""

    @property
    def model_fingerprint(self) -> dict:
        """JSON-able identity of the weights (base model, adapter, config digest, hidden size)."""

    def generate_ids(self, texts: list[str], soft_prompt: torch.Tensor | None = None,
                     max_new_tokens: int | None = None, progress: bool = False) -> list[list[int]]:
        """New token ids per user text, in input order, cut before the first stop token.

        Each text is wrapped in the template's one-turn prompt; soft_prompt (Tensor[n_tokens, hidden_size] or
        None) goes before the templated prompt's token embeddings.
        """

    def generate(self, texts: list[str], soft_prompt: torch.Tensor | None = None, max_new_tokens: int | None = None,
                 progress: bool = False) -> list[str]:
        """Knowledge text per user text, in input order (greedy; stops at the template's stop tokens)."""


def check_soft_prompt(soft_prompt: torch.Tensor | None, hidden_size: int) -> torch.Tensor | None:
    """The soft prompt to prepend (None for none or zero tokens); ValueError for a wrong shape."""
    if soft_prompt is None:
        return None
    if soft_prompt.dim() != 2 or soft_prompt.shape[1] != hidden_size:
        raise ValueError(f"soft prompt must be [n_tokens, {hidden_size}], got {tuple(soft_prompt.shape)}")
    return soft_prompt if soft_prompt.shape[0] else None


def weights_fingerprint(model_dir: str, adapter: str | None, hidden_size: int) -> dict:
    """JSON-able identity of a model directory (+ adapter) for soft-prompt metadata.

    A directory written by `blade-bpo merge` reports the base model and adapter it was merged from, so a soft
    prompt tuned on base + adapter (hf) is recognised as compatible with the merged model (vllm).
    """
    record = Path(model_dir) / MERGE_RECORD
    if adapter is None and record.is_file():
        merged = json.loads(record.read_text(encoding="utf-8"))
        return {"base_model": merged["base_model"], "config_sha256": merged["config_sha256"],
                "adapter": merged["adapter"], "hidden_size": hidden_size, "merged_model": str(model_dir)}
    config = Path(model_dir) / "config.json"
    digest = hashlib.sha256(config.read_bytes()).hexdigest()[:16] if config.is_file() else None
    return {"base_model": str(model_dir), "config_sha256": digest, "adapter": adapter, "hidden_size": hidden_size}
