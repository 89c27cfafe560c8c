"""tps/compat/tornado.py still applies to the installed Tornado.

Each patch reaches past Tornado's documented API and falls back quietly when the
internal it needs is gone, so only these tests notice an upgrade that breaks one:
they fail and say which internal to look at.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import tornado
import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket
from tornado.concurrent import Future
from tornado.iostream import IOStream

from tps.compat.tornado import (
    bound_send_buffer,
    socket_busy,
    spell_websocket_headers_as_rfc,
    write_text_frame,
)

SEND_BUFFER = 64 * 1024


class Handler(tornado.websocket.WebSocketHandler):
    """Echoes through the compat writer; reports what the patches saw."""

    opened: asyncio.Queue[Handler]

    def initialize(self, opened: asyncio.Queue[Handler]) -> None:
        self.opened = opened
        self.capped = False

    def flush(self, include_footers: bool = False) -> Future[None]:
        if self.get_status() == 101:
            spell_websocket_headers_as_rfc(self)
        return super().flush(include_footers)

    def get_compression_options(self) -> dict[str, Any] | None:
        options: dict[str, Any] | None = self.settings.get("ws_compression")
        return options

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return subprotocols[0] if subprotocols else None

    def open(self, *args: str, **kwargs: str) -> None:
        self.capped = bound_send_buffer(self, SEND_BUFFER)
        self.opened.put_nowait(self)

    def on_message(self, message: str | bytes) -> None:
        write_text_frame(self, f"echo {message!s}")


@asynccontextmanager
async def server(**settings: Any) -> AsyncIterator[tuple[int, asyncio.Queue[Handler]]]:
    opened: asyncio.Queue[Handler] = asyncio.Queue()
    app = tornado.web.Application([(r"/ws", Handler, {"opened": opened})], **settings)
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    http = tornado.httpserver.HTTPServer(app)
    http.add_sockets(sockets)
    try:
        yield sockets[0].getsockname()[1], opened
    finally:
        http.stop()


def test_written_for_tornado_6() -> None:
    assert tornado.version_info[0] == 6, (
        f"Tornado {tornado.version}: check tps/compat/tornado.py and the pin in setup.cfg")


def test_the_handshake_spells_the_subprotocol_header_as_rfc_6455() -> None:
    async def main() -> bytes:
        async with server() as (port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-ws\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            writer.close()
            return head

    head = asyncio.run(main())
    assert head.startswith(b"HTTP/1.1 101")
    # Tornado writes RequestHandler._headers in flush(); the patch swaps that object.
    assert b"\r\nSec-WebSocket-Protocol: graphql-ws\r\n" in head, (
        "RequestHandler._headers is no longer what flush() writes: update "
        f"spell_websocket_headers_as_rfc in tps/compat/tornado.py\n{head.decode()}")
    assert b"\r\nSec-WebSocket-Accept: " in head


def test_frames_are_written_by_the_protocols_frame_writer_without_compression() -> None:
    async def main() -> None:
        async with server() as (port, opened):
            client = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/ws")
            handler = await opened.get()
            conn = handler.ws_connection
            assert callable(getattr(conn, "_write_frame", None)), (
                "WebSocketProtocol13._write_frame is gone: update write_text_frame")
            assert hasattr(conn, "_compressor") and conn._compressor is None, (  # type: ignore[union-attr]
                "WebSocketProtocol13._compressor changed: update write_text_frame")
            client.write_message("hi")
            assert await client.read_message() == "echo hi"
            client.close()

    asyncio.run(main())


def test_with_compression_the_documented_write_message_is_used() -> None:
    async def main() -> None:
        async with server(ws_compression={}) as (port, opened):
            client = await tornado.websocket.websocket_connect(
                f"ws://127.0.0.1:{port}/ws", compression_options={})
            handler = await opened.get()
            assert getattr(handler.ws_connection, "_compressor", None) is not None
            client.write_message("hi")
            assert await client.read_message() == "echo hi"
            client.close()

    asyncio.run(main())


def test_the_socket_stream_is_reachable_for_the_queue_bound_and_the_send_buffer() -> None:
    async def main() -> None:
        async with server() as (port, opened):
            client = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/ws")
            handler = await opened.get()
            stream = getattr(handler.ws_connection, "stream", None)
            assert isinstance(stream, IOStream), (
                "WebSocketProtocol13.stream is gone: socket_busy and bound_send_buffer "
                "in tps/compat/tornado.py see no socket (the subscriber queue bound "
                "would never trigger)")
            assert handler.capped
            sent = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            assert SEND_BUFFER <= sent <= 2 * SEND_BUFFER  # Linux doubles what is set
            assert socket_busy(handler) is False
            client.close()

    asyncio.run(main())
