"""tps/compat/tornado.py: the simulator's burst writes still reach clients as
ordinary text messages. A failure here means the installed Tornado changed; the
message names its version."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import tornado
import tornado.iostream
import websocket

from tests.support.wait import wait_until
from tps.compat import tornado as compat
from tps.feeds.simulator import Simulator, SimulatorConfig

VERSION = f"Tornado {tornado.version}"
WRITTEN_FOR = f"tps/compat/tornado.py was written for {compat.WRITTEN_FOR}.x"


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    sim = Simulator(SimulatorConfig(port=0, max_rate=True, seed=1)).start()
    yield sim
    sim.stop()


def test_the_installed_major_version_is_the_one_the_patch_was_written_for() -> None:
    assert tornado.version.split(".")[0] == compat.WRITTEN_FOR, (
        f"{VERSION} is installed but {WRITTEN_FOR}: check it against this version, then "
        "update WRITTEN_FOR")


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536])
def test_a_built_frame_is_what_a_websocket_client_reads(size: int) -> None:
    payload = b"x" * size
    data = compat.text_frame(payload)
    position = 0

    def recv(wanted: int) -> bytes:
        nonlocal position
        chunk = data[position:position + wanted]
        position += len(chunk)
        return chunk

    parsed = websocket.frame_buffer(recv, True).recv_frame()
    assert (parsed.opcode, parsed.fin, parsed.data) == (websocket.ABNF.OPCODE_TEXT, 1, payload)
    assert position == len(data)


def test_the_connection_still_exposes_an_unmasked_stream(simulator: Simulator) -> None:
    ws = websocket.create_connection(simulator.url(), timeout=5)
    try:
        wait_until(lambda: simulator.connections, what="the server side of the connection")
        handler = next(iter(simulator.connections))
        connection = handler.ws_connection
        stream = getattr(connection, "stream", None)
        assert isinstance(stream, tornado.iostream.IOStream), (
            f"{VERSION}: WebSocketHandler.ws_connection.stream is no longer an IOStream; "
            f"{WRITTEN_FOR}")
        assert getattr(connection, "mask_outgoing", None) is False, (
            f"{VERSION}: server frames are masked (or the flag moved); {WRITTEN_FOR}")
    finally:
        ws.shutdown()  # type: ignore[no-untyped-call]


def test_burst_writes_arrive_as_ordinary_messages_in_order(simulator: Simulator) -> None:
    ws = websocket.create_connection(simulator.url(), timeout=5)  # plain JSON: no handshake
    try:
        values = [json.loads(ws.recv())["value"] for _ in range(1200)]  # > two bursts
    finally:
        ws.shutdown()  # type: ignore[no-untyped-call]
    assert all(isinstance(v, float) for v in values), f"{VERSION}: garbled frames"
    assert len(values) == 1200
