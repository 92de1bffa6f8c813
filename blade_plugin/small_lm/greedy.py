"""The one batched greedy decoding loop, shared by the ``hf`` knowledge writer and the local stand-in LLM.

Batches are left-padded input embeddings; each row is [pad | soft tokens | prompt embeddings] with attention
0 on the pads, and positions that count real tokens only, so a padded row computes what it computes alone.
The loop drops a row from the batch (and from the KV cache) as soon as it emits a stop id: knowledge lengths
vary a lot, and on CPU every finished row that transformers' `generate()` keeps decoding costs as much as a
live one. Configurations the loop does not reproduce fall back to `generate()`.
"""

from __future__ import annotations

from typing import Literal

import torch

Decoder = Literal["fast", "hf"]
DECODERS: tuple[str, ...] = ("fast", "hf")

# generation_config entries the fast loop does not implement, with the values that mean "off".
_UNSUPPORTED = {"no_repeat_ngram_size": (None, 0), "encoder_repetition_penalty": (None, 1.0),
                "bad_words_ids": (None,), "sequence_bias": (None,), "suppress_tokens": (None,),
                "begin_suppress_tokens": (None,), "min_new_tokens": (None, 0), "min_length": (None, 0),
                "forced_bos_token_id": (None,), "forced_eos_token_id": (None,), "num_beams": (None, 1)}


def greedy_loop_matches_generate(generation_config) -> bool:
    """True when our loop reproduces generate()'s greedy search (incl. repetition_penalty) for this config."""
    return all(getattr(generation_config, key, None) in ok for key, ok in _UNSUPPORTED.items())


def left_padded_embeds(embed: torch.nn.Module, batch_ids: list[list[int]], pad_id: int,
                       soft_prompt: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """inputs_embeds Tensor[b, L, hidden] and attention_mask Tensor[b, L] for one left-padded batch.

    embed: the model's input embedding layer; soft_prompt: Tensor[n_soft, hidden] or None, placed between the
    pads and each row's prompt embeddings (cast to the embedding dtype, as the model would see a token).
    """
    weight = embed.weight
    n_soft = 0 if soft_prompt is None else int(soft_prompt.shape[0])
    length = max(len(ids) for ids in batch_ids) + n_soft
    embeds = torch.zeros(len(batch_ids), length, weight.shape[1], dtype=weight.dtype, device=weight.device)
    mask = torch.zeros(len(batch_ids), length, dtype=torch.long, device=weight.device)
    pad_embed = embed(torch.tensor([pad_id], device=weight.device))[0]
    for row, ids in enumerate(batch_ids):
        start = length - len(ids) - n_soft
        embeds[row, :start] = pad_embed
        if n_soft:
            embeds[row, start:start + n_soft] = soft_prompt.to(weight.device, weight.dtype)
        embeds[row, start + n_soft:] = embed(torch.tensor(ids, device=weight.device))
        mask[row, start:] = 1
    return embeds, mask


@torch.inference_mode()
def greedy_decode(model, embeds: torch.Tensor, mask: torch.Tensor, max_new_tokens: int,
                  stop_ids: list[int]) -> list[list[int]]:
    """Greedy decoding of one left-padded batch. embeds: Tensor[b, L, hidden], mask: Tensor[b, L].

    Same tokens as generate(do_sample=False) with the model's repetition_penalty, but each row leaves the
    batch as soon as it stops. Returns the new ids per row, up to and including the stop id.
    """
    from transformers import DynamicCache

    device = embeds.device
    penalty = float(getattr(model.generation_config, "repetition_penalty", None) or 1.0)
    stop = torch.tensor(stop_ids, device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    out = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, past_key_values=cache,
                use_cache=True, logits_to_keep=1)
    rows = torch.arange(embeds.shape[0], device=device)  # original row of each live row
    next_pos = positions[:, -1] + 1
    generated = torch.empty(embeds.shape[0], 0, dtype=torch.long, device=device)  # [live, step]
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
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                    past_key_values=cache, use_cache=True)
        next_pos = next_pos + 1
    return results


@torch.inference_mode()
def generate_batch(model, embeds: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, stop_ids: list[int],
                   pad_id: int, decoder: Decoder = "fast", **sampling) -> list[list[int]]:
    """New ids per row of one left-padded batch, cut before the first stop id.

    decoder "fast" uses `greedy_decode` when it reproduces generate() for the model's generation config and
    no sampling arguments are given; otherwise (or with decoder "hf") transformers' generate() runs.
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    if decoder == "fast" and not sampling and greedy_loop_matches_generate(model.generation_config):
        out = greedy_decode(model, embeds, mask, max_new_tokens, stop_ids)
    else:
        out = model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                             eos_token_id=stop_ids, pad_token_id=pad_id, **{"do_sample": False, **sampling}).tolist()
    return [ids[:next((k for k, t in enumerate(ids) if t in stop_ids), len(ids))] for ids in out]
