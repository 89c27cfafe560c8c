"""The simulator speaks what satellite-temperature and graphql-ws servers speak."""

from __future__ import annotations

import argparse
import itertools
import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket

from tests.support.peers import REPO, simulator_process
from tps.feeds.simulator import (
    RandomWalk,
    Simulator,
    SimulatorConfig,
    add_arguments,
    config_from_args,
    read_emit_log,
    read_emit_log_by_connection,
    subscription_field,
)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    simulator = Simulator(SimulatorConfig(port=0, interval=0.01, seed=5, keepalive=0.05,
                                          emit_log=tmp_path / "emit.log")).start()
    yield simulator
    simulator.stop()


def connect(url: str, *subprotocols: str) -> websocket.WebSocket:
    return websocket.create_connection(url, timeout=3, subprotocols=list(subprotocols) or None,
                                       skip_utf8_validation=True)


def receive(ws: websocket.WebSocket) -> dict[str, Any]:
    message = json.loads(ws.recv())
    assert isinstance(message, dict)
    return message


def receive_until(ws: websocket.WebSocket, kind: str, limit: int = 50) -> dict[str, Any]:
    for _ in range(limit):
        message = receive(ws)
        if message.get("type") == kind:
            return message
    pytest.fail(f"no {kind!r} message in {limit} messages")


def close_code(ws: websocket.WebSocket) -> int:
    opcode, data = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    return int.from_bytes(data[:2], "big")


# --- plain parts ------------------------------------------------------------------------


def test_random_walk_is_repeatable_with_a_seed_and_stays_plausible() -> None:
    first = RandomWalk(random.Random(1))
    second = RandomWalk(random.Random(1))
    values = [first.step() for _ in range(10_000)]
    assert values == [second.step() for _ in range(10_000)]
    assert all(-40 <= v <= 60 for v in values)
    assert all(abs(a - b) <= 0.11 for a, b in itertools.pairwise(values))


@pytest.mark.parametrize(("query", "field"), [
    ("subscription { temperature }", "temperature"),
    ("subscription Feed { t: temperature }", "t"),
])
def test_the_response_key_follows_the_subscription_document(query: str, field: str) -> None:
    assert subscription_field(query) == field


@pytest.mark.parametrize("query", ["subscription { humidity }", "query { temperature }",
                                   "subscription {", ""])
def test_documents_the_simulator_cannot_serve_are_refused(query: str) -> None:
    with pytest.raises(ValueError):
        subscription_field(query)


def test_interval_comes_from_the_environment_unless_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INTERVAL", "0.25")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args([])).interval == 0.25
    assert config_from_args(parser.parse_args(["--interval", "2"])).interval == 2.0
    defaults = config_from_args(parser.parse_args(["--max-rate", "--port", "0"]))
    assert defaults.max_rate and defaults.port == 0 and defaults.host == "127.0.0.1"


# --- legacy graphql-ws --------------------------------------------------------------------


def test_legacy_handshake_keepalives_and_data(sim: Simulator) -> None:
    ws = connect(sim.url(), "graphql-ws")
    assert ws.subprotocol == "graphql-ws"
    ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    assert receive(ws) == {"type": "connection_ack"}
    assert receive(ws) == {"type": "ka"}
    ws.send(json.dumps({"id": "1", "type": "start",
                        "payload": {"query": "subscription { temperature }"}}))
    data = receive_until(ws, "data")
    assert data["id"] == "1"
    assert isinstance(data["payload"]["data"]["temperature"], float)
    time.sleep(0.12)
    kinds = {receive(ws)["type"] for _ in range(20)}
    assert kinds == {"data", "ka"}, "keep-alives keep coming"
    ws.close()


def test_legacy_start_without_init_is_served_like_satellite_temperature(
    sim: Simulator,
) -> None:
    ws = connect(sim.url(), "graphql-ws")
    ws.send(json.dumps({"id": "7", "type": "start",
                        "payload": {"query": "subscription { temperature }"}}))
    assert receive(ws)["id"] == "7"
    ws.close()


def test_legacy_stop_ends_the_subscription(sim: Simulator) -> None:
    ws = connect(sim.url(), "graphql-ws")
    ws.send(json.dumps({"id": "1", "type": "start",
                        "payload": {"query": "subscription { temperature }"}}))
    receive(ws)
    ws.send(json.dumps({"id": "1", "type": "stop"}))
    time.sleep(0.05)
    ws.settimeout(0.1)
    drained = 0
    with pytest.raises(websocket.WebSocketTimeoutException):
        while True:
            ws.recv()
            drained += 1
            assert drained < 5
    ws.close()


def test_legacy_bad_query_gets_an_error_message(sim: Simulator) -> None:
    ws = connect(sim.url(), "graphql-ws")
    ws.send(json.dumps({"id": "1", "type": "start",
                        "payload": {"query": "subscription { humidity }"}}))
    error = receive(ws)
    assert error["type"] == "error" and "humidity" in error["payload"]["message"]
    ws.close()


def test_the_first_known_offered_subprotocol_wins(sim: Simulator) -> None:
    ws = connect(sim.url(), "graphql-ws", "graphql-transport-ws")
    assert ws.subprotocol == "graphql-ws"
    ws.close()
    ws = connect(sim.url(), "x-unknown", "graphql-transport-ws", "graphql-ws")
    assert ws.subprotocol == "graphql-transport-ws"
    ws.close()


