"""Small utilities shared by test modules (subprocess runs of real CLIs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a console script of this environment (llamafactory-cli, blade-bpo) and return the result."""
    full_env = {**os.environ, **(env or {})}
    exe = str(BIN / args[0]) if (BIN / args[0]).exists() else args[0]
    return subprocess.run([exe, *args[1:]], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def python_in_subprocess(code: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """A fresh interpreter, so the .pth hook runs exactly as it does for `llamafactory-cli`."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=300)


def sigkill_when(proc: subprocess.Popen, ready, timeout: float, what: str = "child") -> None:
    """SIGKILL `proc` as soon as `ready()` holds: a crash at an arbitrary point, for resume tests."""
    import signal
    import time

    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"{what} ended before it could be killed"
        assert time.time() < deadline, f"{what} did not get far enough within {timeout} s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def shared_data_dir(name: str) -> Path:
    """`../shared/data/<name>` beside the checkout (CI clones with shared/ next to it); `$BLADE_SHARED_DIR`
    points elsewhere (a git worktree whose parent is not the checkout's)."""
    root = Path(os.environ.get("BLADE_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared")
    return root / "data" / name


def bm25_order(query: str, docs: list[str], k1: float = 1.5, b: float = 0.75) -> list[int]:
    """Indices of the docs sharing a term with `query`, best first (ties: corpus order), by Lucene BM25 written
    out from its definition (retrieval/bm25.py's docstring): an expectation independent of bm25s."""
    import math

    from blade_plugin.retrieval import tokens

    q, toks = tokens(query), [tokens(d) for d in docs]
    n, avgdl = len(toks), sum(len(t) for t in toks) / len(toks)
    scores = []
    for doc in toks:
        score = 0.0
        for term in q:
            df = sum(term in d for d in toks)
            if df:
                tf = doc.count(term)
                score += math.log(1 + (n - df + 0.5) / (df + 0.5)) * tf / (tf + k1 * (1 - b + b * len(doc) / avgdl))
        scores.append(score)
    return [i for i in sorted(range(n), key=lambda i: (-scores[i], i)) if scores[i] > 0]
