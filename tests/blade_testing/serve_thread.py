"""The serve app on a real uvicorn in a background thread of this process, on 127.0.0.1 (fast tests: the same
app, the same uvicorn limits and header deadline as `blade-bpo serve`, without loading a model)."""

from __future__ import annotations

import threading
import time
from typing import Self

import uvicorn

from blade_plugin.serve.runner import uvicorn_config
from .serve_process import free_port


class ThreadedServe:
    """`with ThreadedServe(app, header_timeout=...) as server:` -> `server.url`, `server.base_url` (.../v1)."""

    def __init__(self, app, **limits):
        """limits: keyword arguments of `serve.runner.uvicorn_config` (header_timeout, max_connections, ...)."""
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", self.port, **limits))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self, timeout: float = 30) -> Self:
        # uvicorn installs no signal handlers off the main thread; it runs its own event loop here
        self._thread = threading.Thread(target=self.server.run, name="threaded-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("uvicorn stopped before it started (see the log)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start within {timeout} s")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
