"""A real `blade-bpo serve` subprocess on 127.0.0.1, for tests and benchmarks (started through this
interpreter, so PYTHONPATH and the venv are the caller's)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """`with ServeProcess([...serve options...], log_path) as server:` -> `server.base_url` (.../v1)."""

    def __init__(self, args: list[str], log_path: str | Path, env: dict | None = None, port: int | None = None,
                 verbose: bool = False):
        self.port = port or free_port()
        self.log_path = Path(log_path)
        self.args = [sys.executable, "-m", "blade_plugin.cli", *(["-vv"] if verbose else []), "serve",
                     "--port", str(self.port), *args]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 300) -> ServeProcess:
        """Start and wait until GET /health answers (the small model is loaded by then)."""
        self._log = open(self.log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"blade-bpo serve exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            if time.time() > deadline:
                self.stop()
                raise RuntimeError(f"blade-bpo serve did not come up in {timeout:.0f} s:\n{self.log_text()[-3000:]}")
            time.sleep(0.5)

    def terminate(self) -> None:
        """SIGTERM: the graceful shutdown (in-flight requests finish)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 120) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc is None:
            return None
        self.terminate()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
