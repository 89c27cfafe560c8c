"""The /graphql API against a running Tornado server and a real InfluxDB.

Readings are written to InfluxDB directly with the store and published to the live
hub as a reader would; statistics are compared with InfluxQL computed on the same
server.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.graphql_server import (
    TOKEN,
    ApiServer,
    Client,
    RecordingMetrics,
    StallingProxy,
    make_context,
)
from tests.support.influxdb import InfluxServer
from tests.support.wait import wait_until
from tps.live import LiveHub
from tps.model import Reading, datetime_to_ns
from tps.store.influx import InfluxStore

WINDOW_START = datetime(2023, 7, 28, 13, 0, tzinfo=UTC)
WINDOW_NS = datetime_to_ns(WINDOW_START)
HOUR_NS = 3_600_000_000_000

SEED_CURRENT = """
query {
  currentTemperature {
    time
    value
   }
}
"""
SEED_STATISTICS = """
query {
temperatureStatistics(after: "2023-07-28T13:00:00+00:00", before: "2023-07-28T14:00:00+00:00") {
min
max
}
}
"""
# Exactly as in the seed README, trailing spaces included.
SEED_LAST_TWO_SECONDS = (
    "query MyQuery {\n  temperatureMeasurements {  \n    time\n    value\n  }\n}\n"
)
CHALLENGE_CURRENT = "{ currentTemperature { timestamp value } }"


def _window_readings() -> list[Reading]:
    """600 readings of two streams inside the seed's window, plus some just outside."""
    readings = []
    for i in range(300):
        t = WINDOW_NS + i * 12_000_000_000
        readings.append(Reading("sat-1", t, 20.0 + (i % 37) * 0.25))
        readings.append(Reading("sat-2", t + 1, -5.0 + (i % 11) * 1.5))
    readings.append(Reading("sat-1", WINDOW_NS - 1, 999.0))
    readings.append(Reading("sat-1", WINDOW_NS + HOUR_NS + 1, -999.0))
    return readings


@pytest.fixture
def api(influx: InfluxServer, influx_db: str) -> Iterator[tuple[ApiServer, Client, InfluxStore]]:
    store = InfluxStore(influx.url, influx_db)
    store.ensure_ready()
    store.write(_window_readings())
    ctx = make_context(influx.url, influx_db, hub=LiveHub())
    server = ApiServer(ctx).start()
    client = Client(server.port)
    yield server, client, store
    client.close()
    server.stop()
    store.close()


def _data(answer: tuple[int, Any]) -> Any:
    status, body = answer
    assert status == 200, body
    assert "errors" not in body, body
    return body["data"]


def _error(answer: tuple[int, Any]) -> str:
    status, body = answer
    assert status != 500
    assert body.get("errors"), body
    return " | ".join(e["message"] for e in body["errors"])


# --- the seed's and the challenge's queries ---------------------------------------


def test_seed_current_temperature_reflects_a_reading_published_to_the_hub(api: Any) -> None:
    server, client, _ = api
    reading = Reading("sat-1", time.time_ns(), 21.5)
    server.ctx.hub.publish([reading])
    data = _data(client.post(SEED_CURRENT))
    assert data["currentTemperature"]["value"] == 21.5
    moment = datetime.fromisoformat(data["currentTemperature"]["time"])
    offset = moment.utcoffset()
    assert offset is not None and offset.total_seconds() == 0
    assert datetime_to_ns(moment) == reading.time_ns // 1000 * 1000


def test_challenge_current_temperature_has_timestamp_equal_to_time(api: Any) -> None:
    server, client, _ = api
    server.ctx.hub.publish([Reading("sat-2", time.time_ns(), -3.25)])
    data = _data(client.post(CHALLENGE_CURRENT))
    assert data["currentTemperature"]["value"] == -3.25
    both = _data(client.post("{ currentTemperature { time timestamp stream } }"))
    assert both["currentTemperature"]["time"] == both["currentTemperature"]["timestamp"]
    assert both["currentTemperature"]["stream"] == "sat-2"


def test_current_temperature_falls_back_to_the_store_when_the_hub_is_empty(api: Any) -> None:
    _, client, _ = api
    data = _data(client.post('{ currentTemperature(stream: "sat-1") { value time } }'))
    assert data["currentTemperature"]["value"] == -999.0
    status, unknown = client.post('{ currentTemperature(stream: "nope") { value } }')
    assert status == 200 and unknown["data"]["currentTemperature"] is None
    assert unknown["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def test_seed_statistics_equal_influxql_on_the_same_window(
    api: Any, influx: InfluxServer, influx_db: str
) -> None:
    _, client, _ = api
    data = _data(client.post(SEED_STATISTICS))["temperatureStatistics"]
    full = _data(client.post(
        '{ temperatureStatistics(after: "2023-07-28T13:00:00+00:00", '
        'before: "2023-07-28T14:00:00Z") { min max mean count } }'
    ))["temperatureStatistics"]
    series = influx.query(
        f'SELECT MIN("value"), MAX("value"), MEAN("value"), COUNT("value") FROM "temperature" '
        f"WHERE time >= {WINDOW_NS} AND time <= {WINDOW_NS + HOUR_NS}", influx_db)
    _, lo, hi, mean, count = series[0]["values"][0]  # type: ignore[index]
    assert (data["min"], data["max"]) == (lo, hi)
    assert full["count"] == count == 600
    assert full["mean"] == pytest.approx(mean, rel=1e-12)


