"""The small LM's arguments (the knowledge writer): model, adapter, template, generation size, backend."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..extras.constants import GENERATION_BATCH_SIZE
from ..small_lm.backend import SMALL_BACKENDS


@dataclass
class SmallModelArguments:
    """See `LLMArguments` for the metadata keys; `multiple`: a repeatable option (a tuple)."""

    small_model: str | None = field(default=None, metadata={
        "path": "dir", "help": "HF model directory of the small LM (default: the embedded SmolLM2-135M-Instruct)."})
    adapter: str | None = field(default=None, metadata={
        "path": "dir", "help": "LoRA adapter directory from the KIT recipe (merged at load; hf backend only)."})
    template: str | None = field(default=None, metadata={
        "help": "LLaMA-Factory chat template (default: blade_qwen for Qwen models, else blade_chatml)."})
    max_new_tokens: int = field(default=128, metadata={
        "min": 1, "show_default": True, "help": "Length of the knowledge the small LM writes."})
    batch_size: int = field(default=GENERATION_BATCH_SIZE, metadata={
        "min": 1, "show_default": True,
        "help": "Small-LM generation batch size (on CPU larger is faster; lower it if memory is short)."})
    small_backend: str = field(default="hf", metadata={
        "choices": SMALL_BACKENDS, "show_default": True, "envvar": "BLADE_SMALL_BACKEND",
        "help": "hf: transformers in this process. vllm: `vllm serve MERGED --enable-prompt-embeds` servers at "
                "--small-backend-url (merge a LoRA adapter first: `blade-bpo merge`)."})
    small_backend_urls: tuple[str, ...] = field(default=(), metadata={
        "option": "--small-backend-url", "multiple": True, "envvar": "BLADE_SMALL_BACKEND_URL",
        "help": "Base URL of a vLLM server, e.g. http://gpu1:8000 (repeatable: requests go round-robin; the "
                "environment variable takes several, space-separated). API key, if the servers need one: "
                "BLADE_SMALL_BACKEND_API_KEY."})
    small_concurrency: int = field(default=64, metadata={
        "min": 1, "show_default": True, "envvar": "BLADE_SMALL_CONCURRENCY",
        "help": "vLLM requests in flight over all servers (vllm)."})
    trust_remote_code: bool = field(default=False, metadata={
        "flag": True, "envvar": "BLADE_TRUST_REMOTE_CODE",
        "help": "Let the model directory run its own Python code on load (transformers' trust_remote_code). Off by default: a downloaded model could run anything; the embedded SmolLM2 and Qwen2.5 need no remote code."})

    def load_writer(self):
        """The KnowledgeWriter these arguments describe (argument errors become one line)."""
        from ..small_lm.loading import load_writer

        return load_writer(self.small_model, self.adapter, self.template, self.max_new_tokens, self.batch_size,
                           backend=self.small_backend, urls=tuple(self.small_backend_urls),
                           concurrency=self.small_concurrency, trust_remote_code=self.trust_remote_code)
