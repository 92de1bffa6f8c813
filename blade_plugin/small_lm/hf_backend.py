"""The ``hf`` knowledge writer: the small LM writes knowledge with n soft tokens prepended to its input
embeddings, in this process. Model, tokenizer, chat template and LoRA merging all come from LLaMA-Factory's
own loaders, so whatever `llamafactory-cli train` produced loads here the same way `llamafactory-cli chat`
loads it. Decoding is the shared batched greedy loop in `greedy.py`.
"""

from __future__ import annotations

import copy
import logging

import torch

from ..extras.constants import GENERATION_BATCH_SIZE
from .base import check_soft_prompt, weights_fingerprint
from .greedy import DECODERS, Decoder, generate_batch, left_padded_embeds

logger = logging.getLogger(__name__)


class SoftPromptGenerator:
    """The ``hf`` KnowledgeWriter (see `base.py`): transformers in this process."""

    backend = "hf"

    def __init__(
        self,
        model_name_or_path: str,
        adapter_name_or_path: str | None = None,
        template: str = "blade_chatml",
        max_new_tokens: int = 128,
        batch_size: int = GENERATION_BATCH_SIZE,
        infer_dtype: str = "auto",
        decoder: Decoder = "fast",
        trust_remote_code: bool = False,
    ):
        """decoder: "fast" (the shared greedy loop that drops finished rows) or "hf" (transformers' generate);
        trust_remote_code: let the model directory run its own Python code on load (never by default)."""
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be 'fast' or 'hf', got {decoder!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        from llamafactory.data import get_template_and_fix_tokenizer
        from llamafactory.hparams import get_infer_args
        from llamafactory.model import load_model, load_tokenizer

        args = {"model_name_or_path": str(model_name_or_path), "template": template, "infer_dtype": infer_dtype,
                "trust_remote_code": trust_remote_code}
        if adapter_name_or_path:
            args.update(adapter_name_or_path=str(adapter_name_or_path), finetuning_type="lora")
        model_args, data_args, finetuning_args, _ = get_infer_args(args)
        model_args.device_map = {"": torch.device("cpu")} if not torch.cuda.is_available() else model_args.device_map
        self.tokenizer = load_tokenizer(model_args)["tokenizer"]
        # The template fixes eos/pad tokens in the tokenizer, which load_model relies on: order matters.
        self.template = get_template_and_fix_tokenizer(self.tokenizer, data_args)
        self.model = load_model(self.tokenizer, model_args, finetuning_args, is_trainable=False).eval()
        self.template_name = template
        self.model_name_or_path = str(model_name_or_path)
        self.adapter_name_or_path = str(adapter_name_or_path) if adapter_name_or_path else None
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.decoder: Decoder = decoder
        self.stop_ids = self.template.get_stop_token_ids(self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]
        self._embed = self.model.get_input_embeddings()

    def with_settings(self, *, batch_size: int | None = None, decoder: Decoder | None = None,
                      max_new_tokens: int | None = None) -> SoftPromptGenerator:
        """A new writer sharing this one's weights, with other generation settings (this one is unchanged)."""
        if decoder is not None and decoder not in DECODERS:
            raise ValueError(f"decoder must be 'fast' or 'hf', got {decoder!r}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        other = copy.copy(self)
        other.batch_size = batch_size or self.batch_size
        other.decoder = decoder or self.decoder
        other.max_new_tokens = max_new_tokens or self.max_new_tokens
        return other

    # --- model facts --------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self._embed.weight.dtype

    @property
    def hidden_size(self) -> int:
        return int(self._embed.weight.shape[1])

    @property
    def embedding_matrix(self) -> torch.Tensor:
        """Tensor[vocab, hidden] (a view of the model's input embeddings; do not modify)."""
        return self._embed.weight.detach()

    @property
    def mean_embedding_norm(self) -> float:
        return float(self.embedding_matrix.float().norm(dim=-1).mean())

    @property
    def model_fingerprint(self) -> dict:
        """Identifies the model a soft prompt was tuned for (saved in the soft prompt's metadata)."""
        return weights_fingerprint(self.model_name_or_path, self.adapter_name_or_path, self.hidden_size)

    # --- encoding -----------------------------------------------------------------------------------
    def encode(self, texts: list[str]) -> list[list[int]]:
        """Prompt ids for each user text: the chat template's one-turn prompt with an empty assistant turn."""
        return [
            self.template.encode_oneturn(self.tokenizer, [{"role": "user", "content": text},
                                                          {"role": "assistant", "content": ""}])[0]
            for text in texts
        ]

    # --- generation ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate_ids(
        self,
        texts: list[str],
        soft_prompt: torch.Tensor | None = None,
        max_new_tokens: int | None = None,
        progress: bool = False,
        **sampling,
    ) -> list[list[int]]:
        """New token ids per text (cut before the first stop id). soft_prompt: Tensor[n_tokens, hidden]."""
        soft_prompt = check_soft_prompt(soft_prompt, self.hidden_size)
        all_ids = self.encode(texts)
        order = sorted(range(len(texts)), key=lambda i: len(all_ids[i]))  # similar lengths: less padding
        results: list[list[int]] = [[] for _ in texts]
        bar = None
        if progress:
            from ..runs.progress import tqdm

            bar = tqdm(total=len(texts), desc="small LM", unit="q", leave=False)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            embeds, mask = left_padded_embeds(self._embed, [all_ids[i] for i in idx], self.pad_id, soft_prompt)
            out = generate_batch(self.model, embeds, mask, max_new_tokens or self.max_new_tokens, self.stop_ids,
                                 self.pad_id, self.decoder, **sampling)
            for row, i in enumerate(idx):
                results[i] = out[row]
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()
        return results

    def generate(self, texts: list[str], soft_prompt: torch.Tensor | None = None, max_new_tokens: int | None = None,
                 progress: bool = False, **sampling) -> list[str]:
        """Knowledge text per input text, in order."""
        ids = self.generate_ids(texts, soft_prompt, max_new_tokens, progress, **sampling)
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]
