"""The REST control plane, /health, /ready and /metrics against a real stack.

The stack is the real Supervisor with real StreamReaders on the project's simulator,
the real batching writer and query pool on a real InfluxDB, served by a real Tornado
server on a bound loopback socket. Requests go over HTTP with urllib.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pykka
import pytest
import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.web
from prometheus_client.parser import text_string_to_metric_families

from tests.support.influxdb import InfluxServer
from tests.support.service import SimulatorProcess
from tests.support.wait import wait_until
from tps.actors.alarms import AlarmParts
from tps.actors.board import StatsBoard
from tps.actors.query import QueryPool
from tps.actors.reader import StreamReader
from tps.actors.stats import WriterStats
from tps.actors.supervisor import Supervisor, supervisor_proxy
from tps.actors.writer import WriterHandle
from tps.api import alarms as alarms_api
from tps.api import health, metrics, openapi, rest
from tps.api.alarms import AlarmsApi
from tps.api.context import ApiContext, TokenAuth
from tps.api.metrics import Metrics
from tps.config.registry import StreamRegistry
from tps.config.settings import Settings
from tps.live import LiveHub
from tps.model import Reading
from tps.store import open_store

TOKEN = "s3cret-token-for-tests-0123456789"
WRONG = "x" * len(TOKEN)
ALLOWED_ORIGIN = "http://dashboard.example"


# --- a Tornado server on its own thread -----------------------------------------------


class ApiServer:
    """The control-plane routes served on 127.0.0.1 (free port) from a private thread."""

    def __init__(self, ctx: ApiContext, graphql: bool = False) -> None:
        self.ctx = ctx
        self.graphql = graphql
        self._loop: tornado.ioloop.IOLoop | None = None
        self._ready = threading.Event()
        self._sockets = tornado.netutil.bind_sockets(0, address="127.0.0.1")
        self.port = int(self._sockets[0].getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._run, name="test-http", daemon=True)

    def start(self) -> ApiServer:
        self._thread.start()
        assert self._ready.wait(10), "test HTTP server did not start"
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        self._loop = tornado.ioloop.IOLoop.current()
        routes: list[Any] = []
        for module in (health, metrics, rest, openapi):
            routes += module.routes(self.ctx)
        if self.ctx.alarms is not None:
            routes += alarms_api.routes(self.ctx, self.ctx.alarms)
        if self.graphql:
            from tps.api.graphql import handler

            routes += handler.routes(self.ctx)
        server = tornado.httpserver.HTTPServer(tornado.web.Application(routes))
        server.add_sockets(self._sockets)
        self._loop.add_callback(self._ready.set)
        try:
            self._loop.start()
        finally:
            server.stop()
            self._loop.close(all_fds=False)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.add_callback(self._loop.stop)
        self._thread.join(10)
        for close in self.ctx.on_close:
            close()
        self.ctx.waiter.close()


@dataclass
class Answer:
    status: int
    headers: Any
    body: Any


def call(method: str, url: str, body: Any = None, token: str | None = None,
         headers: dict[str, str] | None = None, raw: bytes | None = None) -> Answer:
    hdrs = dict(headers or {})
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    if data is None and method == "POST":
        data = b""
    request = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            status, got, text = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        status, got, text = exc.code, exc.headers, exc.read()
    ctype = got.get("Content-Type", "")
    parsed = json.loads(text) if text and "json" in ctype else text.decode()
    return Answer(status, got, parsed)


def readers_of(stack: Stack, name: str) -> list[pykka.ActorRef[Any]]:
    """The live reader actors of stream ``name``."""
    return [ref for ref in pykka.ActorRegistry.get_by_class(StreamReader)
            if ref.proxy().feed.get(timeout=5).name == name]


# --- the real stack -----------------------------------------------------------------


class Stack:
    """Supervisor + readers + writer + query pool on real InfluxDB, behind ApiServer."""

    def __init__(self, data_dir: Path, influx: InfluxServer, db: str, feeds: Any = (),
                 graphql: bool = False) -> None:
        self.influx, self.db, self.data_dir = influx, db, data_dir
        self.settings = Settings(
            feeds=tuple(feeds), influx_url=influx.url, influx_db=db, influx_timeout=2.0,
            data_dir=data_dir, flush_interval=0.2, feed_allow=("127.0.0.1", "localhost"),
            cors_origins=(ALLOWED_ORIGIN,), control_token=TOKEN, query_pool_size=2,
            shutdown_timeout=5.0,
        )

        def store() -> Any:
            return open_store(self.settings)

        self.writer_stats = WriterStats()
        self.writer = WriterHandle(self.settings, store, self.writer_stats)
        self.queries = QueryPool(store, 2, timeout=5.0)
        self.hub = LiveHub()
        self.board = StatsBoard(self.writer_stats)
        self.registry_path = data_dir / "streams.json"

        self.alarms = AlarmParts.start(self.settings)

        def sink(readings: Sequence[Reading]) -> None:
            self.writer.submit(readings)
            self.alarms.check(readings)
            self.hub.publish(readings)

        self.ref = Supervisor.start(
            self.settings, sink=sink, writer=self.writer, queries=self.queries,
            registry=StreamRegistry(self.registry_path), hub=self.hub, board=self.board,
            alarms=self.alarms.keeper,
        )
        self.metrics = Metrics.from_board(self.board)
        self.ctx = ApiContext(
            settings=self.settings, auth=TokenAuth(TOKEN), queries=self.queries,
            metrics=self.metrics, supervisor=supervisor_proxy(self.ref), board=self.board,
            hub=self.hub, alarm_hub=self.alarms.hub,
        )
        self.ctx.alarms = AlarmsApi(self.ctx, board=self.alarms.board,
                                    keeper=self.alarms.keeper, health=self.alarms.health)
        self.server = ApiServer(self.ctx, graphql).start()
        self.url = self.server.url

    def close(self) -> None:
        self.server.stop()
        if self.ref.is_alive():
            self.ref.proxy().shutdown(5.0).get(timeout=20)
            self.ref.stop(timeout=10)
        self.alarms.stop()

    def stored(self, stream: str) -> int:
        return self.influx.count(self.db, stream)

    def registry_names(self) -> list[str]:
        return [s["name"] for s in json.loads(self.registry_path.read_text())["streams"]]


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(tmp_path_factory.mktemp("sim"), interval=0.05).start()
    yield sim
    sim.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, influx: InfluxServer,
          simulator: SimulatorProcess) -> Iterator[Stack]:
    db = f"tps_rest_{os.getpid()}"
    s = Stack(tmp_path_factory.mktemp("rest-data"), influx, db)
    yield s
    s.close()
    influx.drop_database(db)


# --- acceptance -----------------------------------------------------------------------


def test_a_stream_added_over_rest_is_ingested_and_stop_start_delete_work(
    stack: Stack, simulator: SimulatorProcess
) -> None:
    added = call("POST", stack.url + "/api/streams",
                 {"name": "rest-a", "url": simulator.url("rest-a")}, token=TOKEN)
    assert added.status == 201, added.body
    assert added.headers["Location"] == "/api/streams/rest-a"
    assert added.body["name"] == "rest-a"
    t0 = time.monotonic()

    def state() -> str:
        return str(call("GET", stack.url + "/api/streams/rest-a").body["state"])

    wait_until(lambda: state() == "subscribed", 3.0, "subscribed within 3 s", step=0.05)
    wait_until(lambda: stack.stored("rest-a") > 0, 3.0 - (time.monotonic() - t0) + 0.5,
               "readings in InfluxDB within 3 s", step=0.05)
    assert "rest-a" in stack.registry_names()

    stats = next(s for s in stack.board.streams() if s.name == "rest-a")
    stopped = call("POST", stack.url + "/api/streams/rest-a/stop", token=TOKEN)
    assert stopped.status == 200 and stopped.body["state"] == "stopped"
    # The answer came once the reader had stopped: nothing can deliver any more.
    assert readers_of(stack, "rest-a") == [], "a reader still runs after the stop"
    assert stack.writer.flush(5.0)
    frozen = stack.stored("rest-a")
    assert frozen == stats.received, "no new points while stopped"
    assert json.loads(stack.registry_path.read_text())["streams"][0]["running"] is False

    started = call("POST", stack.url + "/api/streams/rest-a/start", token=TOKEN)
    assert started.status == 200
    wait_until(lambda: stack.stored("rest-a") > frozen, 5.0, "points resume after start",
               step=0.05)

    gone = call("DELETE", stack.url + "/api/streams/rest-a", token=TOKEN)
    assert gone.status == 204 and gone.body == ""
    assert stack.stored("rest-a") == stats.received, "DELETE flushed what the reader read"
    assert call("GET", stack.url + "/api/streams/rest-a").status == 404
    names = [s["name"] for s in call("GET", stack.url + "/api/streams").body["streams"]]
    assert "rest-a" not in names
    assert "rest-a" not in stack.registry_names()


def test_mutating_calls_without_the_right_token_get_401_and_change_nothing(
    stack: Stack, simulator: SimulatorProcess
) -> None:
    assert call("POST", stack.url + "/api/streams",
                {"name": "guarded", "url": simulator.url("guarded"), "started": False},
                token=TOKEN).status == 201
    before_list = call("GET", stack.url + "/api/streams").body
    before_file = stack.registry_path.read_bytes()
    attempts: list[tuple[str, str, Any]] = [
        ("POST", "/api/streams", {"name": "intruder", "url": simulator.url()}),
        ("DELETE", "/api/streams/guarded", None),
        ("POST", "/api/streams/guarded/start", None),
        ("POST", "/api/streams/guarded/stop", None),
    ]
    for method, path, body in attempts:
        for headers in ({}, {"Authorization": f"Bearer {WRONG}"},
                        {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}):
            answer = call(method, stack.url + path, body, headers=headers)
            assert answer.status == 401, (method, path, headers, answer.body)
            assert answer.body["error"]["code"] == "unauthorized"
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert call("GET", stack.url + "/api/streams").body == before_list
    assert stack.registry_path.read_bytes() == before_file
    assert call("DELETE", stack.url + "/api/streams/guarded", token=TOKEN).status == 204


@pytest.mark.parametrize(
    ("request_args", "status", "code", "field"),
    [
        ({"raw": b"{not json", "headers": {"Content-Type": "application/json"}}, 400,
         "bad_request", None),
        ({"raw": b"[1, 2]", "headers": {"Content-Type": "application/json"}}, 400,
         "bad_request", None),
        ({"raw": b'{"name": "x"}', "headers": {"Content-Type": "text/plain"}}, 415,
         "unsupported_media_type", None),
        ({"raw": b'{"name": "x"}'}, 415, "unsupported_media_type", None),
        ({"body": {"url": "ws://127.0.0.1:1/"}}, 422, "invalid_field", "name"),
        ({"body": {"name": "bad name", "url": "ws://127.0.0.1:1/"}}, 422, "invalid_field",
         "name"),
        ({"body": {"name": "ok", "url": "http://127.0.0.1:1/"}}, 422, "invalid_field", "url"),
        ({"body": {"name": "ok", "url": "ws://10.1.2.3/"}}, 422, "invalid_field", "url"),
        ({"body": {"name": "ok", "url": "ws://127.0.0.1/", "protocol": "x"}}, 422,
         "invalid_field", "protocol"),
        ({"body": {"name": "ok", "url": "ws://127.0.0.1/", "started": "yes"}}, 422,
         "invalid_field", "started"),
        ({"body": {"name": "ok", "url": "ws://127.0.0.1/", "colour": "red"}}, 422,
         "invalid_field", "colour"),
        ({"body": {"name": "ok", "url": 7}}, 422, "invalid_field", "url"),
    ],
)
def test_bad_requests_get_a_specific_error_in_the_one_json_shape(
    stack: Stack, request_args: dict[str, Any], status: int, code: str, field: str | None
) -> None:
    answer = call("POST", stack.url + "/api/streams", token=TOKEN, **request_args)
    assert answer.status == status, answer.body
    assert set(answer.body) == {"error"}
    assert answer.body["error"]["code"] == code
    assert answer.body["error"]["message"]
    assert answer.body["error"].get("field") == field


def test_unknown_stream_is_404_and_a_taken_name_is_409(stack: Stack) -> None:
    for method, path in (("GET", "/api/streams/nope"), ("DELETE", "/api/streams/nope"),
                         ("POST", "/api/streams/nope/stop")):
        answer = call(method, stack.url + path, token=TOKEN)
        assert answer.status == 404 and answer.body["error"]["code"] == "not_found"
    body = {"name": "twice", "url": "ws://127.0.0.1:1/", "started": False}
    assert call("POST", stack.url + "/api/streams", body, token=TOKEN).status == 201
    again = call("POST", stack.url + "/api/streams", body, token=TOKEN)
    assert again.status == 409 and again.body["error"]["code"] == "conflict"
    assert call("DELETE", stack.url + "/api/streams/twice", token=TOKEN).status == 204


def test_cors_headers_only_for_allowed_origins(stack: Stack) -> None:
    allowed = call("GET", stack.url + "/api/streams", headers={"Origin": ALLOWED_ORIGIN})
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    foreign = call("GET", stack.url + "/api/streams", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in foreign.headers
    preflight = call("OPTIONS", stack.url + "/api/streams", headers={
        "Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST"})
    assert preflight.status == 204
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    refused = call("OPTIONS", stack.url + "/api/streams", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Methods" not in refused.headers
    forged = call("POST", stack.url + "/api/streams", {"name": "f", "url": "ws://127.0.0.1/"},
                  token=TOKEN, headers={"Origin": "http://evil.example"})
    assert forged.status == 403 and forged.body["error"]["code"] == "forbidden"


def test_health_summarises_actors_streams_writer_and_store(stack: Stack) -> None:
    answer = call("GET", stack.url + "/health")
    assert answer.status == 200
    body = answer.body
    assert body["status"] == "ok", body
    assert body["store"]["reachable"] is True
    assert body["supervisor"]["alive"] is True
    assert body["supervisor"]["actors"]["writer"]["alive"] is True
    assert body["supervisor"]["actors"]["queries"]["alive"] is True
    assert {"buffered", "oldest_unwritten_age_s", "spool"} <= set(body["writer"])
    assert call("GET", stack.url + "/ready").status == 200


def test_metrics_parse_and_match_what_influxdb_holds(
    stack: Stack, simulator: SimulatorProcess
) -> None:
    assert call("POST", stack.url + "/api/streams",
                {"name": "counted", "url": simulator.url("counted")}, token=TOKEN).status == 201
    wait_until(lambda: stack.stored("counted") >= 10, 10.0, "some readings stored", step=0.05)
    assert call("POST", stack.url + "/api/streams/counted/stop", token=TOKEN).status == 200
    assert stack.writer.flush(5.0)
    stack.metrics.observe_query("temperatureStatistics", 0.003)
    text = call("GET", stack.url + "/metrics").body
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    received = samples[("tps_readings_received_total", (("stream", "counted"),))]
    assert received == stack.stored("counted")
    total_stored = stack.influx.count(stack.db)
    assert samples[("tps_points_written_total", ())] >= total_stored
    assert samples[("tps_stream_state", (("state", "stopped"), ("stream", "counted")))] == 1
    assert samples[("tps_query_duration_seconds_count",
                    (("operation", "temperatureStatistics"),))] == 1
    for name in ("tps_write_failures_total", "tps_write_retries_total",
                 "tps_writer_buffered_readings", "tps_readings_dropped_total",
                 "tps_spool_bytes", "tps_spool_segments"):
        assert (name, ()) in samples, name
    assert call("DELETE", stack.url + "/api/streams/counted", token=TOKEN).status == 204


def test_ready_turns_503_within_5_s_of_influxdb_stopping_and_200_after_it_returns(
    stack: Stack, influx: InfluxServer
) -> None:
    assert call("GET", stack.url + "/ready").status == 200
    influx.stop()
    try:
        wait_until(lambda: call("GET", stack.url + "/ready").status == 503, 5.0,
                   "/ready 503 within 5 s", step=0.05)
        answer = call("GET", stack.url + "/ready")
        assert answer.body["ready"] is False
        assert "store unreachable" in answer.body["reasons"][0]
        assert call("GET", stack.url + "/health").body["status"] == "degraded"
    finally:
        influx.start()
    wait_until(lambda: call("GET", stack.url + "/ready").status == 200, 10.0, "/ready 200 again",
               step=0.05)


def test_api_role_without_a_supervisor_answers_503_with_a_clear_message(
    stack: Stack,
) -> None:
    ctx = replace(stack.ctx, supervisor=None, settings=replace(stack.settings, role="api"),
                  waiter=type(stack.ctx.waiter)())
    server = ApiServer(ctx).start()
    try:
        listing = call("GET", server.url + "/api/streams")
        assert listing.status == 503 and "role=api" in listing.body["error"]["message"]
        adding = call("POST", server.url + "/api/streams",
                      {"name": "x", "url": "ws://127.0.0.1/"}, token=TOKEN)
        assert adding.status == 503
        assert call("GET", server.url + "/ready").status == 200
    finally:
        server.stop()


def test_rest_calls_stay_fast_while_a_reader_is_in_backoff(stack: Stack) -> None:
    # A feed that refuses connections keeps its reader reconnecting; the API must
    # not wait on it.
    assert call("POST", stack.url + "/api/streams",
                {"name": "dead-end", "url": "ws://127.0.0.1:9/"}, token=TOKEN).status == 201
    stats = next(s for s in stack.board.streams() if s.name == "dead-end")
    # From the third failure on, the reader waits 1.6 s or more before it retries.
    wait_until(lambda: stats.reconnects >= 3, 10.0, "the reader backing off", step=0.01)
    reconnects = stats.reconnects
    for _ in range(5):
        assert call("GET", stack.url + "/api/streams").status == 200
    assert stats.reconnects == reconnects, "the answers waited for a reconnect attempt"
    assert call("DELETE", stack.url + "/api/streams/dead-end", token=TOKEN).status == 204
    assert pykka.ActorRegistry.get_by_class_name("Supervisor")


def test_an_injected_reader_failure_is_restarted_and_other_streams_never_pause(
    stack: Stack, simulator: SimulatorProcess
) -> None:
    for name in ("victim", "bystander"):
        assert call("POST", stack.url + "/api/streams",
                    {"name": name, "url": simulator.url(name)}, token=TOKEN).status == 201
    stats = {s.name: s for s in stack.board.streams()}
    wait_until(lambda: stats["victim"].received > 0 and stats["bystander"].received > 0, 5.0,
               "both streams receive", step=0.05)
    proxy = stack.ref.proxy()
    proxy.inject_failure("victim").get(timeout=5)
    last_count, last_change, longest_pause = -1, time.monotonic(), 0.0
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        now, count = time.monotonic(), stats["bystander"].received
        if count != last_count:
            last_count, last_change = count, now
        longest_pause = max(longest_pause, now - last_change)
        time.sleep(0.02)
    assert longest_pause < 1.0, f"the other stream paused for {longest_pause:.2f} s"
    assert stats["bystander"].restarts == 0
    wait_until(lambda: stats["victim"].restarts == 1 and stats["victim"].state == "subscribed",
               5.0, "victim restarted and subscribed", step=0.05)
    before = stats["victim"].received
    wait_until(lambda: stats["victim"].received > before, 3.0, "victim receives again",
               step=0.05)
    assert stack.board.supervisor().restarts == {"reader:victim": 1}
    for name in ("victim", "bystander"):
        assert call("DELETE", f"{stack.url}/api/streams/{name}", token=TOKEN).status == 204


def test_runtime_stream_changes_survive_a_restart_of_the_stack(
    tmp_path: Path, influx: InfluxServer, influx_db: str, simulator: SimulatorProcess
) -> None:
    first = Stack(tmp_path, influx, influx_db)
    try:
        for name, started in (("kept-running", True), ("kept-stopped", False)):
            assert call("POST", first.url + "/api/streams",
                        {"name": name, "url": simulator.url(name), "started": started},
                        token=TOKEN).status == 201
    finally:
        first.close()

    second = Stack(tmp_path, influx, influx_db)
    try:
        streams = {s["name"]: s for s in call("GET", second.url + "/api/streams").body["streams"]}
        assert set(streams) == {"kept-running", "kept-stopped"}
        assert streams["kept-stopped"]["state"] == "stopped"
        wait_until(lambda: second.board.streams()[0].received > 0, 5.0, "ingest resumes",
                   step=0.05)
        assert second.board.streams()[1].received == 0
    finally:
        second.close()


def test_ingest_role_without_a_query_pool_judges_the_store_by_the_writer(stack: Stack) -> None:
    ctx = replace(stack.ctx, queries=None, settings=replace(stack.settings, role="ingest"),
                  waiter=type(stack.ctx.waiter)())
    server = ApiServer(ctx).start()
    try:
        assert call("GET", server.url + "/ready").status == 200
        body = call("GET", server.url + "/health").body
        assert body["store"] == {"reachable": True, "error": None}
        assert body["writer"]["store_reachable"] is True
    finally:
        server.stop()
