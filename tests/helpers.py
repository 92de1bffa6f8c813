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