def test_statistics_of_one_stream_and_of_an_open_window(
    api: Any, influx: InfluxServer, influx_db: str
) -> None:
    _, client, _ = api
    one = _data(client.post(
        '{ temperatureStatistics(stream: "sat-2") { min max mean count } }'
    ))["temperatureStatistics"]
    series = influx.query(
        """SELECT MIN("value"), MAX("value"), MEAN("value"), COUNT("value") FROM "temperature" """
        """WHERE "stream" = 'sat-2'""", influx_db)
    _, lo, hi, mean, count = series[0]["values"][0]  # type: ignore[index]
    assert (one["min"], one["max"], one["count"]) == (lo, hi, count)
    assert one["mean"] == pytest.approx(mean)
    after_only = _data(client.post(
        '{ temperatureStatistics(after: "2023-07-28T14:00:00") { count max } }'
    ))["temperatureStatistics"]
    assert after_only == {"count": 1, "max": -999.0}  # naive time is UTC


def test_statistics_of_an_empty_window_are_count_zero_and_null(api: Any) -> None:
    _, client, _ = api
    data = _data(client.post(
        '{ temperatureStatistics(after: "2001-01-01T00:00:00Z", before: "2001-01-02T00:00:00Z")'
        " { min max mean count } }"
    ))
    assert data["temperatureStatistics"] == {"min": None, "max": None, "mean": None, "count": 0}


def test_seed_last_two_seconds_returns_only_recent_readings(api: Any) -> None:
    _, client, store = api
    now = time.time_ns()
    store.write([Reading("sat-1", now - 500_000_000, 1.0), Reading("sat-2", now - 300_000_000, 2.0),
                 Reading("sat-1", now - 6_000_000_000, 3.0)])
    rows = _data(client.post(SEED_LAST_TWO_SECONDS))["temperatureMeasurements"]
    assert [r["value"] for r in rows] == [1.0, 2.0]
    assert all(r["time"].endswith("+00:00") for r in rows)


def test_measurements_window_last_and_limit(api: Any) -> None:
    _, client, _ = api
    window = 'after: "2023-07-28T13:00:00Z", before: "2023-07-28T14:00:00Z", stream: "sat-1"'
    rows = _data(client.post(f"{{ temperatureMeasurements({window}) {{ value stream }} }}"))
    assert len(rows["temperatureMeasurements"]) == 300
    last = _data(client.post(f"{{ temperatureMeasurements({window}, last: 3) {{ time value }} }}"))
    values = [r["value"] for r in last["temperatureMeasurements"]]
    assert values == [20.0 + (i % 37) * 0.25 for i in (297, 298, 299)]
    limited = _data(client.post(f"{{ temperatureMeasurements({window}, limit: 2) {{ value }} }}"))
    assert [r["value"] for r in limited["temperatureMeasurements"]] == [20.0, 20.25]


def test_average_temperature_is_the_mean_of_the_newest_readings(api: Any) -> None:
    server, client, _ = api
    hub = server.ctx.hub
    base = time.time_ns()
    hub.publish([Reading("live", base + i, float(i)) for i in range(30)])
    data = _data(client.post('{ averageTemperature(windowSize: 20, stream: "live") { value '
                             "windowSize count stream } }"))
    assert data["averageTemperature"] == {"value": sum(range(10, 30)) / 20, "windowSize": 20,
                                          "count": 20, "stream": "live"}
    stored = _data(client.post('{ averageTemperature(windowSize: 2, stream: "sat-1") { value } }'))
    assert stored["averageTemperature"]["value"] == pytest.approx(
        ((-999.0) + 20.0 + (299 % 37) * 0.25) / 2)


def test_streams_in_the_api_role_come_from_the_store_with_null_state(api: Any) -> None:
    _, client, _ = api
    data = _data(client.post("{ streams { name state received } }"))
    assert data["streams"] == [{"name": "sat-1", "state": None, "received": None},
                               {"name": "sat-2", "state": None, "received": None}]


