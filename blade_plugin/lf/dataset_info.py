"""Register datasets in a user's LLaMA-Factory `dataset_info.json` (same schema LLaMA-Factory reads)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from ..extras.errors import BladeInputError
from ..runs.atomic_io import atomic_write_json, read_text_file

DATA_CONFIG = "dataset_info.json"

# Column maps for the two formats blade-plugin writes: pt corpora ({"text"}) and KIT data (alpaca).
PT_COLUMNS = {"prompt": "text"}
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output"}


def load_dataset_info(dataset_dir: str | os.PathLike) -> dict[str, Any]:
    """Read `<dataset_dir>/dataset_info.json` ({} when absent); malformed files raise with file:line."""
    path = Path(dataset_dir) / DATA_CONFIG
    if not path.exists():
        return {}
    text = read_text_file(path)  # a binary or non-UTF-8/GB18030 file: one line with the byte offset
    if not text.strip():
        return {}
    try:
        info = json.loads(text)
    except json.JSONDecodeError as err:
        raise BladeInputError(path, f"invalid JSON ({err.msg} at column {err.colno}); fix it, nothing was changed",
                              line=err.lineno) from None
    if not isinstance(info, dict):
        raise BladeInputError(path, f"expected a JSON object of dataset entries, got {type(info).__name__}")
    return info


def check_dataset_name(name: str, dataset_dir: str | os.PathLike) -> None:
    """A name LLaMA-Factory can look up: `dataset=a,b` splits on commas, and YAML trims spaces."""
    if not name or any(c.isspace() for c in name) or "," in name:
        raise BladeInputError(Path(dataset_dir) / DATA_CONFIG, f"invalid dataset name {name!r} (no spaces or "
                                                              "commas)", field="name")


def register_dataset(
    name: str,
    file: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    formatting: Literal["alpaca", "sharegpt", "pt"] = "alpaca",
    columns: dict[str, str] | None = None,
    overwrite: bool = True,
) -> dict[str, Any]:
    """Add or update entry `name` in `<dataset_dir>/dataset_info.json` atomically and return the entry.

    `formatting="pt"` registers a plain-text corpus (`{"text": ...}` rows) for `stage: pt`. The file path is
    stored relative to `dataset_dir` when it lies inside it (how LLaMA-Factory's own examples do it), else
    absolute. Other entries, and their key order, are kept as they were.
    """
    check_dataset_name(name, dataset_dir)
    dataset_dir = Path(dataset_dir)
    info = load_dataset_info(dataset_dir)
    if name in info and not overwrite:
        raise BladeInputError(dataset_dir / DATA_CONFIG, f"dataset {name!r} already exists (pass overwrite=True)")

    file = Path(file)
    absolute = (file if file.is_absolute() else Path.cwd() / file).resolve()
    try:
        file_name = str(absolute.relative_to(dataset_dir.resolve()))
    except ValueError:
        file_name = str(absolute)

    entry: dict[str, Any] = {"file_name": file_name}
    if formatting == "pt":
        entry["columns"] = columns or dict(PT_COLUMNS)
    else:
        entry["formatting"] = formatting
        if columns or formatting == "alpaca":
            entry["columns"] = columns or dict(ALPACA_COLUMNS)
    info[name] = entry
    dataset_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(dataset_dir / DATA_CONFIG, info)
    return entry
