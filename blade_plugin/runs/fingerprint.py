"""What a resumable job's results depend on, as named parts, so that a resume can say what changed.

Every resumable command (`knowledge`, `optimize`, `evaluate`) builds its `JobFingerprint` with
`job_fingerprint(...)` from the same parts: the full items (options and answers included), the source text of every template, the small model
and adapter (config digests plus weight-file sizes and mtimes: hashing gigabytes of weights on every start
would cost more than the check saves), the soft prompt's digest, the LLM's identity and any command-specific
settings. The saved fingerprint is compared part by part; a mismatch names the parts that differ.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

# Files whose content decides a model's behaviour: digested fully (they are small).
_SMALL_MODEL_FILES = ("config.json", "generation_config.json", "adapter_config.json", "tokenizer_config.json",
                      "tokenizer.json", "special_tokens_map.json", "chat_template.jinja")
# Weight files: identified by name, size and mtime (see the module docstring).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def digest_json(obj: Any) -> str:
    """sha256 (16 hex) of a canonical JSON encoding; dataclasses are encoded as dicts."""
    def default(o):
        if is_dataclass(o):
            return asdict(o)
        if isinstance(o, Path):
            return str(o)
        if isinstance(o, (set, frozenset, tuple)):
            return sorted(o) if isinstance(o, (set, frozenset)) else list(o)
        return str(o)

    canonical = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=default)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def digest_file(path: str | Path | None) -> str | None:
    """sha256 (16 hex) of a file's bytes, or None for no file."""
    if path is None:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def digest_items(items: Iterable[Any]) -> str:
    """Digest of every field of every item (id, question, options, answer, ...), in order."""
    return digest_json([asdict(item) if is_dataclass(item) else item for item in items])


def digest_texts(texts: dict[str, str]) -> str:
    """Digest of named texts, e.g. {template file name: its source}."""
    return digest_json(dict(texts))


def model_identity(model_dir: str | Path | None) -> dict | None:
    """Identity of an HF model or adapter directory: small files digested, weights by size and mtime."""
    if model_dir is None:
        return None
    root = Path(model_dir)
    if not root.is_dir():
        return {"path": str(model_dir)}
    small = {name: digest_file(root / name) for name in _SMALL_MODEL_FILES if (root / name).is_file()}
    weights = {}
    for path in sorted(root.iterdir()):
        if path.is_file() and path.name.endswith(_WEIGHT_SUFFIXES):
            stat = path.stat()
            weights[path.name] = [stat.st_size, stat.st_mtime_ns]
    return {"path": str(root.resolve()), "files": small, "weights": weights}


class JobFingerprint:
    """Named parts (each JSON-able) that together identify a job's results."""

    def __init__(self, **parts: Any):
        self.parts: dict[str, Any] = {}
        for name, value in parts.items():
            self.add(name, value)

    def add(self, name: str, value: Any) -> JobFingerprint:
        """Add or replace one part; values are stored in canonical JSON form (compared after a reload)."""
        self.parts[name] = json.loads(json.dumps(value, sort_keys=True, ensure_ascii=False,
                                                 default=lambda o: asdict(o) if is_dataclass(o) else str(o)))
        return self

    def to_json(self) -> dict:
        return {"digest": digest_json(self.parts), "parts": self.parts}

    def differences(self, saved: dict | None) -> list[str]:
        """Names of the parts that differ from a saved `to_json()` (all parts for a missing/legacy one)."""
        saved_parts = (saved or {}).get("parts")
        if not isinstance(saved_parts, dict):
            return sorted(self.parts) or ["fingerprint"]
        names = set(self.parts) | set(saved_parts)
        return sorted(n for n in names if self.parts.get(n) != saved_parts.get(n))

    def mismatch_message(self, saved: dict | None, where: str, restart_hint: str = "--restart") -> str | None:
        """One line naming what changed since `saved`, or None if nothing did."""
        changed = self.differences(saved)
        if not changed:
            return None
        return (f"{where}: saved progress belongs to a different job ({', '.join(changed)} changed); "
                f"re-run with the original inputs to resume, or add {restart_hint} to start over")


def template_parts(prompts: Any, names: tuple[str, ...] | None = None) -> dict[str, str]:
    """{"template <file>": digest of its source} for a PromptSet's templates (all, or those in `names`)."""
    return {f"template {name}": digest_texts({name: source})
            for name, source in prompts.template_sources(names).items()}


def llm_parts(identity: dict) -> dict[str, Any]:
    """An LLM client's identity split into "llm endpoint", "llm model" and "llm sampling" parts (sampling:
    every other key, e.g. temperature, max_tokens, top_p, response format), so a mismatch names which one."""
    rest = {k: v for k, v in identity.items() if k not in ("backend", "base_url", "model")}
    return {"llm endpoint": [identity.get("backend"), identity.get("base_url")], "llm model": identity.get("model"),
            "llm sampling": rest}


def job_fingerprint(*, items: Iterable[Any] | dict[str, Iterable[Any]] | None = None, prompts: Any = None,
                    template_names: tuple[str, ...] | None = None, templates_part: str | None = None,
                    llm: dict | None = None, llm_part: str | None = None, **settings: Any) -> JobFingerprint:
    """The one recipe for a job's fingerprint; part names are stable (saved progress files name them).

    - `items`: a list digested as the "items" part, or {part name: items} for several sets (BPO's
      "dev_items" and "rescore_items");
    - `prompts` + `template_names`: one "template <file>" part per template (None: every loaded template);
      with `templates_part`, one part of that name digesting them all together;
    - `llm`: an LLM client's `identity()`, split into "llm endpoint"/"llm model"/"llm sampling" parts, or
      kept whole as the part `llm_part`;
    - `settings`: further parts under their given names (small model identity, soft prompt digest, ...).
    """
    fingerprint = JobFingerprint()
    if items is not None:
        for name, group in (items.items() if isinstance(items, dict) else [("items", items)]):
            fingerprint.add(name, digest_items(group))
    if prompts is not None:
        if templates_part is None:
            for name, value in template_parts(prompts, template_names).items():
                fingerprint.add(name, value)
        else:
            fingerprint.add(templates_part, digest_texts(prompts.template_sources(template_names)))
    if llm is not None:
        for name, value in ({llm_part: llm} if llm_part else llm_parts(llm)).items():
            fingerprint.add(name, value)
    for name, value in settings.items():
        fingerprint.add(name, value)
    return fingerprint
