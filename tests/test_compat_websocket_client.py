"""tps/compat/websocket_client.py: the read-ahead patch of websocket-client's frame
buffer still does what the reader relies on. A failure here means the installed
websocket-client changed; the message names its version."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import websocket

from tps.compat import websocket_client as compat

VERSION = f"websocket-client {websocket.__version__}"
WRITTEN_FOR = f"tps/compat/websocket_client.py was written for {compat.WRITTEN_FOR}.x"


def frame(payload: bytes) -> bytes:
    """An unmasked server text frame (payload under 126 bytes)."""
    return bytes((0x81, len(payload))) + payload


@pytest.fixture
def connected() -> Iterator[tuple[websocket.WebSocket, socket.socket]]:
    """A websocket-client WebSocket on one end of a socket pair; the test is the server."""
    client, server = socket.socketpair()
    client.settimeout(2)
    ws = websocket.WebSocket(skip_utf8_validation=True)
    ws.sock = client
    ws.connected = True
    yield ws, server
    server.close()
    client.close()


def test_the_installed_major_version_is_the_one_the_patch_was_written_for() -> None:
    assert websocket.__version__.split(".")[0] == compat.WRITTEN_FOR, (
        f"{VERSION} is installed but {WRITTEN_FOR}: check tps/compat/websocket_client.py "
        "against it, then update WRITTEN_FOR and the pin in setup.cfg")


def test_the_frame_buffer_still_has_what_the_patch_replaces_and_reads() -> None:
    ws = websocket.WebSocket()
    frames = getattr(ws, "frame_buffer", None)
    missing = [name for name, present in [
        ("WebSocket.frame_buffer", frames is not None),
        ("frame_buffer.recv", callable(getattr(frames, "recv", None))),
        ("frame_buffer.recv_buffer (a list)", isinstance(getattr(frames, "recv_buffer", None),
                                                          list)),
        ("websocket.recv(sock, bufsize)", callable(getattr(websocket, "recv", None))),
    ] if not present]
    assert not missing, f"{VERSION} no longer has {', '.join(missing)}; {WRITTEN_FOR}"


def test_read_ahead_serves_many_frames_from_one_socket_read(
    connected: tuple[websocket.WebSocket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, server = connected
    reads: list[int] = []
    real_recv = websocket.recv

    def counting_recv(sock: socket.socket, bufsize: int) -> bytes:
        reads.append(bufsize)
        data: bytes = real_recv(sock, bufsize)
        return data

    monkeypatch.setattr(websocket, "recv", counting_recv)
    compat.enable_read_ahead(ws)
    ready = compat.buffered(ws)
    server.sendall(frame(b'{"value": 1}') + frame(b'{"value": 2}') + frame(b'{"value": 3}'))
    got = []
    for _ in range(3):
        _opcode, data = ws.recv_data()
        got.append(data)
        if len(got) < 3:
            assert ready(), f"{VERSION}: read-ahead bytes are no longer kept in recv_buffer"
    assert got == [b'{"value": 1}', b'{"value": 2}', b'{"value": 3}']
    assert reads == [compat.READ_AHEAD], (
        f"{VERSION} read the socket {len(reads)} times for 3 frames (expected one "
        f"{compat.READ_AHEAD}-byte read): the frame buffer no longer reads through "
        f"frame_buffer.recv; {WRITTEN_FOR}")
    assert not ready()


def test_a_closed_peer_raises_and_leaves_the_socket_to_its_owner(
    connected: tuple[websocket.WebSocket, socket.socket],
) -> None:
    ws, server = connected
    compat.enable_read_ahead(ws)
    server.close()
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        ws.recv_data()
    assert ws.sock is not None, (
        f"{VERSION} closed the socket on the reading thread; the reader's owner must")
