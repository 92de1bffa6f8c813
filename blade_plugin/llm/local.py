"""An in-process stand-in for the black-box LLM: any HF chat model directory (by default the embedded
SmolLM2), greedy, left-padded batches through the small-model side's one decoding loop (`small_lm/greedy.py`).
For offline smoke runs only: a 135M model's answers carry no signal."""

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
        self._stop_ids: list[int] = []
        self._lock = threading.Lock()  # one generate at a time: it already uses every core

    def _load(self) -> None:
        if self._model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            logger.info("Loading local LLM backend from %s", self.model_dir)
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            if self._tokenizer.pad_token is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
            self._model = AutoModelForCausalLM.from_pretrained(self.model_dir).eval()
            # generate() stops at the generation config's eos ids; the chat turn also ends at the tokenizer's.
            eos = self._model.generation_config.eos_token_id
            eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
            self._stop_ids = list(dict.fromkeys([*eos, self._tokenizer.eos_token_id]))

    def generate(self, conversations: list[list[dict]], max_new_tokens: int | None = None) -> list[LocalGeneration]:
        """Greedy completions for chat conversations, in order; batches sorted by length to cut padding."""
        from ..small_lm.greedy import generate_batch, left_padded_embeds

        with self._lock:
            self._load()
            tok, model = self._tokenizer, self._model
            prompts = [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
            ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
            order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
            results: list[LocalGeneration | None] = [None] * len(ids)
            embed = model.get_input_embeddings()
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                embeds, mask = left_padded_embeds(embed, [ids[i] for i in idx], tok.pad_token_id)
                new = generate_batch(model, embeds, mask, max_new_tokens or self.max_new_tokens, self._stop_ids,
                                     tok.pad_token_id)
                for row, i in enumerate(idx):
                    results[i] = LocalGeneration(tok.decode(new[row], skip_special_tokens=True).strip(),
                                                 len(ids[i]), len(new[row]))
            return results  # type: ignore[return-value]
