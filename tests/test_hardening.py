"""Issue 14: the attacks of its table, one test per row (row 14: one per item).

Each test runs its attack against a real ``tps serve`` on loopback while
:class:`~tests.support.attack.ReadyWatch` polls ``/ready`` from a process of its own:
every poll must answer 200 within 100 ms. Each then checks that no stored reading is
lost: a live feed keeps being stored, and everything it received reaches the store.
The attacks are small and bounded (a few thousand messages, headers instead of the
90 MB bodies, 100 subscriptions).

Most tests share one TPS (``shared``), configured as an operator following the README's
Security section would; tests that need their own settings or data dir start their
own.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket

from tests.support.attack import (
    NothingLost,
    ReadyWatch,
    raw_exchange,
    request,
    rogue,
    rss_mb,
    streams,
)
from tests.support.influxdb import InfluxServer
from tests.support.service import SimulatorProcess, TpsProcess
from tests.support.wait import wait_until
from tps.config import Settings
from tps.model import Reading
from tps.store import open_store

TOKEN = "hardening-test-token-0123456789"
SUB_PROTOCOL = "graphql-transport-ws"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    simulator = SimulatorProcess(tmp_path_factory.mktemp("sim"), interval=0.05).start()
    yield simulator
    simulator.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, sim: SimulatorProcess
           ) -> Iterator[TpsProcess]:
    """One TPS configured as the Security section advises, feeding stream ``base``."""
    tps = TpsProcess(tmp_path_factory.mktemp("shared"), {
        "TPS_FEEDS": f"base={sim.url('base')}",
        "TPS_FLUSH_INTERVAL": "0.2",
        "TPS_CONTROL_TOKEN": TOKEN,
        "TPS_TRUSTED_PROXIES": "127.0.0.1",
        "TPS_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "TPS_HTTP_HEADER_TIMEOUT": "1",
        "TPS_MAX_STREAMS": "6",
        "TPS_MAX_CONNECTION_SUBSCRIPTIONS": "3000",
        "TPS_MAX_SUBSCRIPTIONS": "3001",
    }, "shared").start()
    yield tps
    tps.close()


def _own(tmp: Path, env: dict[str, str], name: str = "tps") -> TpsProcess:
    return TpsProcess(tmp, {"TPS_FLUSH_INTERVAL": "0.2", "TPS_CONTROL_TOKEN": TOKEN, **env},
                      name)


@contextlib.contextmanager
def watched(tps: TpsProcess, stream: str = "base") -> Iterator[ReadyWatch]:
    """Nothing lost of ``stream`` around the block, and /ready healthy throughout it."""
    lost = NothingLost(tps, stream).before()
    with ReadyWatch(tps.url) as watch:
        yield watch
    watch.assert_healthy()
    lost.check()


def _add(tps: TpsProcess, name: str, url: str, token: str | None = TOKEN) -> tuple[int, Any]:
    return request(tps, "POST", "/api/streams", {"name": name, "url": url}, token=token)


def _remove(tps: TpsProcess, *names: str) -> None:
    for name in names:
        request(tps, "DELETE", f"/api/streams/{name}", token=TOKEN)


def _ws(tps: TpsProcess) -> websocket.WebSocket:
    ws = websocket.create_connection(tps.url.replace("http", "ws") + "/graphql",
                                     subprotocols=[SUB_PROTOCOL], timeout=10)
    ws.send(json.dumps({"type": "connection_init"}))
    assert json.loads(ws.recv())["type"] == "connection_ack"
    return ws


def _until_pong(ws: websocket.WebSocket) -> list[dict[str, Any]]:
    """Ping, and collect every message up to the pong (all earlier ones are handled)."""
    ws.send(json.dumps({"type": "ping"}))
    seen: list[dict[str, Any]] = []
    while True:
        message = json.loads(ws.recv())
        if message["type"] == "pong":
            return seen
        seen.append(message)


# --- row 1 ---------------------------------------------------------------------------


def test_row1_a_feed_url_can_never_reach_the_store(
    tmp_path: Path, influx: InfluxServer, influx_db: str, sim: SimulatorProcess
) -> None:
    """A stream at ``ws://127.0.0.1:8086/query?q=DROP DATABASE tps`` made InfluxDB drop
    the database on every reconnect. Now it is refused - at once for an address, at
    connect for a host name that resolves there - even with loopback allowed."""
    port = influx.url.rsplit(":", 1)[1]
    drop = f"/query?q=DROP%20DATABASE%20{influx_db}"
    tps = _own(tmp_path, {
        "TPS_INFLUX_URL": influx.url, "TPS_INFLUX_DB": influx_db,
        "TPS_FEEDS": f"base={sim.url('base')},configured=ws://127.1:{port}{drop}",
    }).start()
    try:
        with watched(tps):
            status, body = _add(tps, "evil", f"ws://127.0.0.1:{port}{drop}")
            assert status == 422 and "store" in body["error"]["message"], body
            status, body = _add(tps, "evil2", f"ws://localhost:{port}{drop}")
            assert status == 422, body
            # "2130706433" is 127.0.0.1 once resolved: only the connect-time check sees it.
            assert _add(tps, "evil3", f"ws://2130706433:{port}{drop}")[0] == 201
            wait_until(lambda: streams(tps)["evil3"]["state"] == "refused", 10,
                       what="the stream resolving to the store to be refused")
            both = streams(tps)
            for name in ("evil3", "configured"):
                assert both[name]["state"] == "refused", both[name]
                assert "the store (TPS_INFLUX_URL)" in both[name]["last_error"]
                assert both[name]["received"] == 0
        databases = influx.query("SHOW DATABASES")[0]["values"]
        assert isinstance(databases, list) and [influx_db] in databases
    finally:
        tps.close()


# --- rows 2 and 5: a store with many readings ----------------------------------------------


BULK = 120_000
FEW = 12_000


@pytest.fixture(scope="module")
def bulk(tmp_path_factory: pytest.TempPathFactory, sim: SimulatorProcess
         ) -> Iterator[TpsProcess]:
    """A TPS whose SQLite store already holds 120,000 readings of stream ``bulk``, which
    the simulator keeps feeding, and 12,000 of stream ``few``."""
    tmp = tmp_path_factory.mktemp("bulk")
    data_dir = tmp / "data"
    store = open_store(Settings(data_dir=data_dir))
    store.ensure_ready()
    start = time.time_ns() - 3_600_000_000_000
    for first in range(0, BULK, 20_000):
        store.write([Reading("bulk", start + i * 1_000_000, float(i % 97))
                     for i in range(first, first + 20_000)])
    store.write([Reading("few", start + i * 1_000_000, 1.0) for i in range(FEW)])
    store.close()
    tps = _own(tmp, {"TPS_FEEDS": f"bulk={sim.url('bulk')}",
                     "TPS_DATA_DIR": str(data_dir)}, "bulk").start()
    yield tps
    tps.close()


def _post_graphql(tps: TpsProcess, query: str, timeout: float = 30) -> tuple[int, Any, float]:
    started = time.perf_counter()
    status, body = request(tps, "POST", "/graphql", {"query": query}, timeout=timeout)
    return status, body, time.perf_counter() - started


def test_row2_a_request_over_the_row_budget_is_refused_before_any_work(
    bulk: TpsProcess
) -> None:
    """20 aliases of ``temperatureMeasurements(limit: 100000)`` returned 57 MB in 14 s and
    froze the loop. Now: refused at once naming the limit; the biggest allowed answer is
    built off the loop, and the memory it took is given back. (The attack reads stream
    ``few`` so that, where it is not refused, it stays bounded: 240,000 rows.)"""
    fields = " ".join(f'a{i}: temperatureMeasurements(after: "0001-01-01T00:00:00Z", '
                      'limit: 100000, stream: "few") { time value }' for i in range(20))
    big = ('{ temperatureMeasurements(after: "0001-01-01T00:00:00Z", limit: 100000, '
           'stream: "bulk") { time value stream } }')
    pid = bulk.proc.pid if bulk.proc else 0
    with watched(bulk, "bulk"):
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda _: _post_graphql(bulk, "{ " + fields + " }"),
                                    range(2)))
        for status, body, seconds in answers:
            assert status == 200 and "data" not in body, str(body)[:300]
            assert "TPS_MAX_REQUEST_ROWS" in body["errors"][0]["message"]
            assert seconds < 2
        aliases = " ".join(f"c{i}: currentTemperature {{ value }}" for i in range(40))
        status, body, _ = _post_graphql(bulk, "{ " + aliases + " }")
        assert "TPS_MAX_ALIASES" in body["errors"][0]["message"]
        rss_before = rss_mb(pid)
        status, body, _ = _post_graphql(bulk, big)
        assert status == 200 and len(body["data"]["temperatureMeasurements"]) == 100_000
        del body
        wait_until(lambda: rss_mb(pid) - rss_before < 60, 5,
                   what="the memory of a 100,000-row answer to be given back")


def test_row5_many_window_sizes_share_one_seed_and_never_tie_up_the_query_pool(
    bulk: TpsProcess
) -> None:
    """100 ``averageTemperature(windowSize: ~100000)`` subscriptions held the query pool
    for 45 s (/ready 503). Now one window ring per stream is seeded once."""
    sockets = [_ws(bulk) for _ in range(4)]
    query = ("subscription ($n: Int!) { averageTemperature(windowSize: $n, stream: \"bulk\")"
             " { value count windowSize } }")
    try:
        with watched(bulk, "bulk"):
            for i in range(100):
                sockets[i % 4].send(json.dumps({
                    "id": str(i), "type": "subscribe",
                    "payload": {"query": query, "variables": {"n": 100_000 - i}}}))
            firsts: dict[str, dict[str, Any]] = {}
            deadline = time.monotonic() + 30
            while len(firsts) < 100 and time.monotonic() < deadline:
                for ws in sockets:
                    ws.settimeout(0.5)
                    with contextlib.suppress(websocket.WebSocketTimeoutException):
                        message = json.loads(ws.recv())
                        assert message["type"] == "next", message
                        firsts.setdefault(message["id"], message["payload"])
            assert len(firsts) == 100
        for sub_id, payload in firsts.items():
            average = payload["data"]["averageTemperature"]
            assert average["count"] == average["windowSize"] == 100_000 - int(sub_id)
    finally:
        for ws in sockets:
            ws.close()


# --- row 3 ---------------------------------------------------------------------------------


def test_row3_subscriptions_are_capped_and_a_connection_closes_in_linear_time(
    shared: TpsProcess, sim: SimulatorProcess
) -> None:
    """10,000 distinct subscriptions on one socket, then closing it, froze the API for
    43.8 s (quadratic teardown) and nothing capped them. (Distinct window sizes of a
    registered, stopped stream: every subscription its own group, no events.)"""
    assert request(shared, "POST", "/api/streams", {"name": "quiet", "url": sim.url("quiet"),
                                                    "started": False}, token=TOKEN)[0] == 201
    query = ('subscription ($n: Int!) { averageTemperature(windowSize: $n, stream: "quiet") '
             "{ value } }")
    ws = _ws(shared)
    other = _ws(shared)
    try:
        with watched(shared):
            for i in range(3001):
                ws.send(json.dumps({"id": str(i), "type": "subscribe", "payload": {
                    "query": query, "variables": {"n": i + 1}}}))
            refused = _until_pong(ws)
            assert [m["id"] for m in refused] == ["3000"], refused[:3]
            assert "TPS_MAX_CONNECTION_SUBSCRIPTIONS" in refused[0]["payload"][0]["message"]
            assert refused[0]["payload"][0]["extensions"]["limit"] == 3000
            for i in range(2):
                other.send(json.dumps({"id": str(i), "type": "subscribe", "payload": {
                    "query": query, "variables": {"n": i + 1}}}))
            refused = _until_pong(other)
            assert [m["id"] for m in refused] == ["1"], refused
            assert "TPS_MAX_SUBSCRIPTIONS" in refused[0]["payload"][0]["message"]
            ws.close()  # 3,000 subscriptions end at once
            fresh = _ws(shared)
            fresh.send(json.dumps({"id": "a", "type": "subscribe", "payload": {
                "query": "subscription { temperature(stream: \"base\") { value } }"}}))
            assert json.loads(fresh.recv())["type"] == "next"  # room again, and live
            fresh.close()
    finally:
        ws.close()
        other.close()
        _remove(shared, "quiet")


# --- row 4 and row 14 (registry): a TPS started over an existing registry --------------------


@pytest.fixture(scope="module")
def forbidden() -> Iterator[Any]:
    """A listener on 127.0.0.2, which TPS_FEED_ALLOW=*,127.0.0.1 does not name: a
    connection arriving here is a breach."""
    server = socket.socket()
    server.bind(("127.0.0.2", 0))
    server.listen(16)
    server.settimeout(0.1)
    yield server
    server.close()


def _accepted(server: socket.socket) -> int:
    count = 0
    with contextlib.suppress(TimeoutError, OSError):
        while True:
            conn, _ = server.accept()
            conn.close()
            count += 1
    return count


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, sim: SimulatorProcess,
               forbidden: socket.socket) -> Iterator[TpsProcess]:
    """A TPS whose registry holds a good stream, one whose host TPS_FEED_ALLOW does not
    allow, and one invalid entry."""
    tmp = tmp_path_factory.mktemp("registry")
    data_dir = tmp / "data"
    data_dir.mkdir()
    port = forbidden.getsockname()[1]
    entries = [
        {"name": "reg", "url": sim.url("reg"), "query": "subscription { temperature }"},
        {"name": "stale", "url": f"ws://127.0.0.2:{port}/graphql",
         "query": "subscription { temperature }"},
        {"name": "bad name", "url": sim.url("x"), "query": "subscription { temperature }"},
    ]
    (data_dir / "streams.json").write_text(json.dumps({"version": 1, "streams": entries}))
    tps = _own(tmp, {"TPS_DATA_DIR": str(data_dir)}, "registry").start()
    yield tps
    tps.close()


def test_row4_registered_streams_are_rechecked_and_redirects_are_not_followed(
    registered: TpsProcess, forbidden: socket.socket
) -> None:
    """A 302 in the handshake led the reader to a forbidden host, and registry entries
    were never checked against TPS_FEED_ALLOW at start."""
    port = forbidden.getsockname()[1]
    with watched(registered, "reg"):
        wait_until(lambda: streams(registered)["stale"]["state"] == "refused", 10,
                   what="the registered stream to a forbidden host to be refused")
        assert "TPS_FEED_ALLOW" in streams(registered)["stale"]["last_error"]
        with rogue("redirect", location=f"ws://127.0.0.2:{port}/graphql") as redirector:
            assert _add(registered, "hop", redirector.url())[0] == 201
            wait_until(lambda: redirector.connections >= 2, 15,
                       what="the reader to try the redirecting server twice")
            hop = streams(registered)["hop"]
            assert hop["state"] != "subscribed" and "redirect" in hop["last_error"], hop
        _remove(registered, "hop")
    assert _accepted(forbidden) == 0


def test_row14_one_bad_registry_entry_is_set_aside_alone(registered: TpsProcess) -> None:
    """One invalid entry used to set the whole registry aside."""
    with watched(registered, "reg"):
        names = set(streams(registered))
        assert {"reg", "stale"} <= names and "bad name" not in names
    rejected = list(registered.data_dir.glob("streams.json.rejected-*"))
    assert len(rejected) == 1
    assert json.loads(rejected[0].read_text())[0]["entry"]["name"] == "bad name"
    assert not list(registered.data_dir.glob("streams.json.corrupt-*"))


# --- row 6 ---------------------------------------------------------------------------------


def test_row6_feed_credentials_and_query_values_are_never_shown(
    shared: TpsProcess, sim: SimulatorProcess
) -> None:
    """``ws://user:pass@host/?apikey=...`` appeared in REST, GraphQL and every reconnect's
    log line. Now only the registry file keeps it."""
    secrets = ("s3cretPW", "K3Y-0f-SECRET")
    url = sim.url("secret").replace("ws://", "ws://alice:s3cretPW@") + "?apikey=K3Y-0f-SECRET"
    with watched(shared):
        status, body = _add(shared, "secret", url)
        assert status == 201 and body["url"].startswith("ws://***@"), body
        wait_until(lambda: streams(shared)["secret"]["received"] > 0, 10,
                   what="the stream with credentials to connect")
        request(shared, "POST", "/api/streams/secret/stop", token=TOKEN)
        shown = [
            json.dumps(request(shared, "GET", "/api/streams")[1]),
            json.dumps(request(shared, "GET", "/api/streams/secret")[1]),
            json.dumps(shared.graphql("{ streams { name url } }")),
            json.dumps(request(shared, "GET", "/health")[1]),
            str(request(shared, "GET", "/metrics")[1]),
            subprocess.run([sys.executable, "-m", "tps", "streams", "list", "--url",
                            shared.url, "--token", TOKEN], capture_output=True, text=True,
                           timeout=30, check=True).stdout,
            shared.log(),
        ]
        registry = (shared.data_dir / "streams.json").read_text()
        _remove(shared, "secret")
    assert "apikey=***" in shown[0]
    for text in shown:
        for secret in secrets:
            assert secret not in text
    assert all(secret in registry for secret in secrets)  # the full URL stays there


# --- row 7 ---------------------------------------------------------------------------------


def test_row7_a_second_process_cannot_use_the_same_data_dir(
    tmp_path: Path, sim: SimulatorProcess
) -> None:
    """A second TPS on the same data dir deleted the first's spool segment."""
    first = _own(tmp_path, {"TPS_FEEDS": f"base={sim.url('base')}"}, "first").start()
    second = _own(tmp_path, {"TPS_FEEDS": f"base={sim.url('base')}",
                             "TPS_DATA_DIR": str(first.data_dir)}, "second")
    try:
        with watched(first):
            second.start(wait=False)
            assert second.proc is not None
            assert second.proc.wait(30) == 2
            lines = second.log().strip().splitlines()
            assert len(lines) == 1, lines
            assert f"pid {first.proc.pid if first.proc else 0}" in lines[0], lines
            assert "TPS_DATA_DIR" in lines[0]
    finally:
        second.close()  # still running only if the lock did not stop it
        first.close()


