"""Running the app: uvicorn with a clean exit after a graceful shutdown."""

from __future__ import annotations

import contextlib

import uvicorn


class GracefulServer(uvicorn.Server):
    """A uvicorn server whose process exits normally after SIGTERM/SIGINT.

    uvicorn stops accepting connections, lets in-flight requests finish (`timeout_graceful_shutdown`), runs the
    lifespan shutdown and then re-raises the signal, so the process would die by it (exit -15) and Ctrl-C would
    surface as a KeyboardInterrupt. By then the shutdown is complete, so the signal is dropped instead.
    """

    @contextlib.contextmanager
    def capture_signals(self):
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()
