"""The soft-token hook on the real embedded model, loaded through LLaMA-Factory's loaders."""

from __future__ import annotations

import pytest
import torch

from blade_plugin.small_lm.greedy import greedy_loop_matches_generate

TEXTS = [
    "What does aspirin inhibit?",
    "Name a beta blocker used for hypertension and explain briefly how it works in the body.",
    "Which vitamin does warfarin antagonise?",
]


def _plain_greedy(generator, text: str, max_new_tokens: int = 12) -> list[int]:
    ids = generator.encode([text])[0]
    with torch.inference_mode():
        out = generator.model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids),
                                       dtype=torch.long), max_new_tokens=max_new_tokens, do_sample=False,
                                       eos_token_id=generator.stop_ids, pad_token_id=generator.pad_id)
    new = out[0, len(ids):].tolist()
    return new[: next((i for i, t in enumerate(new) if t in generator.stop_ids), len(new))]


def test_prompt_ids_come_from_the_llamafactory_template(generator):
    [ids] = generator.encode(["Hi"])
    assert generator.tokenizer.decode(ids) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert generator.stop_ids == [2] and generator.hidden_size == 576


@pytest.mark.slow
def test_zero_soft_tokens_match_plain_input_ids(generator):
    empty = torch.zeros(0, generator.hidden_size)
    via_embeds = generator.generate_ids(TEXTS, soft_prompt=empty)
    assert via_embeds == generator.generate_ids(TEXTS, soft_prompt=None)
    assert via_embeds == [_plain_greedy(generator, t) for t in TEXTS]


@pytest.mark.slow
def test_padded_batch_rows_equal_single_runs(generator):
    soft = torch.randn(5, generator.hidden_size, generator=torch.Generator().manual_seed(0)) * 0.1
    batched = generator.generate_ids(TEXTS, soft_prompt=soft)
    alone = [generator.generate_ids([t], soft_prompt=soft)[0] for t in TEXTS]
    assert batched == alone


@pytest.mark.slow
def test_soft_prompt_changes_generation(generator):
    soft = torch.randn(5, generator.hidden_size, generator=torch.Generator().manual_seed(1)) * 0.3
    assert generator.generate_ids(TEXTS, soft_prompt=soft) != generator.generate_ids(TEXTS)


def test_generation_stops_at_turn_end_without_special_tokens(generator):
    ids = generator.generate_ids(["Say only the word yes."], max_new_tokens=40)[0]
    assert 2 not in ids and 1 not in ids  # cut before <|im_end|>, never runs into <|im_start|>
    text = generator.generate(["Say only the word yes."], max_new_tokens=40)[0]
    assert "<|im_" not in text and text


def test_wrong_soft_prompt_shape_is_rejected(generator):
    with pytest.raises(ValueError, match=r"soft prompt must be \[n_tokens, 576\]"):
        generator.generate(["x"], soft_prompt=torch.zeros(5, 100))


@pytest.mark.slow
def test_lora_adapter_is_merged_by_llamafactory_loader(default_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from blade_plugin.small_lm.hf_backend import SoftPromptGenerator

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(default_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    reference = peft_model.merge_and_unload().eval()

    with_adapter = SoftPromptGenerator(str(default_model_dir), adapter_name_or_path=str(tmp_path / "adapter"),
                                       template="blade_chatml", max_new_tokens=10)
    plain = SoftPromptGenerator(str(default_model_dir), template="blade_chatml", max_new_tokens=10)
    text = TEXTS[0]
    ids = with_adapter.encode([text])[0]
    with torch.inference_mode():
        ref = reference.generate(input_ids=torch.tensor([ids]), max_new_tokens=10, do_sample=False,
                                 eos_token_id=with_adapter.stop_ids, pad_token_id=with_adapter.pad_id)[0, len(ids):]
    ref = ref.tolist()
    ref = ref[: next((i for i, t in enumerate(ref) if t in with_adapter.stop_ids), len(ref))]
    got = with_adapter.generate_ids([text])[0]
    assert got == ref
    assert got != plain.generate_ids([text])[0]
    assert with_adapter.model_fingerprint["adapter"] == str(tmp_path / "adapter")


MIXED = [*TEXTS, "Say only the word yes.", "Answer with one letter: is water wet? A. yes B. no"]


def _both_decoders(generator, texts, soft, max_new_tokens):
    reference = generator.with_settings(decoder="hf").generate_ids(texts, soft_prompt=soft,
                                                                   max_new_tokens=max_new_tokens)
    assert generator.decoder == "fast"  # with_settings made a new writer, this one is unchanged
    return generator.generate_ids(texts, soft_prompt=soft, max_new_tokens=max_new_tokens), reference


@pytest.mark.slow
def test_fast_loop_drops_finished_rows_and_matches_transformers_generate(generator):
    soft = torch.randn(5, generator.hidden_size, generator=torch.Generator().manual_seed(2)) * 0.1
    fast, reference = _both_decoders(generator, MIXED, soft, max_new_tokens=24)
    assert fast == reference
    assert min(map(len, fast)) < 24 <= max(map(len, fast))  # some rows left the batch early


@pytest.mark.slow
def test_fast_loop_applies_the_models_repetition_penalty_like_generate(generator):
    config = generator.model.generation_config
    try:
        config.repetition_penalty = 1.5  # e.g. Qwen2.5-Instruct ships 1.05
        fast, reference = _both_decoders(generator, MIXED, None, max_new_tokens=20)
        config.repetition_penalty = 1.0
        unpenalised = generator.generate_ids(MIXED, max_new_tokens=20)
    finally:
        config.repetition_penalty = 1.0
    assert fast == reference and fast != unpenalised


@pytest.mark.slow
def test_unsupported_generation_config_falls_back_to_generate(generator):
    config = generator.model.generation_config
    try:
        config.no_repeat_ngram_size = 2
        assert not greedy_loop_matches_generate(config)
        fast, reference = _both_decoders(generator, TEXTS, None, max_new_tokens=16)
    finally:
        config.no_repeat_ngram_size = 0
    assert fast == reference and greedy_loop_matches_generate(config)