# --- row 8 ---------------------------------------------------------------------------------


def test_row8_a_feed_can_never_point_at_tps_itself(shared: TpsProcess) -> None:
    """A feed at TPS's own /graphql echoed 346,615 readings in 30 s."""
    port = shared.port
    with watched(shared):
        status, body = _add(shared, "echo", f"ws://127.0.0.1:{port}/graphql")
        assert status == 422 and "TPS's own HTTP API" in body["error"]["message"], body
        assert _add(shared, "echo", f"ws://127.1:{port}/graphql")[0] == 201
        wait_until(lambda: streams(shared)["echo"]["state"] == "refused", 10,
                   what="the stream resolving to TPS itself to be refused")
        echo = streams(shared)["echo"]
        assert "TPS's own HTTP API" in echo["last_error"] and echo["received"] == 0
        _remove(shared, "echo")


# --- row 9 ---------------------------------------------------------------------------------


def _declare_huge_body(port: int, path: str, token: str | None = None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"{auth}Content-Length: 90000000\r\n\r\n").encode()
    return raw_exchange(port, head, wait=3)


def test_row9_bodies_are_refused_before_they_are_read(shared: TpsProcess) -> None:
    """8 concurrent 90 MB POSTs took RSS from 1.0 to 1.9 GB; /api/streams read the body
    before answering 401. Now the answer comes from the headers alone."""
    pid = shared.proc.pid if shared.proc else 0
    before = rss_mb(pid)
    with watched(shared):
        cases = [("/api/streams", None, b"401"), ("/api/streams", TOKEN, b"413"),
                 ("/api/streams/base/stop", TOKEN, b"413"), ("/graphql", None, b"413")]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda case: _declare_huge_body(shared.port, *case[:2]),
                                    cases * 2))
        for (_, _, code), answer in zip(cases * 2, answers, strict=True):
            assert answer.startswith(b"HTTP/1.1 " + code), answer[:200]
    assert streams(shared)["base"]["state"] == "subscribed"
    assert rss_mb(pid) - before < 30


