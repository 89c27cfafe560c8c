"""Tornado internals the feed simulator relies on (written for Tornado 6.x).

The simulator's ``--max-rate`` mode sends bursts of hundreds of small text frames.
Tornado's ``write_message`` builds and writes one frame per call, which caps the
simulator below what the readers it benchmarks can take. So a burst is built here as
plain RFC 6455 frames and written to the connection's stream in one call. That needs
what Tornado does not document:

- ``WebSocketHandler.ws_connection.stream``, the ``IOStream`` under the protocol object;
- that a server's frames are unmasked and that an uncompressed frame is valid on any
  connection (true of RFC 6455 and of permessage-deflate, RFC 7692 section 6).

``tests/test_compat_tornado_frames.py`` fails, naming the installed version, when a
Tornado release no longer has them. (Tornado patches of the HTTP API live in
``tps/compat/tornado.py``.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable

import tornado.iostream
import tornado.websocket

WRITTEN_FOR = "6"
"""The Tornado major version this was written for."""


def text_frame(payload: bytes) -> bytes:
    """An unmasked, uncompressed, final text frame (server to client)."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + payload


def write_text_frames(handler: tornado.websocket.WebSocketHandler,
                      payloads: Iterable[bytes]) -> Awaitable[None]:
    """Send each payload as one text message, all in one write to the connection.

    Raises ``WebSocketClosedError`` when the connection is closed or closing, like
    ``write_message``. The bytes are queued at once; the returned awaitable finishes
    when they are handed to the kernel (back-pressure).
    """
    connection = handler.ws_connection
    stream: tornado.iostream.IOStream | None = getattr(connection, "stream", None)
    if connection is None or stream is None or connection.is_closing():
        raise tornado.websocket.WebSocketClosedError()
    try:
        written = stream.write(b"".join(text_frame(payload) for payload in payloads))
    except tornado.iostream.StreamClosedError:
        raise tornado.websocket.WebSocketClosedError() from None
    return _closed_as_websocket_error(written)


async def _closed_as_websocket_error(written: Awaitable[None]) -> None:
    try:
        await written
    except tornado.iostream.StreamClosedError:
        raise tornado.websocket.WebSocketClosedError() from None
