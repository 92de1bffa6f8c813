"""The small-model backend seam: what every knowledge writer offers, and the factory that picks one.

In the spirit of LLaMA-Factory's `infer_backend` -> `BaseEngine`: commands, BPO, evaluation and the server
only talk to a `KnowledgeWriter`; `load_knowledge_writer` builds the one `--small-backend` names. Backends:

- ``hf``: transformers in this process over LLaMA-Factory's loaders (`hf_backend.SoftPromptGenerator`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..defaults import GENERATION_BATCH_SIZE

if TYPE_CHECKING:
    import torch

SMALL_BACKENDS = ("hf",)


@runtime_checkable
class KnowledgeWriter(Protocol):
    """A small LM that writes knowledge for prompts, optionally under a soft prompt.

    A soft prompt is a Tensor[n_tokens, hidden_size] of input embeddings placed before the templated prompt.
    """

    backend: str
    """The backend's name ("hf", ...), as `--small-backend` spells it."""
    template_name: str
    """The LLaMA-Factory chat template used to wrap each prompt."""

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

    def generate(self, texts: list[str], soft_prompt: torch.Tensor | None = None, max_new_tokens: int | None = None,
                 progress: bool = False) -> list[str]:
        """Knowledge text per user text, in input order (greedy; stops at the template's stop tokens)."""


@dataclass
class SmallBackendConfig:
    """How to build a knowledge writer (the `--small-*` options)."""

    model_name_or_path: str = field(metadata={"help": "HF model directory of the small LM."})
    adapter_name_or_path: str | None = field(default=None, metadata={"help": "LoRA adapter directory."})
    template: str = field(default="blade_chatml", metadata={"help": "LLaMA-Factory chat template."})
    max_new_tokens: int = field(default=128, metadata={"help": "Length of the knowledge written."})
    batch_size: int = field(default=GENERATION_BATCH_SIZE, metadata={"help": "Generation batch size (hf)."})
    backend: str = field(default="hf", metadata={"help": "One of SMALL_BACKENDS."})


def load_knowledge_writer(config: SmallBackendConfig) -> KnowledgeWriter:
    """The `KnowledgeWriter` for `config.backend`; raises ValueError for an unknown backend."""
    if config.backend == "hf":
        from .hf_backend import SoftPromptGenerator

        return SoftPromptGenerator(config.model_name_or_path, adapter_name_or_path=config.adapter_name_or_path,
                                   template=config.template, max_new_tokens=config.max_new_tokens,
                                   batch_size=config.batch_size)
    raise ValueError(f"unknown small-model backend {config.backend!r} (choose from {', '.join(SMALL_BACKENDS)})")
