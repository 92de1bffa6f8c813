"""Soft-prompt parametrisation p = reshape(A z) (+ offset) and its safetensors persistence.

BPO searches z in [-1, 1]^d; A is a fixed random projection drawn from a seed, so (seed, z) reproduces p on
any machine. A is scaled so a soft token has about the norm of a real token embedding: the reference
code's unscaled U(-1, 1) projection gave norms ~7x too large for SmolLM2 (about 24 against 3.2), which
pushes the model far off its input distribution.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from ..extras.errors import BladeError

SOFT_PROMPT_KEY = "soft_prompt"


@dataclass
class SoftPromptSpace:
    hidden: int
    target_norm: float
    n_tokens: int = 5
    d: int = 10
    seed: int = 0
    init: Literal["random", "vocab"] = "random"
    offset: torch.Tensor | None = None  # Tensor[n_tokens, hidden] for init="vocab"

    def __post_init__(self) -> None:
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        # A: Tensor[n_tokens * hidden, d]. For z ~ U(-1,1)^d, a row of A z has E||.||^2 = hidden * d/3 * var(A);
        # choose the scale so that this matches target_norm^2 (x 0.5 when searching around real tokens).
        raw = torch.randn(self.n_tokens * self.hidden, self.d, generator=generator, dtype=torch.float64)
        factor = 0.5 if self.init == "vocab" else 1.0
        self.scale = float(factor * self.target_norm / math.sqrt(self.hidden * self.d / 3.0))
        self.A = raw * self.scale

    @classmethod
    def for_generator(cls, generator, n_tokens: int = 5, d: int = 10, seed: int = 0,
                      init: Literal["random", "vocab"] = "random") -> SoftPromptSpace:
        offset = None
        if init == "vocab":
            vocab = generator.embedding_matrix
            picker = torch.Generator(device="cpu").manual_seed(seed + 1)
            ids = torch.randint(0, vocab.shape[0], (n_tokens,), generator=picker)
            offset = vocab[ids].detach().to(torch.float64).cpu()
        return cls(hidden=generator.hidden_size, target_norm=generator.mean_embedding_norm, n_tokens=n_tokens, d=d,
                   seed=seed, init=init, offset=offset)

    def to_soft_prompt(self, z: torch.Tensor) -> torch.Tensor:
        """z: Tensor[d] in [-1, 1] -> p: Tensor[n_tokens, hidden] (float32)."""
        z = torch.as_tensor(z, dtype=torch.float64).reshape(-1)
        if z.numel() != self.d:
            raise ValueError(f"z has {z.numel()} values, the space has d={self.d}")
        p = (self.A @ z).reshape(self.n_tokens, self.hidden)
        if self.offset is not None:
            p = p + self.offset
        return p.to(torch.float32)


def save_soft_prompt(path: str | Path, prompt: torch.Tensor, metadata: dict) -> None:
    """Write Tensor[n_tokens, hidden] and JSON-encoded metadata to safetensors, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {str(k): json.dumps(v, default=str) for k, v in metadata.items()}
    meta["format"] = json.dumps("blade-soft-prompt/1")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({SOFT_PROMPT_KEY: prompt.detach().to(torch.float32).contiguous().cpu()}, tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_soft_prompt(path: str | Path, expected_hidden: int | None = None) -> tuple[torch.Tensor, dict]:
    """(Tensor[n_tokens, hidden], metadata); a clear BladeError for a foreign file or another hidden size."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise BladeError(f"{path}: soft prompt file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
            if SOFT_PROMPT_KEY not in f.keys():
                raise BladeError(f"{path}: not a blade soft prompt (no '{SOFT_PROMPT_KEY}' tensor)")
            tensor = f.get_tensor(SOFT_PROMPT_KEY)
    except BladeError:
        raise
    except Exception as err:  # safetensors raises its own error types for non-safetensors files
        raise BladeError(f"{path}: cannot read as safetensors ({err})") from None
    metadata = {}
    for key, value in raw_meta.items():
        try:
            metadata[key] = json.loads(value)
        except json.JSONDecodeError:
            metadata[key] = value
    if tensor.dim() != 2:
        raise BladeError(f"{path}: soft prompt must be [n_tokens, hidden], got shape {tuple(tensor.shape)}")
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        # NaN/inf embeddings make the small LM emit nothing: refuse rather than yield silently empty knowledge
        raise BladeError(f"{path}: soft prompt holds {int((~finite).sum())} NaN/infinite value(s) of "
                         f"{tensor.numel()}; re-run `blade-bpo optimize` to make a new one")
    if expected_hidden is not None and tensor.shape[1] != expected_hidden:
        raise BladeError(f"soft prompt {path} has hidden size {tensor.shape[1]} but the model has {expected_hidden} "
                         f"(it was tuned for {metadata.get('base_model', 'another model')})")
    return tensor, metadata


def check_compatible(metadata: dict, generator) -> None:
    """Warn when a soft prompt was tuned on another base model or adapter than the one loaded."""
    mine = generator.model_fingerprint
    if metadata.get("config_sha256") and mine.get("config_sha256") and metadata["config_sha256"] != mine["config_sha256"]:
        warnings.warn(f"soft prompt was tuned for {metadata.get('base_model')} (config {metadata['config_sha256']}), "
                      f"loaded model is {mine['base_model']} (config {mine['config_sha256']})", stacklevel=2)
    if metadata.get("adapter") != mine.get("adapter") and "adapter" in metadata:
        warnings.warn(f"soft prompt was tuned with adapter {metadata.get('adapter')}, loaded adapter is "
                      f"{mine.get('adapter')}", stacklevel=2)
