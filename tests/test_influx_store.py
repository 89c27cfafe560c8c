"""InfluxStore specifics: errors, database creation, auth, reconnects (real InfluxDB).

The answers themselves are covered by the conformance suite; here are the things only
the InfluxDB store has. A few error-mapping tests use a tiny scripted HTTP server,
because a real InfluxDB will not answer 503 or demand a token on request.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.influxdb import InfluxServer, free_port
from tps.config.settings import Settings
from tps.errors import PartialWrite, StoreError, StoreUnavailable
from tps.model import Reading
from tps.store import InfluxStore, SqliteStore, open_store

T0 = 1_690_587_027_046_286_592


def raw_write(influx: InfluxServer, db: str, body: str) -> None:
    """Write line protocol directly, bypassing TPS."""
    request = urllib.request.Request(
        f"{influx.url}/write?db={db}&precision=ns", data=body.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204


def database_names(influx: InfluxServer) -> list[str]:
    series = influx.query("SHOW DATABASES")
    values = (series[0].get("values") or []) if series else []
    assert isinstance(values, list)
    return [row[0] for row in values]


# --- reachability -------------------------------------------------------------------


def test_nothing_listening_is_store_unavailable() -> None:
    store = InfluxStore(f"http://127.0.0.1:{free_port()}", "tps", timeout=2.0)
    assert store.ping() is False
    for call in (store.ensure_ready, lambda: store.write([Reading("a", T0, 1.0)]),
                 store.current, lambda: store.statistics(None, None)):
        with pytest.raises(StoreUnavailable, match="unreachable"):
            call()
    store.close()
    store.close()


def test_a_server_that_never_answers_times_out_as_store_unavailable() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepts connections in the kernel, never answers
        port = listener.getsockname()[1]
        store = InfluxStore(f"http://127.0.0.1:{port}", "tps", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"did not answer within 0\.3 s"):
            store.write([Reading("a", T0, 1.0)])
        assert time.monotonic() - started < 3
        assert store.ping() is False
        store.close()


def test_the_store_reconnects_after_influxdb_restarts(private_influx: InfluxServer) -> None:
    store = InfluxStore(private_influx.url, "restart")
    store.ensure_ready()
    store.write([Reading("a", T0, 1.0)])
    # A restart between two calls leaves a dead kept-alive connection behind:
    # the next call must quietly use a fresh one.
    private_influx.stop()
    private_influx.start()
    assert store.current("a") == Reading("a", T0, 1.0)
    private_influx.stop()
    with pytest.raises(StoreUnavailable):
        store.write([Reading("a", T0 + 1, 2.0)])
    assert store.ping() is False
    private_influx.start()
    store.write([Reading("a", T0 + 1, 2.0)])
    assert store.count("a") == 2
    store.close()


# --- database creation --------------------------------------------------------------


def test_ensure_ready_creates_the_database(influx: InfluxServer, influx_db: str) -> None:
    assert influx_db not in database_names(influx)
    store = InfluxStore(influx.url, influx_db)
    store.ensure_ready()
    store.ensure_ready()  # idempotent
    assert influx_db in database_names(influx)
    store.close()


def test_a_write_recreates_a_dropped_database(influx: InfluxServer, influx_db: str) -> None:
    store = InfluxStore(influx.url, influx_db)
    store.ensure_ready()
    influx.drop_database(influx_db)
    store.write([Reading("a", T0, 1.0)])
    assert influx.count(influx_db, "a") == 1
    store.close()


def test_reads_of_a_database_that_does_not_exist_yet_are_empty(
    influx: InfluxServer, influx_db: str
) -> None:
    store = InfluxStore(influx.url, influx_db)
    assert store.current() is None
    assert store.count() == 0
    assert store.statistics(None, None).count == 0
    assert store.measurements(None, None) == []
    assert store.average(5) is None
    assert store.stream_names() == []
    store.close()


# --- errors from InfluxDB -----------------------------------------------------------


def test_a_rejected_write_is_store_error_with_influxdb_message(
    influx: InfluxServer, influx_db: str
) -> None:
    store = InfluxStore(influx.url, influx_db)
    store.ensure_ready()
    # An integer field in the same shard (field types are fixed per shard).
    raw_write(influx, influx_db, f"temperature,stream=a value=1i {T0}")
    with pytest.raises(StoreError, match="field type conflict") as caught:
        store.write([Reading("a", T0 + 1, 1.5)])
    assert not isinstance(caught.value, StoreUnavailable)
    # InfluxDB keeps the rest of a batch and says how many points it dropped.
    assert isinstance(caught.value, PartialWrite) and caught.value.dropped == 1
    store.close()


def test_a_bad_query_is_store_error_with_influxdb_message(
    influx: InfluxServer, influx_db: str
) -> None:
    store = InfluxStore(influx.url, influx_db)
    store.ensure_ready()
    with pytest.raises(StoreError, match="error parsing query") as caught:
        store.query("SELECT FROM")
    assert not isinstance(caught.value, StoreUnavailable)
    store.close()


def test_a_name_influxdb_cannot_store_is_refused_and_has_no_data(
    influx: InfluxServer, influx_db: str
) -> None:
    store = InfluxStore(influx.url, influx_db)
    store.ensure_ready()
    with pytest.raises(StoreError, match="backslash"):
        store.write([Reading("ends-with\\", T0, 1.0)])
    assert store.current("ends-with\\") is None
    assert store.count("cr\rname") == 0
    assert store.statistics(None, None, "new\nline").count == 0
    store.close()


# --- answers checked against InfluxDB itself ---------------------------------------


def test_statistics_equal_influxql_aggregates_computed_directly(
    influx: InfluxServer, influx_db: str
) -> None:
    rng = random.Random(11)
    store = InfluxStore(influx.url, influx_db)
    store.ensure_ready()
    store.write([Reading(rng.choice("ab"), T0 + i * 1_000_000, rng.uniform(-40, 60))
                 for i in range(2000)])
    after, before = T0 + 200_000_000, T0 + 1_500_000_000
    stats = store.statistics(after, before, "a")
    series = influx.query(
        'SELECT MIN("value"), MAX("value"), MEAN("value"), COUNT("value") FROM "temperature" '
        f"WHERE \"stream\" = 'a' AND time >= {after} AND time <= {before}", influx_db)
    values = series[0]["values"]
    assert isinstance(values, list)
    _, low, high, mean, count = values[0]
    assert (stats.min, stats.max, stats.mean, stats.count) == (low, high, mean, count)
    store.close()


def test_hostile_names_are_stored_verbatim_as_tag_values(
    influx: InfluxServer, influx_db: str
) -> None:
    names = ["'; DROP DATABASE tps", "a,b=c d", "back\\slash", 'q"uote', "☃"]
    store = InfluxStore(influx.url, influx_db)
    store.ensure_ready()
    store.write([Reading(name, T0 + i, 1.0) for i, name in enumerate(names)])
    series = influx.query('SHOW TAG VALUES FROM "temperature" WITH KEY = "stream"', influx_db)
    values = series[0]["values"]
    assert isinstance(values, list)
    assert sorted(row[1] for row in values) == sorted(names)
    assert influx_db in database_names(influx)
    store.close()


def test_one_connection_is_kept_alive_across_calls(influx: InfluxServer, influx_db: str) -> None:
    store = InfluxStore(influx.url, influx_db)
    store.ensure_ready()
    store.write([Reading("a", T0, 1.0)])
    first = store._conn
    for _ in range(20):
        store.current("a")
    assert store._conn is first is not None
    store.close()
    assert store._conn is None
    assert store.current("a") == Reading("a", T0, 1.0)  # reopens after close
    store.close()


# --- auth and HTTP error mapping (scripted server) ---------------------------------


class Scripted:
    """A scripted HTTP server: answers every request with the next canned response."""

    def __init__(self, answers: list[tuple[int, dict[str, object]]]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.bodies: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.answer()

            def do_POST(self) -> None:
                self.answer()

            def answer(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                outer.bodies.append(self.rfile.read(length))
                outer.requests.append((self.command, self.path, dict(self.headers)))
                status, body = outer.answers.pop(0) if outer.answers else (204, {})
                data = json.dumps(body).encode() if body else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted([])
    yield server
    server.close()


def test_a_token_is_sent_as_a_token_authorization_header(scripted: Scripted) -> None:
    store = InfluxStore(scripted.url + "/prefix/", "bucket", token="s3cret")
    store.write([Reading("a", T0, 1.0)])
    method, path, headers = scripted.requests[0]
    assert (method, path) == ("POST", "/prefix/write?db=bucket&precision=ns")
    assert headers["Authorization"] == "Token s3cret"
    store.close()


def test_username_and_password_are_sent_as_basic_auth(scripted: Scripted) -> None:
    store = InfluxStore(scripted.url, "tps", username="ann", password="pw:1")
    assert store.ping() is True
    _, path, headers = scripted.requests[0]
    assert path == "/ping"
    assert headers["Authorization"] == "Basic YW5uOnB3OjE="  # base64("ann:pw:1")
    store.close()


def test_an_influxdb_2_error_message_is_reported(scripted: Scripted) -> None:
    scripted.answers.append((401, {"code": "unauthorized", "message": "unauthorized access"}))
    store = InfluxStore(scripted.url, "tps", token="wrong")
    with pytest.raises(StoreError, match="unauthorized access"):
        store.write([Reading("a", T0, 1.0)])
    store.close()


def test_a_huge_batch_is_sent_in_several_requests(scripted: Scripted) -> None:
    store = InfluxStore(scripted.url, "tps")
    store.write([Reading("a", T0 + i, 1.0) for i in range(120_000)])
    assert [body.count(b"\n") + 1 for body in scripted.bodies] == [50_000, 50_000, 20_000]
    store.close()


def test_a_partial_write_in_one_request_still_sends_the_others(scripted: Scripted) -> None:
    partial: dict[str, object] = {"error": "partial write: points beyond retention policy "
                                           "dropped=7"}
    scripted.answers += [(400, partial), (204, {}), (400, partial)]
    store = InfluxStore(scripted.url, "tps")
    with pytest.raises(PartialWrite) as caught:
        store.write([Reading("a", T0 + i, 1.0) for i in range(120_000)])
    assert caught.value.dropped == 14
    assert len(scripted.bodies) == 3, "every request was sent"
    store.close()


def test_average_falls_back_to_client_side_without_subqueries(scripted: Scripted) -> None:
    refused: dict[str, object] = {
        "results": [{"statement_id": 0, "error": "subqueries are not supported"}]}
    newest: dict[str, object] = {"results": [{"statement_id": 0, "series": [{
        "name": "temperature", "columns": ["time", "value", "stream"],
        "values": [[T0 + 1, 4.0, "a"], [T0, 2.0, "a"]]}]}]}
    scripted.answers += [(200, refused), (200, newest), (200, newest)]
    store = InfluxStore(scripted.url, "tps")
    assert store.average(2, "a") == 3.0
    assert store.average(2, "a") == 3.0  # straight to the fallback now
    statements = [urllib.parse.parse_qs(body.decode())["q"][0] for body in scripted.bodies]
    assert ["FROM (" in q for q in statements] == [True, False, False]
    store.close()


def test_refused_credentials_are_store_error(scripted: Scripted) -> None:
    scripted.answers.append((401, {"error": "authorization failed"}))
    store = InfluxStore(scripted.url, "tps", token="wrong")
    with pytest.raises(StoreError, match=r"HTTP 401.*authorization failed") as caught:
        store.write([Reading("a", T0, 1.0)])
    assert not isinstance(caught.value, StoreUnavailable)
    store.close()


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_side_failures_are_store_unavailable(scripted: Scripted, status: int) -> None:
    scripted.answers.append((status, {"error": "overloaded"}))
    store = InfluxStore(scripted.url, "tps")
    with pytest.raises(StoreUnavailable, match=f"HTTP {status}: overloaded"):
        store.write([Reading("a", T0, 1.0)])
    store.close()


def test_ensure_ready_accepts_a_server_that_refuses_create_database(scripted: Scripted) -> None:
    # InfluxDB 2.x with a token: CREATE DATABASE is refused, the bucket exists.
    scripted.answers += [
        (200, {"results": [{"statement_id": 0, "error": "not implemented: CREATE DATABASE"}]}),
        (200, {"results": [{"statement_id": 0}]}),
    ]
    store = InfluxStore(scripted.url, "my-bucket", token="t")
    store.ensure_ready()
    assert len(scripted.requests) == 2
    store.close()


def test_ensure_ready_fails_clearly_when_the_bucket_is_missing(scripted: Scripted) -> None:
    scripted.answers += [
        (403, {"error": "insufficient permissions"}),
        (200, {"results": [{"statement_id": 0, "error": "database not found: my-bucket"}]}),
    ]
    store = InfluxStore(scripted.url, "my-bucket", token="t")
    with pytest.raises(StoreError, match=r"'my-bucket'.*could not be created.*not found"):
        store.ensure_ready()
    store.close()


# --- choosing a store ---------------------------------------------------------------


def test_open_store_uses_influxdb_when_a_url_is_set(tmp_path: Path) -> None:
    settings = Settings(influx_url="http://127.0.0.1:1", influx_db="x", influx_token="t",
                        influx_timeout=2.5, data_dir=tmp_path)
    store = open_store(settings)
    assert isinstance(store, InfluxStore)
    assert (store.url, store.db, store.timeout) == ("http://127.0.0.1:1", "x", 2.5)


def test_open_store_uses_sqlite_in_the_data_dir_otherwise(tmp_path: Path) -> None:
    store = open_store(Settings(data_dir=tmp_path / "data"))
    assert isinstance(store, SqliteStore)
    store.ensure_ready()
    assert (tmp_path / "data" / "tps.sqlite3").exists()
    store.close()


def test_a_large_measurements_answer_is_read_in_chunks_and_equals_the_whole(
    influx: InfluxServer, influx_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14: answers over CHUNK_ROWS come as chunked JSON, parsed chunk by chunk (one
    json.loads of 100,000 rows held the interpreter lock, and so the IO loop, for tens of
    ms); what they hold is the same."""
    from tps.store import influx as influx_module

    store = InfluxStore(influx.url, influx_db, timeout=30.0)
    store.ensure_ready()
    readings = [Reading("a" if i % 3 else "b", 1_700_000_000_000_000_000 + i * 1000, i / 4)
                for i in range(2_500)]
    store.write(readings)
    whole = store.measurements(None, None, limit=2_500)
    newest = store.measurements(None, None, "a", last=700, limit=2_500)
    parses: list[int] = []
    real_loads = json.loads

    def counting_loads(text: str | bytes, **kwargs: object) -> object:
        parses.append(len(text))
        return real_loads(text, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(influx_module, "CHUNK_ROWS", 1_000)
    monkeypatch.setattr(json, "loads", counting_loads)
    assert store.measurements(None, None, limit=2_500) == whole == sorted(
        readings, key=lambda r: (r.time_ns, r.stream))
    assert len(parses) == 3  # 2,500 rows in chunks of 1,000
    assert store.measurements(None, None, "a", last=700, limit=2_500) == newest
    store.close()
