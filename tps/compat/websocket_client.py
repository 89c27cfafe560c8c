"""websocket-client internals the stream reader relies on (written for websocket-client 1.x).

websocket-client's frame buffer asks the socket for exactly the bytes of a frame's
header, then of its payload: two system calls per frame, each with a poll under a
timeout. Its buffer keeps any surplus for the next frame, so asking for a chunk instead
serves many small frames with one read - most of a feed's cost at high rates and with
many feeds (bench/reader.py: the reader beats a bare websocket-client loop because of
this). That needs two private attributes of ``WebSocket.frame_buffer``:

- ``recv``, the function it reads the socket with, which :func:`enable_read_ahead`
  replaces;
- ``recv_buffer``, the bytes read but not yet framed, which :func:`buffered` looks at
  so a reader knows a frame may be ready without asking the socket.

``tests/test_compat_websocket_client.py`` fails, naming the installed version, when a
websocket-client release no longer has them; ``setup.cfg`` pins the major version.
"""

from __future__ import annotations

from collections.abc import Callable

import websocket

WRITTEN_FOR = "1"
"""The websocket-client major version these patches were written for."""
READ_AHEAD = 4096
"""Bytes asked of the socket per read; what is left over after a frame waits for the next."""


def enable_read_ahead(ws: websocket.WebSocket, chunk: int = READ_AHEAD) -> None:
    """Make ``ws`` read its socket in ``chunk``-byte reads instead of twice per frame.

    The reads go through websocket-client's public ``recv(sock, n)``, which raises
    ``WebSocketConnectionClosedException`` when the peer has closed; unlike the
    library's own reader it leaves the socket open, so the socket is closed only by
    whoever owns the connection (``ws.close()``), never by the thread that read it.
    """

    def recv(_wanted: int) -> bytes:
        sock = ws.sock
        if sock is None:
            raise websocket.WebSocketConnectionClosedException("Connection is closed")
        data: bytes = websocket.recv(sock, chunk)
        return data

    ws.frame_buffer.recv = recv


def buffered(ws: websocket.WebSocket) -> Callable[[], bool]:
    """A check, bound to ``ws``, that is True when bytes already read from the socket
    (by the read-ahead, or decrypted by TLS) wait to be framed: a frame may be ready
    although the socket itself has nothing to read."""
    frames = ws.frame_buffer
    tls_pending: Callable[[], int] | None = getattr(ws.sock, "pending", None)
    if tls_pending is None:
        def check() -> bool:
            return bool(frames.recv_buffer)
    else:
        def check() -> bool:
            return bool(frames.recv_buffer) or tls_pending() > 0
    return check
