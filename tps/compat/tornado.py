"""Tornado internals TPS relies on for GraphQL subscription sockets.

Each function reaches past Tornado's documented API, for a measured reason given in
its docstring, and falls back to the documented path when the internal it needs is
missing, so a Tornado upgrade degrades speed, never correctness.
``tests/test_compat_tornado.py`` fails loudly when any of them no longer applies.
Written for Tornado 6 (pinned in ``setup.cfg``).

- ``RequestHandler._headers``: the response headers before they are written;
- ``WebSocketProtocol13._write_frame`` and ``._compressor``: one frame, no Task;
- ``WebSocketProtocol13.stream`` (undocumented attribute): the socket's IOStream, also
  used by the feed simulator's ``--max-rate`` bursts (many frames, one write).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, ClassVar

import tornado.iostream
import tornado.web
import tornado.websocket
from tornado import httputil
from tornado.iostream import IOStream, StreamClosedError

logger = logging.getLogger(__name__)

TEXT_OPCODE = 0x1
WRITTEN_FOR = "6"
"""The Tornado major version this was written for."""


class _RfcCaseHeaders(httputil.HTTPHeaders):
    """Headers whose ``Sec-WebSocket-*`` names are written in RFC 6455 case."""

    _SPELLING: ClassVar[dict[str, str]] = {
        "Sec-Websocket-Protocol": "Sec-WebSocket-Protocol",
        "Sec-Websocket-Accept": "Sec-WebSocket-Accept",
        "Sec-Websocket-Extensions": "Sec-WebSocket-Extensions",
    }

    def get_all(self) -> Iterator[tuple[str, str]]:
        for name, value in super().get_all():
            yield self._SPELLING.get(name, name), value


def spell_websocket_headers_as_rfc(handler: tornado.web.RequestHandler) -> None:
    """Make the handshake answer spell ``Sec-WebSocket-*`` headers as RFC 6455 does.

    Tornado normalises header names (``Sec-Websocket-Protocol``); names are
    case-insensitive, but some clients (``gql``) look the subprotocol up with the exact
    RFC spelling and silently fall back to the legacy protocol. Call it from the
    handler's ``flush`` before Tornado writes the headers (``RequestHandler._headers``).
    """
    headers = getattr(handler, "_headers", None)
    if isinstance(headers, httputil.HTTPHeaders) and not isinstance(headers, _RfcCaseHeaders):
        handler._headers = _RfcCaseHeaders(headers)


def _frame_writer(
    handler: tornado.websocket.WebSocketHandler,
) -> Callable[[bool, int, bytes], Any] | None:
    """``WebSocketProtocol13._write_frame`` when it may be used (no compression)."""
    conn = handler.ws_connection
    write_frame = getattr(conn, "_write_frame", None)
    if write_frame is None or getattr(conn, "_compressor", None) is not None:
        return None
    return write_frame  # type: ignore[no-any-return]


def write_text_frame(handler: tornado.websocket.WebSocketHandler, text: str) -> None:
    """Write one text frame without the per-message Task of ``write_message``.

    ``write_message`` wraps every frame in a coroutine Task only to translate an
    exception; with hundreds of subscribers that Task is most of the fan-out cost
    (bench/fanout.py). With compression on, or if Tornado's internals differ, this is
    ``write_message``. Raises ``WebSocketClosedError`` like it.
    """
    conn = handler.ws_connection
    if conn is None or conn.is_closing():
        raise tornado.websocket.WebSocketClosedError()
    write_frame = _frame_writer(handler)
    if write_frame is None:
        handler.write_message(text)
        return
    try:
        write_frame(True, TEXT_OPCODE, text.encode())
    except StreamClosedError:
        raise tornado.websocket.WebSocketClosedError() from None


def _stream(handler: tornado.websocket.WebSocketHandler) -> IOStream | None:
    stream = getattr(handler.ws_connection, "stream", None)
    return stream if isinstance(stream, IOStream) else None


def socket_busy(handler: tornado.websocket.WebSocketHandler) -> bool:
    """True while earlier frames still wait in the socket's write buffer.

    The subscriber's queue bound counts messages handed over while this is True (see
    :mod:`tps.api.graphql.connection`); False when the stream cannot be seen.
    """
    stream = _stream(handler)
    return bool(stream is not None and stream.writing())


def bound_send_buffer(handler: tornado.websocket.WebSocketHandler, size: int) -> bool:
    """Cap the kernel send buffer of the handler's socket at ``size`` bytes.

    Loopback and LAN sockets autotune up to megabytes; a stalled subscriber would let
    that much pile up in the kernel before TPS's own queue bound even notices. False
    when the socket cannot be reached or refuses.
    """
    stream = _stream(handler)
    sock = getattr(stream, "socket", None)
    if not isinstance(sock, socket.socket):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    except OSError:
        logger.debug("Could not cap the send buffer of a subscription socket")
        return False
    return True


# --- the feed simulator's burst writes ----------------------------------------------
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
