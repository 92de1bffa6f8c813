"""Does a vLLM server serve the weights of `--small-model`? Checked once per server, before any knowledge request.

The prompt embeddings are built here from the local directory's embedding matrix and the rest of the
forward pass runs on the server's weights, so a mismatch does not fail: it silently writes another model's
knowledge. vLLM exposes no weight digest, so the check has three parts, each for a reason:

1. `/v1/models` lists `root` (the path the server loaded) and `max_model_len`. Where `root` is a directory
   this machine can read (the same box, a shared filesystem), it must be the same directory or hold
   byte-identical safetensors and config.json: that is the only check that sees every layer (a KIT model
   freeze-tuned from DP shares DP's embedding matrix, so parts 2-3 cannot tell them apart).
2. A probe: the same short prompt once as token ids (the server embeds them with its own matrix) and once as
   prompt embeddings built from ours; the greedy tokens and their logprobs must agree. This holds for a
   remote server too and catches a different model, tokenizer or embedding matrix (hidden sizes that differ
   fail here with vLLM's own 400).
3. `max_model_len` is kept, so a prompt that cannot fit is refused here in one line instead of by the server.

A remote server whose weights differ from ours only above the embedding layer passes 2-3; the log says so.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..extras.errors import BladeError

logger = logging.getLogger(__name__)

PROBE_TEXT = "The capital of France is"
PROBE_TOKENS = 4
LOGPROB_TOLERANCE = 1e-3  # same inputs, same weights: equal up to kernel reduction order


@dataclass(frozen=True)
class ServedModel:
    url: str
    id: str
    root: str | None
    max_model_len: int | None


def list_served_model(url: str, api_key: str, hint: str) -> ServedModel:
    """The first model a server lists (vLLM serves one); BladeError in one line if it does not answer."""
    import openai

    try:
        with openai.OpenAI(base_url=url, api_key=api_key, timeout=30.0, max_retries=2) as client:
            models = client.models.list().data
    except openai.APIError as err:
        raise BladeError(f"--small-backend-url {url}: no vLLM server answers ({err.__class__.__name__}: {err}); "
                         f"start one with {hint}") from None
    if not models:
        raise BladeError(f"--small-backend-url {url}: the server lists no model")
    extra = models[0].model_extra or {}
    max_len = extra.get("max_model_len")
    return ServedModel(url, models[0].id, extra.get("root"), int(max_len) if max_len else None)


def weights_digest(model_dir: str | Path) -> str:
    """sha256 over config.json and every *.safetensors file (names and bytes), in name order."""
    h = hashlib.sha256()
    root = Path(model_dir)
    for path in sorted([root / "config.json", *root.glob("*.safetensors")]):
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def check_served_directory(model_dir: str, served: ServedModel) -> bool:
    """Part 1. True when the server's directory was compared (equal); False when it is not readable here."""
    if not served.root or not Path(served.root).is_dir():
        return False
    ours, theirs = Path(model_dir), Path(served.root)
    if os.path.samefile(ours, theirs) or weights_digest(ours) == weights_digest(theirs):
        return True
    raise BladeError(f"--small-model {model_dir}: the vLLM server at {served.url} serves {served.root}, whose "
                     f"weights differ (config.json/safetensors sha256); serve {model_dir} there, or pass "
                     f"--small-model {served.root}")


def probe_matches(model_dir: str, served: ServedModel, by_ids: dict, by_embeds: dict) -> None:
    """Part 2: two `/v1/completions` responses (`model_dump()`) of the probe; BladeError if they disagree."""
    ids_a, ids_b = (r["choices"][0].get("token_ids") for r in (by_ids, by_embeds))
    lp_a, lp_b = ((r["choices"][0].get("logprobs") or {}).get("token_logprobs") or [] for r in (by_ids, by_embeds))
    same = ids_a == ids_b and len(lp_a) == len(lp_b) and all(
        math.isclose(a, b, abs_tol=LOGPROB_TOLERANCE) for a, b in zip(lp_a, lp_b))
    if not same:
        raise BladeError(f"--small-model {model_dir}: the vLLM server at {served.url} (serving {served.root or served.id}"
                         f") is not running these weights: a probe sent as token ids and as prompt embeddings from "
                         f"{model_dir} gives different tokens ({ids_a} vs {ids_b}); serve {model_dir} there")