# --- row 10 --------------------------------------------------------------------------------


def test_row10_deeply_nested_json_gets_400_or_a_close_code_never_a_500(
    shared: TpsProcess
) -> None:
    """``[`` x 100,000 gave a 500 and a RecursionError (REST too), and dropped a
    websocket without a close code."""
    deep = b"[" * 100_000
    with watched(shared):
        status, body = request(shared, "POST", "/graphql", deep)
        assert status == 400 and "nested" in body["errors"][0]["message"], body
        status, body = request(shared, "POST", "/api/streams", b"[" * 60_000, token=TOKEN)
        assert status == 400 and "nested" in body["error"]["message"], body
        status, body = request(shared, "GET", "/graphql?query=%7Bstreams%7Bname%7D%7D"
                               "&variables=" + "%5B" * 5000)
        assert status == 400, body
        ws = _ws(shared)
        ws.send(deep.decode())
        opcode, data = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(data[:2], "big") == 4400, data
        ws.close()
    assert "RecursionError" not in shared.log() and "Traceback" not in shared.log()


# --- row 11 --------------------------------------------------------------------------------


def test_row11_control_characters_never_reach_the_log_raw(shared: TpsProcess) -> None:
    """CR/LF and ANSI escapes in a feed URL were logged raw on every reconnect."""
    forged = "FORGED 2026-01-01 00:00:00,000 CRITICAL tps everything is fine"
    with watched(shared):
        status, body = _add(shared, "crlf", "ws://127.0.0.1:1/\r\n" + forged)
        assert status == 422 and body["error"]["field"] == "url", body
        with rogue("close", reason="\x1b[2J\x1b[31mEVIL\r\n" + forged) as server:
            assert _add(shared, "rogue", server.url())[0] == 201
            wait_until(lambda: "EVIL" in shared.log(), 10,
                       what="the rogue server's close reason to be logged")
            _remove(shared, "rogue")
    log = shared.log()
    assert "\x1b" not in log and "\\x1b[31mEVIL\\r\\nFORGED" in log
    assert not [line for line in log.splitlines() if line.startswith("FORGED")]


