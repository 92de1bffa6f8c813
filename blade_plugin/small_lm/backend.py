"""The small-model backend seam: what every knowledge writer offers, and the factory that picks one.

In the spirit of LLaMA-Factory's `infer_backend` -> `BaseEngine`: commands, BPO, evaluation and the server
only talk to a `KnowledgeWriter`; `load_knowledge_writer` builds the one `--small-backend` names. Backends:

- ``hf``: transformers in this process over LLaMA-Factory's loaders (`hf_backend.SoftPromptGenerator`).
- ``vllm``: one or more `vllm serve <merged model> --enable-prompt-embeds` servers, fed prompt embeddings built
  here from the tokenizer, the LLaMA-Factory template and the input embedding matrix
  (`vllm_backend.VLLMKnowledgeWriter`).

Every writer decodes greedily and stops at the template's stop tokens, so both give the same tokens for the
same prompts and soft prompt; tests hold the two backends to that. (One known difference: for a model whose
generation_config sets a repetition_penalty, vLLM also penalises prompt tokens, transformers with
inputs_embeds only generated ones.)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..extras.constants import GENERATION_BATCH_SIZE

if TYPE_CHECKING:
    import torch

SMALL_BACKENDS = ("hf", "vllm")
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


@dataclass
class SmallBackendConfig:
    """How to build a knowledge writer (the `--small-*` options)."""

    model_name_or_path: str = field(metadata={"help": "HF model directory of the small LM."})
    adapter_name_or_path: str | None = field(default=None, metadata={"help": "LoRA adapter directory."})
    template: str = field(default="blade_chatml", metadata={"help": "LLaMA-Factory chat template."})
    max_new_tokens: int = field(default=128, metadata={"help": "Length of the knowledge written."})
    batch_size: int = field(default=GENERATION_BATCH_SIZE, metadata={"help": "Generation batch size (hf)."})
    backend: str = field(default="hf", metadata={"help": "One of SMALL_BACKENDS."})
    urls: tuple[str, ...] = field(default=(), metadata={"help": "vLLM server base URLs, used round-robin (vllm)."})
    concurrency: int = field(default=64, metadata={"help": "Requests in flight over all servers (vllm)."})


def load_knowledge_writer(config: SmallBackendConfig) -> KnowledgeWriter:
    """The `KnowledgeWriter` for `config.backend`.

    ValueError for an unknown backend or bad model arguments; BladeError (one line for the user) for an
    unmerged adapter or unreachable servers with the vllm backend.
    """
    if config.backend == "hf":
        from .hf_backend import SoftPromptGenerator

        return SoftPromptGenerator(config.model_name_or_path, adapter_name_or_path=config.adapter_name_or_path,
                                   template=config.template, max_new_tokens=config.max_new_tokens,
                                   batch_size=config.batch_size)
    if config.backend == "vllm":
        from .vllm_backend import VLLMKnowledgeWriter

        return VLLMKnowledgeWriter(config.model_name_or_path, config.urls,
                                   adapter_name_or_path=config.adapter_name_or_path, template=config.template,
                                   max_new_tokens=config.max_new_tokens, concurrency=config.concurrency)
    raise ValueError(f"unknown small-model backend {config.backend!r} (choose from {', '.join(SMALL_BACKENDS)})")
