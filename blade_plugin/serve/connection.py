"""Connection-level defences uvicorn does not have: a deadline for a request's headers (uvicorn only times out
an idle keep-alive connection, so a client that sends half a request line holds its socket forever), and
cancelling a request's work when its client hangs up (uvicorn reports the hang-up only to an app that
reads `receive()`, so an upstream call would run, and be billed, for nobody)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

import h11
from starlette.requests import ClientDisconnect, Request
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

T = TypeVar("T")


def h11_protocol_with_header_timeout(header_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request headers are not complete `header_timeout`
    seconds after the connection opened (or after the first byte of a later request on it)."""

    class HeaderTimeoutH11Protocol(H11Protocol):
        _header_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._watch_headers()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._disarm()  # idle again: uvicorn's keep-alive timeout takes over until the next byte

        def _watch_headers(self) -> None:
            # IDLE with bytes received or a fresh connection: headers are pending. SEND_BODY/DONE: they arrived.
            waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
            if waiting and self._header_deadline is None and self.timeout_keep_alive_task is None:
                self._header_deadline = self.loop.call_later(header_timeout, self._headers_too_slow)
            elif not waiting:
                self._disarm()

        def _disarm(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_too_slow(self) -> None:
            self._header_deadline = None
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                logger.debug("closing a connection whose request headers took over %.0f s", header_timeout)
                self.transport.close()

    return HeaderTimeoutH11Protocol


async def wait_for_disconnect(request: Request) -> None:
    """Return when the client of `request` hangs up (call once its body has been read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """The result of `work`, or ClientDisconnect as soon as the client leaves, with `work` cancelled (so an
    upstream call stops: its connection is closed and no more tokens are generated or billed)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # cancelled from outside (a shutdown past its timeout): stop both, pass it on
        task.cancel()
        watcher.cancel()
        raise
    watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    try:
        await task
    except BaseException as err:  # noqa: BLE001 - how the work ends no longer matters: its client is gone
        logger.debug("client left: request work cancelled (%s)", type(err).__name__)
    raise ClientDisconnect()
