"""The soft-token inference hook: the small LM writes knowledge with n soft tokens prepended to its input
embeddings. Model, tokenizer, chat template and LoRA merging all come from LLaMA-Factory's own loaders,
so whatever `llamafactory-cli train` produced loads here the same way `llamafactory-cli chat` loads it.

Batches are left-padded; each row is [pad | soft tokens | prompt embeddings] with attention 0 on the pads
and 1 on the rest, so a padded row computes exactly what the same prompt computes alone.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from ..defaults import GENERATION_BATCH_SIZE

logger = logging.getLogger(__name__)


class SoftPromptGenerator:
    """The ``hf`` KnowledgeWriter (see `backend.py`): transformers in this process."""

    backend = "hf"

    def __init__(
        self,
        model_name_or_path: str,
        adapter_name_or_path: str | None = None,
        template: str = "blade_chatml",
        max_new_tokens: int = 128,
        batch_size: int = GENERATION_BATCH_SIZE,
        infer_dtype: str = "auto",
        decoder: str = "fast",
    ):
        """decoder: "fast" (our greedy loop that drops finished rows) or "hf" (transformers' generate)."""
        if decoder not in ("fast", "hf"):
            raise ValueError(f"decoder must be 'fast' or 'hf', got {decoder!r}")
        from llamafactory.data import get_template_and_fix_tokenizer
        from llamafactory.hparams import get_infer_args
        from llamafactory.model import load_model, load_tokenizer

        args = {"model_name_or_path": str(model_name_or_path), "template": template, "infer_dtype": infer_dtype,
                "trust_remote_code": True}
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
        self.decoder = decoder
        self.stop_ids = self.template.get_stop_token_ids(self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]
        self._embed = self.model.get_input_embeddings()

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
        config = Path(self.model_name_or_path) / "config.json"
        digest = hashlib.sha256(config.read_bytes()).hexdigest()[:16] if config.is_file() else None
        return {"base_model": self.model_name_or_path, "config_sha256": digest, "adapter": self.adapter_name_or_path,
                "hidden_size": self.hidden_size}

    # --- encoding -----------------------------------------------------------------------------------
    def encode(self, texts: list[str]) -> list[list[int]]:
        """Prompt ids for each user text: the chat template's one-turn prompt with an empty assistant turn."""
        return [
            self.template.encode_oneturn(self.tokenizer, [{"role": "user", "content": text},
                                                          {"role": "assistant", "content": ""}])[0]
            for text in texts
        ]

    def _batch_embeds(self, batch_ids: list[list[int]], soft_prompt: torch.Tensor | None):
        """inputs_embeds Tensor[b, L, hidden] and attention_mask Tensor[b, L] for one left-padded batch."""
        n_soft = 0 if soft_prompt is None else int(soft_prompt.shape[0])
        length = max(len(ids) for ids in batch_ids) + n_soft
        embeds = torch.zeros(len(batch_ids), length, self.hidden_size, dtype=self.dtype, device=self.device)
        mask = torch.zeros(len(batch_ids), length, dtype=torch.long, device=self.device)
        pad_embed = self._embed(torch.tensor([self.pad_id], device=self.device))[0]
        for row, ids in enumerate(batch_ids):
            start = length - len(ids) - n_soft
            embeds[row, :start] = pad_embed
            if n_soft:
                embeds[row, start:start + n_soft] = soft_prompt.to(self.device, self.dtype)
            embeds[row, start + n_soft:] = self._embed(torch.tensor(ids, device=self.device))
            mask[row, start:] = 1
        return embeds, mask

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
        if soft_prompt is not None:
            if soft_prompt.dim() != 2 or soft_prompt.shape[1] != self.hidden_size:
                raise ValueError(f"soft prompt must be [n_tokens, {self.hidden_size}], got {tuple(soft_prompt.shape)}")
            if soft_prompt.shape[0] == 0:
                soft_prompt = None
        all_ids = self.encode(texts)
        order = sorted(range(len(texts)), key=lambda i: len(all_ids[i]))  # similar lengths: less padding
        results: list[list[int]] = [[] for _ in texts]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="small LM", unit="q", leave=False)
        gen_kwargs = {"do_sample": False, **sampling}
        fast = self.decoder == "fast" and not sampling and self._greedy_loop_matches_generate()
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            embeds, mask = self._batch_embeds([all_ids[i] for i in idx], soft_prompt)
            if fast:
                out = self._greedy_decode(embeds, mask, max_new_tokens or self.max_new_tokens)
            else:
                out = self.model.generate(inputs_embeds=embeds, attention_mask=mask,
                                          max_new_tokens=max_new_tokens or self.max_new_tokens,
                                          eos_token_id=self.stop_ids, pad_token_id=self.pad_id,
                                          **gen_kwargs).tolist()
            for row, i in enumerate(idx):
                ids = out[row]
                cut = next((k for k, t in enumerate(ids) if t in self.stop_ids), len(ids))
                results[i] = ids[:cut]
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()
        return results

    def _greedy_loop_matches_generate(self) -> bool:
        """Our loop reproduces generate()'s greedy search incl. repetition_penalty; anything else falls back."""
        gc = self.model.generation_config
        unsupported = {"no_repeat_ngram_size": (None, 0), "encoder_repetition_penalty": (None, 1.0),
                       "bad_words_ids": (None,), "sequence_bias": (None,), "suppress_tokens": (None,),
                       "begin_suppress_tokens": (None,), "min_new_tokens": (None, 0), "min_length": (None, 0),
                       "forced_bos_token_id": (None,), "forced_eos_token_id": (None,), "num_beams": (None, 1)}
        return all(getattr(gc, key, None) in ok for key, ok in unsupported.items())

    def _greedy_decode(self, embeds: torch.Tensor, mask: torch.Tensor, max_new_tokens: int) -> list[list[int]]:
        """Greedy decoding of one left-padded batch. embeds: Tensor[b, L, hidden], mask: Tensor[b, L].

        Same tokens as generate(do_sample=False), but a row leaves the batch (and the KV cache) as soon as it
        emits a stop id: knowledge lengths vary a lot, and on CPU every finished row generate() keeps
        decoding costs as much as a live one. Returns the new ids per row, up to and including the stop id.
        """
        from transformers import DynamicCache

        penalty = float(getattr(self.model.generation_config, "repetition_penalty", None) or 1.0)
        stop = torch.tensor(self.stop_ids, device=self.device)
        # Positions count real tokens only, so a padded row sees the positions it would see alone.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        rows = torch.arange(embeds.shape[0], device=self.device)  # original row of each live row
        next_pos = positions[:, -1] + 1
        generated = torch.empty(embeds.shape[0], 0, dtype=torch.long, device=self.device)  # [live, step]
        results: list[list[int]] = [[] for _ in range(embeds.shape[0])]
        for step in range(max_new_tokens):
            logits = out.logits[:, -1].float()  # [live, vocab]
            if penalty != 1.0 and generated.shape[1]:
                seen = logits.gather(1, generated)
                logits.scatter_(1, generated, torch.where(seen < 0, seen * penalty, seen / penalty))
            token = logits.argmax(-1)  # [live]
            for row, tok in zip(rows.tolist(), token.tolist()):
                results[row].append(tok)
            if step == max_new_tokens - 1:
                break
            live = ~torch.isin(token, stop)
            if not live.all():
                keep = live.nonzero().squeeze(1)
                if keep.numel() == 0:
                    break
                cache.batch_select_indices(keep)
                rows, token, next_pos, mask, generated = (rows[keep], token[keep], next_pos[keep], mask[keep],
                                                          generated[keep])
            generated = torch.cat([generated, token[:, None]], dim=1)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            out = self.model(input_ids=token[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                             past_key_values=cache, use_cache=True)
            next_pos = next_pos + 1
        return results

    def generate(self, texts: list[str], soft_prompt: torch.Tensor | None = None, max_new_tokens: int | None = None,
                 progress: bool = False, **sampling) -> list[str]:
        """Knowledge text per input text, in order."""
        ids = self.generate_ids(texts, soft_prompt, max_new_tokens, progress, **sampling)
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]