# --- row 12 --------------------------------------------------------------------------------


def _as(source: str, port: int, path: str, forwarded: str) -> int:
    """POST ``path`` from the local address ``source`` with an X-Forwarded-For header."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                      source_address=(source, 0))
    conn.request("POST", path, headers={
        "Authorization": f"Bearer {TOKEN}", "X-Forwarded-For": forwarded})
    status = conn.getresponse().status
    conn.close()
    return status


def test_row12_x_forwarded_for_is_believed_only_from_trusted_proxies(
    shared: TpsProcess, sim: SimulatorProcess
) -> None:
    """The audit line "stopped by 6.6.6.6" trusted any client's X-Forwarded-For."""
    with watched(shared):
        assert _add(shared, "xff", sim.url("xff"))[0] == 201
        # 127.0.0.2 is not in TPS_TRUSTED_PROXIES (127.0.0.1): its header is ignored.
        assert _as("127.0.0.2", shared.port, "/api/streams/xff/stop", "6.6.6.6") == 200
        assert _as("127.0.0.1", shared.port, "/api/streams/xff/start", "7.7.7.7") == 200
        _remove(shared, "xff")
    log = shared.log()
    assert "stream 'xff' stopped by 127.0.0.2" in log
    assert "stream 'xff' started by 7.7.7.7" in log
    assert "6.6.6.6" not in log


