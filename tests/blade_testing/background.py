"""What the loopback test servers (the OpenAI stub, the vLLM stand-in, the evidence reader) share: running an
`http.server` in a daemon thread, and a `main()` that serves until Ctrl-C."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler


class LoopbackHandler(BaseHTTPRequestHandler):
    """Keep-alive (HTTP/1.1), no access log, and TCP_NODELAY as uvicorn, vLLM and any real endpoint set it:
    `http.server` writes the headers and the body in two sends, and with Nagle on the body waits for the
    client's delayed ACK (~40 ms a response on Linux), so a "0.2 s" stub would answer in 0.24 s."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args) -> None:  # keep test output clean
        pass


class BackgroundHTTPServer:
    """Mixin: `self._server` (a socketserver) served on a daemon thread by `start()`; a context manager."""

    _server = None
    _thread_name = "loopback-server"

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever, name=self._thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def block_until_interrupted() -> None:
    """Keep a command-line server's main thread alive until Ctrl-C."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