def test_offering_only_unknown_subprotocols_is_closed_with_1002(sim: Simulator) -> None:
    ws = websocket.create_connection(sim.url(), timeout=3,
                                     header=["Sec-WebSocket-Protocol: mqtt"])
    assert close_code(ws) == 1002


# --- graphql-transport-ws ------------------------------------------------------------------


def test_transport_ws_handshake_ping_and_next(sim: Simulator) -> None:
    ws = connect(sim.url(), "graphql-transport-ws")
    ws.send(json.dumps({"type": "connection_init"}))
    assert receive(ws) == {"type": "connection_ack"}
    ws.send(json.dumps({"type": "ping"}))
    assert receive(ws) == {"type": "pong"}
    ws.send(json.dumps({"id": "a", "type": "subscribe",
                        "payload": {"query": "subscription { t: temperature }"}}))
    message = receive_until(ws, "next")
    assert message["id"] == "a" and isinstance(message["payload"]["data"]["t"], float)
    ws.close()


def test_transport_ws_subscribe_before_ack_is_closed_with_4401(sim: Simulator) -> None:
    ws = connect(sim.url(), "graphql-transport-ws")
    ws.send(json.dumps({"id": "1", "type": "subscribe",
                        "payload": {"query": "subscription { temperature }"}}))
    assert close_code(ws) == 4401


def test_transport_ws_count_ends_with_complete(tmp_path: Path) -> None:
    sim = Simulator(SimulatorConfig(port=0, interval=0.001, count=3)).start()
    try:
        ws = connect(sim.url(), "graphql-transport-ws")
        ws.send(json.dumps({"type": "connection_init"}))
        receive(ws)
        ws.send(json.dumps({"id": "1", "type": "subscribe",
                            "payload": {"query": "subscription { temperature }"}}))
        kinds = [receive(ws)["type"] for _ in range(4)]
        ws.close()
    finally:
        sim.stop()
    assert kinds == ["next", "next", "next", "complete"]


# --- plain JSON, streams, emission log, rates ----------------------------------------------


def test_no_subprotocol_means_plain_json_value_frames(sim: Simulator) -> None:
    ws = connect(sim.url())
    assert ws.subprotocol is None
    message = receive(ws)
    assert set(message) == {"value"} and isinstance(message["value"], float)
    ws.close()


def test_separate_paths_are_separate_streams_in_the_emission_log(
    sim: Simulator, tmp_path: Path
) -> None:
    received: dict[str, list[float]] = {}
    for stream in ("a", "b"):
        ws = connect(sim.url(stream))
        received[stream] = [receive(ws)["value"] for _ in range(5)]
        ws.close()
    sim.stop()
    log = read_emit_log(tmp_path / "emit.log")
    for stream in ("a", "b"):
        assert [v for _, v in log[stream]][:5] == received[stream]
    assert received["a"] != received["b"], "each stream walks on its own"


def test_the_emission_log_tells_two_subscriptions_to_one_stream_apart(
    sim: Simulator, tmp_path: Path
) -> None:
    first, second = connect(sim.url("x")), connect(sim.url("x"))
    got = {"first": [receive(first)["value"] for _ in range(3)],
           "second": [receive(second)["value"] for _ in range(3)]}
    first.close()
    second.close()
    sim.stop()
    by_connection = read_emit_log_by_connection(tmp_path / "emit.log")["x"]
    assert len(by_connection) == 2
    walks = [[v for _, v in emitted][:3] for _, emitted in sorted(by_connection.items())]
    assert walks == [got["first"], got["second"]]
    assert got["first"] == got["second"]  # same seed, same walk: only the serial differs


def test_unknown_paths_answer_http_404(sim: Simulator) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        connect(sim.url().replace("/graphql", "/nothing"))
    assert info.value.status_code == 404


def test_interval_paces_the_readings(tmp_path: Path) -> None:
    sim = Simulator(SimulatorConfig(port=0, interval=0.05)).start()
    try:
        ws = connect(sim.url())
        receive(ws)
        started = time.monotonic()
        for _ in range(4):
            receive(ws)
        elapsed = time.monotonic() - started
        ws.close()
    finally:
        sim.stop()
    assert 0.15 <= elapsed <= 0.5


def test_max_rate_sends_as_fast_as_the_client_reads() -> None:
    sim = Simulator(SimulatorConfig(port=0, max_rate=True)).start()
    try:
        ws = connect(sim.url(), "graphql-ws")
        ws.send(json.dumps({"id": "1", "type": "start",
                            "payload": {"query": "subscription { temperature }"}}))
        started = time.monotonic()
        count = 0
        while count < 20_000 and time.monotonic() - started < 5:
            ws.recv()
            count += 1
        elapsed = time.monotonic() - started
        ws.close()
    finally:
        sim.stop()
    assert count == 20_000 and elapsed < 5


def test_simulate_command_prints_where_it_listens_and_stops_on_sigterm() -> None:
    peer = simulator_process("--interval", "0.01").start()
    try:
        ws = connect(peer.url())
        assert "value" in receive(ws)
        ws.close()
    finally:
        peer.stop()
    assert peer.proc is not None and peer.proc.returncode == 0
    assert "Simulator listening on ws://127.0.0.1:" in "".join(peer.output)


def test_simulate_command_refuses_a_negative_interval() -> None:
    result = subprocess.run([sys.executable, "-m", "tps.feeds.simulator", "--interval", "-1"],
                            cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2 and "--interval" in result.stderr
