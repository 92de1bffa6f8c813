"""Shared fixtures. Everything is real and offline: the embedded model, HTTP on 127.0.0.1, llamafactory-cli."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Never reach a hub from the test suite, even by accident.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Under pytest-xdist (two workers, pyproject's addopts) each worker and the subprocesses it starts (llamafactory-cli,
# the CLI) run torch on one thread: two workers at two threads each on two cores slow training several-fold.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
# The key the stub servers accept (a real key must never reach a test, so this one replaces it).
os.environ["OPENAI_API_KEY"] = "sk-blade-stub-0123456789"  # = openai_stub_server.DEFAULT_API_KEY


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct as an HF directory, materialised once per machine (~20 s)."""
    from blade_plugin.small_lm.default_model import materialize_default_model

    return materialize_default_model()


@pytest.fixture()
def isolated_home(tmp_path, monkeypatch) -> Path:
    """A private BLADE_HOME/cache so tests never share LLM cache rows, while keeping the shared model."""
    from blade_plugin.small_lm.default_model import default_model_dir as shared_model_dir

    monkeypatch.setenv("BLADE_DEFAULT_MODEL_DIR", str(shared_model_dir()))
    home = tmp_path / "blade_home"
    monkeypatch.setenv("BLADE_HOME", str(home))
    monkeypatch.setenv("BLADE_CACHE_DB", str(home / "llm_cache.sqlite3"))
    return home


@pytest.fixture()
def stub_llm():
    """A real OpenAI-compatible HTTP server on 127.0.0.1 (default scripted answer: 'Answer: A')."""
    from blade_testing.openai_stub_server import StubOpenAIServer

    with StubOpenAIServer() as server:
        yield server


@pytest.fixture(scope="session")
def demo_data_dir() -> Path:
    from blade_plugin.extras.paths import bundled_data_dir

    return bundled_data_dir()


@pytest.fixture(scope="session")
def prompts():
    from blade_plugin.qa.prompts import load_prompts

    return load_prompts()


@pytest.fixture(scope="session")
def generator(default_model_dir):
    """One SoftPromptGenerator on the embedded model for the whole session (loading costs seconds)."""
    from blade_plugin.small_lm.hf_backend import SoftPromptGenerator

    return SoftPromptGenerator(str(default_model_dir), template="blade_chatml", max_new_tokens=12, batch_size=8)


def llm_config(server, tmp_path: Path, **overrides):
    """LLMConfig for the stub server with a private cache (the stub's faults carry a short retry-after-ms)."""
    from blade_plugin.llm.client import LLMConfig

    values = dict(base_url=server.base_url, model="stub", cache_db=tmp_path / "cache.sqlite3",
                  max_retries=3)
    values.update(overrides)
    return LLMConfig(**values)
