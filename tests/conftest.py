"""Shared fixtures. Everything is real and offline: the embedded model, HTTP on 127.0.0.1, llamafactory-cli."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Never reach a hub from the test suite, even by accident.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct as an HF directory, materialised once per machine (~20 s)."""
    from blade_plugin.default_model import materialize_default_model

    return materialize_default_model()


@pytest.fixture()
def isolated_home(tmp_path, monkeypatch) -> Path:
    """A private BLADE_HOME/cache so tests never share LLM cache rows, while keeping the shared model."""
    from blade_plugin.default_model import default_model_dir as shared_model_dir

    monkeypatch.setenv("BLADE_DEFAULT_MODEL_DIR", str(shared_model_dir()))
    home = tmp_path / "blade_home"
    monkeypatch.setenv("BLADE_HOME", str(home))
    monkeypatch.setenv("BLADE_CACHE_DB", str(home / "llm_cache.sqlite3"))
    return home