# --- row 13 --------------------------------------------------------------------------------


def _serve_as_nobody(data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TPS_DATA_DIR": str(data_dir), "TPS_HTTP_PORT": "0",
           "TPS_CONTROL_TOKEN": TOKEN}
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-m", "tps", "serve"],
        env=env, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[1])


def test_row13_an_unusable_data_dir_is_one_line_and_exit_2() -> None:
    """An unreadable or read-only data dir gave a traceback and exit 1. The readings it
    holds stay as they were. (TPS runs as ``nobody``: root ignores file modes.)"""
    assert shutil.which("setpriv"), "setpriv missing: apt-get install -y util-linux"
    base = Path(tempfile.mkdtemp(prefix="tps-perm-"))
    try:
        os.chmod(base, 0o755)
        cases = {"read-only": 0o555, "unreadable": 0o000}
        for case, mode in cases.items():
            data_dir = base / case
            store = open_store(Settings(data_dir=data_dir))
            store.ensure_ready()
            store.write([Reading("s", i, float(i)) for i in range(1, 11)])
            store.close()
            before = {p.name: p.read_bytes() for p in data_dir.iterdir()}
            os.chmod(data_dir, mode)
            result = _serve_as_nobody(data_dir)
            os.chmod(data_dir, 0o755)
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 2, (case, result.stderr[-2000:])
            assert len(lines) == 1 and "TPS_DATA_DIR" in lines[0], (case, lines)
            assert {p.name: p.read_bytes() for p in data_dir.iterdir()} == before
        # Usable folder, unusable contents: a spool folder nobody may write.
        data_dir = base / "spool"
        (data_dir / "spool").mkdir(parents=True)
        os.chmod(data_dir, 0o777)
        os.chmod(data_dir / "spool", stat.S_IRUSR | stat.S_IXUSR)
        result = _serve_as_nobody(data_dir)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, result.stderr[-2000:]
        assert len(lines) == 1 and "TPS_DATA_DIR" in lines[-1], lines
    finally:
        for path in base.rglob("*"):
            with contextlib.suppress(OSError):
                os.chmod(path, 0o755)
        shutil.rmtree(base, ignore_errors=True)


