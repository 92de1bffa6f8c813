"""Running the app: uvicorn with the server's connection limits and a clean exit after a graceful shutdown."""

from __future__ import annotations

import contextlib
import logging
import os

import uvicorn

logger = logging.getLogger(__name__)


def uvicorn_config(app, host: str, port: int, *, header_timeout: float = 10.0, keep_alive_timeout: float = 5.0,
                   max_connections: int = 512, shutdown_timeout: float = 60.0, access_log: bool = False,
                   log_level: str = "info") -> uvicorn.Config:
    """uvicorn's own defences (connections, idle keep-alive, h11's header size limit) plus our header deadline."""
    from .connection import h11_protocol_with_header_timeout

    return uvicorn.Config(app, host=host, port=port, log_config=None, access_log=access_log,
                          http=h11_protocol_with_header_timeout(header_timeout), limit_concurrency=max_connections,
                          timeout_keep_alive=keep_alive_timeout, timeout_graceful_shutdown=shutdown_timeout,
                          log_level=log_level)


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


def exit_if_generation_abandoned(app) -> None:
    """End the process now if a small-model generation is still running after the shutdown.

    The generation runs on a worker thread that cannot be interrupted, and the interpreter joins such threads
    at exit: the process would outlive `--shutdown-timeout` by the generation's whole length. Everything the
    server owed its clients is done by now (uvicorn's graceful phase is over), so nothing is lost by leaving.
    """
    batcher = getattr(app.state, "batcher", None)
    if batcher is not None and batcher.generating:
        logger.warning("BLADE server stopped (an abandoned small-model generation was still running)")
        logging.shutdown()  # flush the log handlers: os._exit skips the interpreter's own clean-up
        os._exit(0)
