"""The small-model backend factory: `load_knowledge_writer` builds the `KnowledgeWriter` (see `base.py`)
that `--small-backend` names.

In the spirit of LLaMA-Factory's `infer_backend` -> `BaseEngine`: commands, BPO, evaluation and the server
only talk to a `KnowledgeWriter`. Backends:

- ``hf``: transformers in this process over LLaMA-Factory's loaders (`hf_backend.SoftPromptGenerator`).
- ``vllm``: one or more `vllm serve <merged model> --enable-prompt-embeds` servers, fed prompt embeddings built
  here from the tokenizer, the LLaMA-Factory template and the input embedding matrix
  (`vllm_backend.VLLMKnowledgeWriter`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..extras.constants import GENERATION_BATCH_SIZE
from .base import KnowledgeWriter

SMALL_BACKENDS = ("hf", "vllm")


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
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Let the model directory's own Python code run on load (transformers' trust_remote_code)."})


def load_knowledge_writer(config: SmallBackendConfig) -> KnowledgeWriter:
    """The `KnowledgeWriter` for `config.backend`.

    ValueError for an unknown backend or bad model arguments; BladeError (one line for the user) for an
    unmerged adapter or unreachable servers with the vllm backend.
    """
    if config.backend == "hf":
        from .hf_backend import SoftPromptGenerator

        return SoftPromptGenerator(config.model_name_or_path, adapter_name_or_path=config.adapter_name_or_path,
                                   template=config.template, max_new_tokens=config.max_new_tokens,
                                   batch_size=config.batch_size, trust_remote_code=config.trust_remote_code)
    if config.backend == "vllm":
        from .vllm_backend import VLLMKnowledgeWriter

        return VLLMKnowledgeWriter(config.model_name_or_path, config.urls,
                                   adapter_name_or_path=config.adapter_name_or_path, template=config.template,
                                   max_new_tokens=config.max_new_tokens, concurrency=config.concurrency,
                                   trust_remote_code=config.trust_remote_code)
    raise ValueError(f"unknown small-model backend {config.backend!r} (choose from {', '.join(SMALL_BACKENDS)})")
