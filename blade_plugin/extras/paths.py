"""Where bundled resources and per-user state live.

Bundled files sit in `blade_plugin/{templates,yaml_recipes}` in an installed wheel and at the repository
top level in a source checkout or editable install; callers never need to know which.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # blade_plugin/


def _bundled(name: str) -> Path:
    inside = PACKAGE_DIR / name
    if inside.is_dir():
        return inside
    return PACKAGE_DIR.parent / name


def templates_dir() -> Path:
    """Default Jinja prompt templates (users copy and edit them via `blade-bpo init`)."""
    return _bundled("templates")


def recipes_dir() -> Path:
    """LLaMA-Factory YAML recipes for DP and KIT."""
    return _bundled("yaml_recipes")


def bundled_data_dir() -> Path:
    """Demo datasets plus the `dataset_info.json` that describes them."""
    return PACKAGE_DIR / "data"


def blade_home() -> Path:
    """Per-user state: materialised models, the LLM response cache. `BLADE_HOME` overrides."""
    env = os.environ.get("BLADE_HOME")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "blade-plugin"


def default_cache_db() -> Path:
    """The SQLite LLM response cache shared by every command. `BLADE_CACHE_DB` overrides."""
    env = os.environ.get("BLADE_CACHE_DB")
    return Path(env).expanduser() if env else blade_home() / "llm_cache.sqlite3"