def test_every_operation_latency_is_recorded(api: Any) -> None:
    server, client, _ = api
    _data(client.post(SEED_STATISTICS))
    metrics = server.ctx.metrics
    assert isinstance(metrics, RecordingMetrics)
    assert any(label == "query.temperatureStatistics" for label, _ in metrics.observed)


def test_get_query_works_and_repeated_documents_hit_the_cache(api: Any) -> None:
    server, client, _ = api
    from urllib.parse import quote

    path = "/graphql?query=" + quote(CHALLENGE_CURRENT)
    server.ctx.hub.publish([Reading("sat-1", time.time_ns(), 5.0)])
    cache = server.call(lambda: server.ctx.on_close[-1].__self__.cache)  # the service's cache
    before = cache.hits
    for _ in range(3):
        status, body = client.request("GET", path)
        assert status == 200 and body["data"]["currentTemperature"]["value"] == 5.0
    assert cache.hits >= before + 2


# --- malformed requests and bad arguments -------------------------------------------


def test_malformed_http_requests_get_400_with_a_json_error(api: Any) -> None:
    _, client, _ = api
    headers = {"Content-Type": "application/json"}
    cases = [
        (b"{not json", headers, "JSON"),
        (b"[1, 2]", headers, "object"),
        (json.dumps({"variables": {}}).encode(), headers, "query"),
        (json.dumps({"query": "{ streams { name } }", "variables": [1]}).encode(), headers,
         "variables"),
        (json.dumps({"query": "{ streams { name } }"}).encode(), {"Content-Type": "text/plain"},
         "Content-Type"),
    ]
    for body, hdrs, word in cases:
        status, answer = client.request("POST", "/graphql", body, hdrs)
        assert status == 400, (body, answer)
        assert word in answer["errors"][0]["message"]
    status, answer = client.request("GET", "/graphql")
    assert status == 400 and "query" in answer["errors"][0]["message"]


def test_requests_from_a_browser_origin_are_answered_without_cors_grants(api: Any) -> None:
    _, client, _ = api
    body = json.dumps({"query": "{ streams { name } }"}).encode()
    status, answer = client.request("POST", "/graphql", body, {
        "Content-Type": "application/json", "Origin": "http://elsewhere.example"})
    assert status == 200 and "errors" not in answer


def test_browser_get_without_query_serves_html(api: Any) -> None:
    _, client, _ = api
    status, body = client.request("GET", "/graphql", headers={"Accept": "text/html"})
    assert status == 200 and "<" in body


def test_mutations_need_post_and_the_control_token(api: Any) -> None:
    _, client, _ = api
    mutation = 'mutation { toggleFeed(input: {status: "on"}) { status } }'
    from urllib.parse import quote

    status, body = client.request("GET", "/graphql?query=" + quote(mutation))
    assert status == 405 and "POST" in body["errors"][0]["message"]
    status, body = client.post(mutation)
    assert status == 200 and "unauthorized" in body["errors"][0]["message"]
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    status, body = client.post(mutation, token="wrong")
    assert status == 200 and body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    # The right token, but this process runs no readers (api role): a clear error.
    message = _error(client.post(mutation, token=TOKEN))
    assert "role api" in message


@pytest.mark.parametrize(
    ("query", "argument"),
    [
        ('{ temperatureMeasurements(limit: 0) { value } }', "limit"),
        ('{ temperatureMeasurements(limit: 100001) { value } }', "limit"),
        ('{ temperatureMeasurements(last: 0) { value } }', "last"),
        ('{ averageTemperature(windowSize: 0) { value } }', "windowSize"),
        ('{ averageTemperature(windowSize: 100001) { value } }', "windowSize"),
        ('{ temperatureStatistics(after: "2023-07-28T14:00:00Z", '
         'before: "2023-07-28T13:00:00Z") { count } }', "after"),
        ('{ temperatureMeasurements(after: "2023-07-28T14:00:00Z", '
         'before: "2023-07-28T13:00:00Z") { value } }', "after"),
        ("{ streams { name " + "".join("... on Stream { " for _ in range(1)) + "name } } }",
         None),
        ('{ __type(name: "Query") { fields { type ' + "{ ofType " * 15 + "{ name }"
         + " }" * 15 + " } } }", "depth"),
        ("{ streams { name } " + "#" * 200_000 + "}", "query"),
        ('{ currentTemperature(stream: "a b") { value } }', "stream"),
        ('{ temperatureStatistics(before: "28/07/2023") { count } }', "before"),
        ('{ temperatureMeasurements(limit: 99999999999) { value } }', "limit"),
        ('mutation { toggleFeed(input: {status: "maybe"}) { status } }', "status"),
    ],
)
def test_every_bad_argument_gets_an_error_naming_it_and_never_500(
    api: Any, query: str, argument: str | None
) -> None:
    _, client, _ = api
    answer = client.post(query, token=TOKEN)
    if argument is None:  # a valid control case in the middle of the list
        assert answer[0] == 200
        return
    message = _error(answer)
    assert argument in message


