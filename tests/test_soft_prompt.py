from __future__ import annotations

import pytest
import torch

from blade_plugin.extras.errors import BladeError
from blade_plugin.small_lm.soft_prompt import SoftPromptSpace, load_soft_prompt, save_soft_prompt


def test_projection_is_deterministic_from_the_seed():
    a = SoftPromptSpace(hidden=64, target_norm=3.2, n_tokens=5, d=10, seed=3)
    b = SoftPromptSpace(hidden=64, target_norm=3.2, n_tokens=5, d=10, seed=3)
    c = SoftPromptSpace(hidden=64, target_norm=3.2, n_tokens=5, d=10, seed=4)
    z = torch.linspace(-1, 1, 10)
    assert torch.equal(a.to_soft_prompt(z), b.to_soft_prompt(z))
    assert not torch.equal(a.to_soft_prompt(z), c.to_soft_prompt(z))
    assert a.to_soft_prompt(z).shape == (5, 64)


def test_soft_token_norms_match_real_embeddings(generator):
    space = SoftPromptSpace.for_generator(generator, n_tokens=5, d=10, seed=0)
    target = generator.mean_embedding_norm
    assert 2.5 < target < 4.0  # SmolLM2's real token embeddings
    z = torch.rand(200, 10, generator=torch.Generator().manual_seed(0)) * 2 - 1
    norms = torch.stack([space.to_soft_prompt(zi).norm(dim=-1) for zi in z])
    assert abs(float(norms.mean()) / target - 1) < 0.2
    # the reference code's unscaled U(-1, 1) projection, for contrast
    naive = (torch.rand(5 * 576, 10) * 2 - 1) @ z[0].float()
    assert float(naive.reshape(5, 576).norm(dim=-1).mean()) > 5 * target


def test_vocab_init_searches_around_real_tokens(generator):
    space = SoftPromptSpace.for_generator(generator, n_tokens=3, d=10, seed=0, init="vocab")
    origin = space.to_soft_prompt(torch.zeros(10))
    vocab = generator.embedding_matrix
    # z = 0 lands exactly on real token embeddings
    assert all(torch.isclose(vocab, row).all(dim=-1).any() for row in origin)


def test_save_load_round_trip_keeps_metadata(tmp_path):
    p = torch.randn(5, 32)
    save_soft_prompt(tmp_path / "sp.safetensors", p, {"z": [0.1, -0.2], "score": 0.75, "base_model": "m"})
    loaded, meta = load_soft_prompt(tmp_path / "sp.safetensors", expected_hidden=32)
    assert torch.equal(loaded, p)
    assert meta["z"] == [0.1, -0.2] and meta["score"] == 0.75 and meta["format"] == "blade-soft-prompt/1"
    assert (tmp_path / "sp.safetensors").read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle
    assert [f.name for f in tmp_path.iterdir()] == ["sp.safetensors"]


def test_hidden_size_mismatch_is_a_clear_error(tmp_path):
    save_soft_prompt(tmp_path / "sp.safetensors", torch.zeros(5, 576), {"base_model": "SmolLM2"})
    with pytest.raises(BladeError, match="hidden size 576 but the model has 896"):
        load_soft_prompt(tmp_path / "sp.safetensors", expected_hidden=896)


def test_foreign_files_are_rejected(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BladeError, match="cannot read as safetensors"):
        load_soft_prompt(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2, 2)}, tmp_path / "other.safetensors")
    with pytest.raises(BladeError, match="not a blade soft prompt"):
        load_soft_prompt(tmp_path / "other.safetensors")


@pytest.mark.slow
def test_saved_prompt_reproduces_generations(generator, tmp_path):
    space = SoftPromptSpace.for_generator(generator, n_tokens=5, d=10, seed=7)
    prompt = space.to_soft_prompt(torch.full((10,), 0.5))
    texts = ["What does aspirin inhibit?", "Which vitamin does warfarin antagonise?"]
    before = generator.generate(texts, soft_prompt=prompt)
    save_soft_prompt(tmp_path / "sp.safetensors", prompt, {"seed": 7})
    loaded, _ = load_soft_prompt(tmp_path / "sp.safetensors", expected_hidden=generator.hidden_size)
    assert generator.generate(texts, soft_prompt=loaded) == before
