"""What the loopback test servers (the OpenAI stub, the vLLM stand-in, the evidence reader) share: running an
`http.server` in a daemon thread, and a `main()` that serves until Ctrl-C."""

from __future__ import annotations

import threading
import time


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
