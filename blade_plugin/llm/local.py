"""An in-process stand-in for the black-box LLM: any HF chat model directory (by default the embedded
SmolLM2), greedy, left-padded batches. For offline smoke runs only: a 135M model's answers carry no signal."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass
class LocalGeneration:
    text: str
    prompt_tokens: int
    completion_tokens: int


class LocalChatBackend:
    def __init__(self, model_dir: str, max_new_tokens: int = 256, batch_size: int = 8):
        self.model_dir = model_dir
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()  # one generate at a time: it already uses every core

    def _load(self) -> None:
        if self._model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            logger.info("Loading local LLM backend from %s", self.model_dir)
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir, padding_side="left")
            if self._tokenizer.pad_token is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
            self._model = AutoModelForCausalLM.from_pretrained(self.model_dir).eval()

    def generate(self, conversations: list[list[dict]], max_new_tokens: int | None = None) -> list[LocalGeneration]:
        """Greedy completions for chat conversations, in order; batches sorted by length to cut padding."""
        import torch

        with self._lock:
            self._load()
            tok, model = self._tokenizer, self._model
            prompts = [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
            order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
            results: list[LocalGeneration | None] = [None] * len(prompts)
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
                with torch.inference_mode():
                    out = model.generate(**enc, max_new_tokens=max_new_tokens or self.max_new_tokens,
                                         do_sample=False, pad_token_id=tok.pad_token_id)
                new = out[:, enc["input_ids"].shape[1]:]
                for row, i in enumerate(idx):
                    ids = new[row].tolist()
                    if tok.eos_token_id in ids:
                        ids = ids[: ids.index(tok.eos_token_id)]
                    results[i] = LocalGeneration(tok.decode(ids, skip_special_tokens=True).strip(),
                                                 int(enc["attention_mask"][row].sum()), len(ids))
            return results  # type: ignore[return-value]
