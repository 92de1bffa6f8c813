"""Stage markers: the one way a pipeline stage says "finished, with these inputs".

A stage's key digests everything its output depends on (input file contents, models, prompts, the LLM,
settings). A data or evaluation stage whose marker holds another key simply runs again (its own progress
files resume what they can); a trained model whose marker holds another key is refused, never trained over:
it may be the only copy of hours of training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..extras.errors import BladeError
from .atomic_io import atomic_write_json
from .fingerprint import digest_json

MARKER = "blade_stage.json"


def stage_key(**parts: Any) -> str:
    """Digest of what a stage's output depends on."""
    return digest_json(parts)


def finished(marker: Path, key: str) -> dict | None:
    """The marker a stage wrote when it finished with these inputs, or None (absent, torn or other inputs)."""
    try:
        info = json.loads(Path(marker).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("key") == key else None


def mark(marker: Path, stage: str, key: str, **info: Any) -> None:
    """Record that `stage` finished with inputs `key` (written atomically, last)."""
    atomic_write_json(Path(marker), {"stage": stage, "key": key, **info})


def trained(model_dir: Path, stage: str, key: str, settings: dict, hint: str) -> bool:
    """True if `model_dir` holds this stage's model trained with inputs `key`; False if there is no model yet
    (no marker: a run killed mid-training leaves none, and the training starts over). A model trained with
    other inputs is refused with the settings that differ, and `hint` says what to do."""
    marker = Path(model_dir) / MARKER
    try:
        saved = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if saved.get("key") == key and saved.get("stage") == stage:
        return True
    before = saved.get("settings") or {}
    changed = sorted(k for k in before.keys() | settings.keys() if before.get(k) != settings.get(k))
    what = f"{', '.join(changed[:6])} differ" if changed else "its inputs differ"
    raise BladeError(f"{model_dir} was trained with other settings ({what}: {marker}); {hint}")