# --- row 14: one test per item ----------------------------------------------------------


def test_row14_streams_are_capped(shared: TpsProcess, sim: SimulatorProcess) -> None:
    """2,000 streams were accepted (4,014 threads, a 727 KB /metrics)."""
    added: list[str] = []
    with watched(shared):
        while len(streams(shared)) < 6:
            name = f"cap{len(added)}"
            assert _add(shared, name, sim.url(name))[0] == 201
            added.append(name)
        status, body = _add(shared, "one-too-many", sim.url("x"))
        assert status == 409 and "TPS_MAX_STREAMS" in body["error"]["message"], body
        _remove(shared, *added)


def test_row14_slow_header_sockets_are_timed_out(shared: TpsProcess) -> None:
    """200 sockets sending headers slowly were never timed out."""
    with watched(shared):
        sockets = []
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", shared.port), timeout=5)
            sock.sendall(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            sockets.append(sock)
        started = time.monotonic()
        for sock in sockets:
            sock.settimeout(max(0.1, 5 - (time.monotonic() - started)))
            assert sock.recv(1024) == b""  # TPS_HTTP_HEADER_TIMEOUT=1 closed it
            sock.close()
        assert time.monotonic() - started < 5


def test_row14_a_huge_variable_is_not_echoed_back(shared: TpsProcess) -> None:
    """A 20 MB variable came back in a 20 MB error."""
    with watched(shared):
        head = (b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 20000100\r\n\r\n")
        body = b'{"query": "query ($x: Int) { streams { name } }", "variables": {"x": "'
        answer = raw_exchange(shared.port, head + body + b"A" * 100_000, wait=3)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert len(answer) < 2000


def test_row14_a_short_control_token_is_warned_about(
    tmp_path: Path, sim: SimulatorProcess
) -> None:
    """``TPS_CONTROL_TOKEN=a`` was accepted silently."""
    tps = _own(tmp_path, {"TPS_FEEDS": f"base={sim.url('base')}",
                          "TPS_CONTROL_TOKEN": "a"}).start()
    try:
        with watched(tps):
            assert request(tps, "POST", "/api/streams/base/stop", token="a")[0] == 200
            assert request(tps, "POST", "/api/streams/base/start", token="a")[0] == 200
        warnings = [line for line in tps.log().splitlines() if "TPS_CONTROL_TOKEN" in line]
        assert len(warnings) == 1 and "WARNING" in warnings[0] and "16" in warnings[0]
    finally:
        tps.close()


def test_row14_head_health_answers(shared: TpsProcess) -> None:
    """``HEAD /health`` was 405."""
    with watched(shared):
        for path in ("/health", "/ready"):
            conn = http.client.HTTPConnection("127.0.0.1", shared.port, timeout=5)
            conn.request("HEAD", path)
            response = conn.getresponse()
            assert response.status == 200 and response.read() == b"", path
            conn.close()


def test_row14_only_allowed_hosts_are_answered(shared: TpsProcess) -> None:
    """Reads were served to any Host (the shape of a DNS-rebinding attack)."""
    query = "/graphql?query=%7Bstreams%7Bname%7D%7D"
    with watched(shared):
        for host, path, expected in [("evil.example", query, 421),
                                     ("evil.example", "/api/streams", 421),
                                     ("evil.example", "/", 421),
                                     ("evil.example:80", "/ready", 200),
                                     ("localhost", query, 200),
                                     (f"127.0.0.1:{shared.port}", "/api/streams", 200)]:
            status, body = request(shared, "GET", path, headers={"Host": host})
            assert status == expected, (host, path, status, body)
            if expected == 421:
                assert body["error"]["code"] == "misdirected"
    assert not re.search(r"evil\.example.*Traceback", shared.log())