HOSTILE = [
    "'; DROP DATABASE tps", "sat\"1", "sat\\", "a' OR 1=1 --", "/.*/", "sat-1|.*",
    "température", "😀", "x" * 65, "", "sat-1\n", "sat-1' ; DELETE FROM temperature; '",
]


def test_hostile_stream_names_are_refused_and_the_database_is_intact(
    api: Any, influx: InfluxServer, influx_db: str
) -> None:
    _, client, _ = api
    before = influx.count(influx_db)
    queries = [
        "query($s: String) { currentTemperature(stream: $s) { value } }",
        "query($s: String) { temperatureStatistics(stream: $s) { count } }",
        "query($s: String) { temperatureMeasurements(stream: $s, last: 5) { value } }",
        "query($s: String) { averageTemperature(windowSize: 5, stream: $s) { value } }",
    ]
    for name in HOSTILE:
        for query in queries:
            message = _error(client.post(query, {"s": name}))
            assert "stream" in message
        literal = json.dumps(name)
        message = _error(client.post(f"{{ temperatureStatistics(stream: {literal}) {{ count }} }}"))
        assert "stream" in message
    assert influx.count(influx_db) == before == 602
    databases = influx.query("SHOW DATABASES")
    assert [influx_db] in databases[0]["values"]  # type: ignore[operator]


# --- the store misbehaving --------------------------------------------------------------


def test_a_query_stuck_in_a_stalled_connection_delays_no_other_request(
    influx: InfluxServer, influx_db: str
) -> None:
    store = InfluxStore(influx.url, influx_db)
    store.ensure_ready()
    store.write(_window_readings())
    proxy = StallingProxy(influx.http_port)
    ctx = make_context(proxy.url, influx_db, hub=None, pool_size=4, pool_timeout=3.0)
    server = ApiServer(ctx).start()
    stuck_answer: list[Any] = []
    try:
        warm = Client(server.port)
        for _ in range(8):  # open each actor's connection before stalling one
            _data(warm.post(SEED_STATISTICS))
        # The stuck query's window starts at 2001-01-01: that number marks its request.
        proxy.stall_on = str(datetime_to_ns(datetime(2001, 1, 1, tzinfo=UTC))).encode()

        def stuck() -> None:
            c = Client(server.port)
            stuck_answer.append(c.post(
                '{ temperatureStatistics(after: "2001-01-01T00:00:00Z") { count } }'))
            c.close()

        thread = threading.Thread(target=stuck, daemon=True)
        thread.start()
        assert proxy.stalled.wait(5), "the marked query never reached the proxy"
        slowest = 0.0
        took = []
        for i in range(50):
            query = SEED_STATISTICS if i % 2 else (
                '{ temperatureMeasurements(stream: "sat-2", last: 5) { value } }')
            started = time.perf_counter()
            _data(warm.post(query))
            took.append(round((time.perf_counter() - started) * 1000, 1))
            slowest = max(slowest, time.perf_counter() - started)
        assert slowest < 0.05, f"slowest request took {slowest * 1000:.1f} ms: {took}"
        assert not stuck_answer, "the stalled query should still be waiting"
        # A hung query does not hang forever: the pool's timeout answers it.
        thread.join(10)
        assert "store unavailable" in _error(stuck_answer[0])
        warm.close()
    finally:
        proxy.release()
        server.stop()
        proxy.close()
        store.close()


def test_store_unavailable_is_an_error_and_the_service_recovers(
    influx: InfluxServer, influx_db: str
) -> None:
    store = InfluxStore(influx.url, influx_db)
    store.ensure_ready()
    store.write(_window_readings())
    dead = StallingProxy(influx.http_port)
    port = dead.port
    dead.close()  # nothing listens on this port now
    ctx = make_context(f"http://127.0.0.1:{port}", influx_db, hub=None, pool_size=2)
    server = ApiServer(ctx).start()
    client = Client(server.port)
    proxy: StallingProxy | None = None
    try:
        message = _error(client.post(SEED_STATISTICS))
        assert "store unavailable" in message
        assert _error(client.post(SEED_CURRENT))
        proxy = StallingProxy(influx.http_port, port=port)  # InfluxDB is back
        wait_until(lambda: client.post(SEED_STATISTICS)[1].get("data") is not None, 5,
                   what="statistics once InfluxDB is back")
        assert _data(client.post(SEED_STATISTICS))["temperatureStatistics"]["max"] is not None
    finally:
        client.close()
        server.stop()
        if proxy is not None:
            proxy.close()
        store.close()
