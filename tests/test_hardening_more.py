"""Issue 14, second round: attacks found after the table's rows were fixed.

Like ``tests/test_hardening.py``: each attack runs against a real ``tps serve`` on
loopback while :class:`~tests.support.attack.ReadyWatch` polls ``/ready`` from a process
of its own, and nothing stored may be lost. The plain parts are tested directly.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest
import websocket
from graphql import OperationDefinitionNode, get_introspection_query, parse

from tests.support.attack import NothingLost, ReadyWatch, request, streams
from tests.support.service import SimulatorProcess, TpsProcess
from tests.support.wait import wait_until
from tps.actors.alarms import AlarmHub, senders_health
from tps.alarms.alertmanager import WebhookSender
from tps.alarms.model import AlarmEvent
from tps.alarms.query import MAX_ALARMS
from tps.api.graphql.budget import Budget, check_budget, request_cost
from tps.api.graphql.cache import MAX_DOCUMENT_ELEMENTS, DocumentCache, count_elements
from tps.api.graphql.fanout import MEMBERS_PER_STEP, AlarmFanout
from tps.api.graphql.paging import MAX_CURSOR_CHARS, Cursor
from tps.api.graphql.schema import build_schema
from tps.api.graphql.subscription_spec import subscription_spec
from tps.errors import InvalidArgument, RequestTooLarge
from tps.store.alarm_log import MAX_EVENTS

TOKEN = "hardening-more-token-0123456789"
SCHEMA = build_schema().graphql_schema


@pytest.fixture(scope="module")
def tps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TpsProcess]:
    """A TPS feeding stream ``base`` from a simulator, with an unreachable webhook whose
    URL carries credentials."""
    tmp = tmp_path_factory.mktemp("more")
    sim = SimulatorProcess(tmp, interval=0.05).start()
    process = TpsProcess(tmp, {
        "TPS_FEEDS": f"base={sim.url('base')}",
        "TPS_FLUSH_INTERVAL": "0.2",
        "TPS_CONTROL_TOKEN": TOKEN,
        "TPS_LIMITS": json.dumps({"base": {"yellowHigh": -1000, "redHigh": 1000}}),
        "TPS_ALARM_WEBHOOK_URL": "http://hook-user:hook-secret@127.0.0.1:9/x?key=hook-key",
    }, "more").start()
    yield process
    process.close()
    sim.close()


@contextlib.contextmanager
def watched(tps: TpsProcess) -> Iterator[ReadyWatch]:
    """Nothing of ``base`` lost around the block, and /ready healthy throughout it."""
    lost = NothingLost(tps, "base").before()
    with ReadyWatch(tps.url) as watch:
        yield watch
    watch.assert_healthy()
    lost.check()


def _repeated(fields: int, tag: int) -> str:
    """One field repeated ``fields`` times: graphql-core's overlapping-fields rule
    compares them pair by pair. ``tag`` makes each document new to the cache."""
    return "{ currentTemperature { " + "value " * fields + f"}} }} # {tag}"


# --- validation cost ---------------------------------------------------------------------


def test_documents_with_too_many_elements_are_refused_before_validation() -> None:
    """2,000 repetitions of one field (12 KB) took 1.4 s of validation on the IO loop."""
    cache = DocumentCache(SCHEMA)
    parsed = cache.build(_repeated(2_000, 0))
    assert parsed.document is None
    error = parsed.errors[0]
    assert error.extensions == {"code": "BAD_REQUEST", "limit": MAX_DOCUMENT_ELEMENTS}
    assert cache.build(_repeated(MAX_DOCUMENT_ELEMENTS - 1, 0)).errors == ()
    introspection = parse(get_introspection_query(descriptions=True))
    assert count_elements(introspection.definitions, MAX_DOCUMENT_ELEMENTS) < 200


def test_new_long_documents_are_validated_off_the_io_loop(tps: TpsProcess) -> None:
    """New documents just under the element limit, two at a time for a few seconds
    (each about 0.3 s of validation), over HTTP and over a WebSocket: /ready stays
    prompt, and every document is answered."""
    def post(tag: int) -> tuple[int, Any]:
        return request(tps, "POST", "/graphql", {"query": _repeated(495, tag)}, timeout=60)

    ws = websocket.create_connection(tps.url.replace("http", "ws") + "/graphql",
                                     subprotocols=["graphql-transport-ws"], timeout=60)
    try:
        ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.recv())["type"] == "connection_ack"
        with watched(tps):
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                answers = list(pool.map(post, range(12)))
            # Over the socket: a long new document, then a short one and a ping, held
            # while the long one is validated, then handled in order.
            ws.send(json.dumps({"id": "long", "type": "subscribe",
                                "payload": {"query": _repeated(495, -1)}}))
            ws.send(json.dumps({"id": "short", "type": "subscribe",
                                "payload": {"query": "{ currentTemperature { value } }"}}))
            ws.send(json.dumps({"type": "ping"}))
            seen: list[tuple[str, str]] = []
            expected = {("pong", ""), ("complete", "long"), ("complete", "short")}
            while not expected <= set(seen):
                message = json.loads(ws.recv())
                seen.append((message["type"], message.get("id", "")))
        for status, body in answers:
            assert status == 200 and "errors" not in body, str(body)[:300]
        assert ("next", "long") in seen and ("next", "short") in seen, seen
        assert ("error", "long") not in seen, seen
    finally:
        ws.close()


# --- alarm events to many subscribers ------------------------------------------------------


class _Counting:
    """A subscriber that counts what it was sent."""

    def __init__(self) -> None:
        self.count = 0

    def deliver(self, sub_id: str, payload: str) -> None:
        self.count += 1

    def fail(self, sub_id: str, message: str) -> None:
        raise AssertionError(message)


def test_alarm_events_to_thousands_of_subscribers_are_delivered_in_slices() -> None:
    """Each alarm event went to every ``alarmEvents`` subscriber in one IO-loop callback:
    with 2 x 1,000 subscriptions (the per-connection cap) of a flapping alarm, /ready's
    p99 was 590-710 ms (load 3.5; 56 ms after this change). Now an event is work on the
    subscription manager's sliced queue, and a group's members are served at most
    MEMBERS_PER_STEP between two chances to stop."""
    query = "subscription { alarmEvents { type } }"
    cache = DocumentCache(SCHEMA)
    spec = subscription_spec(SCHEMA, query, cache.get(query), None, None)
    queued: list[Iterator[None]] = []
    subscriber = _Counting()

    async def main() -> None:
        fanout = AlarmFanout(SCHEMA, AlarmHub(), lambda _spec, _event: "{}", queued.append)
        for i in range(2_000):
            assert fanout.add(1, str(i), subscriber, spec)
        fanout.dispatch([cast(AlarmEvent, object())])

    asyncio.run(main())
    assert subscriber.count == 0 and len(queued) == 1  # queued, nothing done yet
    steps = []
    for _ in queued[0]:
        steps.append(subscriber.count)
    served = [b - a for a, b in zip([0, *steps], steps, strict=False)]
    assert subscriber.count == 2_000
    assert max(served) <= MEMBERS_PER_STEP, served


# --- alarm history in the request budget -------------------------------------------------


def _rows(text: str) -> int:
    document = parse(text)
    op = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
    return request_cost(SCHEMA, document, op, {}).rows


def test_alarm_history_counts_in_the_request_budget() -> None:
    """32 aliases of ``alarmHistory`` of a flapping alarm (3,334 events) answered 17 MB
    and froze the IO loop for 17 s: no budget rule knew the field. Each alias may read
    MAX_EVENTS stored events; ``alarms`` without ``active: true`` reads them too."""
    document = parse("{ " + " ".join(f'h{i}: alarmHistory(id: "a") {{ type }}'
                                     for i in range(32)) + " }")
    op = document.definitions[0]
    assert isinstance(op, OperationDefinitionNode)
    cost = request_cost(SCHEMA, document, op, {})
    assert cost.rows == 32 * MAX_EVENTS
    with pytest.raises(RequestTooLarge):
        check_budget(cost, Budget(200_000, 32))
    assert _rows('{ alarms(after: "2026-01-01T00:00:00Z") { id } }') == MAX_EVENTS
    # The dashboard's open alarms come from memory and stay on the IO loop.
    assert _rows("{ alarms(active: true) { id } }") == MAX_ALARMS


# --- cursors -------------------------------------------------------------------------------


def _encoded(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("text", [
    _encoded(b"[" * 100_000),  # a RecursionError and INTERNAL_SERVER_ERROR before
    _encoded(b'{"v":1,"t":0,"s":' + b"[" * 40 + b"]" * 40 + b"}"),
    _encoded(json.dumps({"v": 1, "t": 0, "s": [str(i) for i in range(20_000)]}).encode()),
])
def test_forged_cursors_are_bad_user_input(text: str) -> None:
    """Deeply nested, or so long that its stream names would each fetch one more row."""
    with pytest.raises(InvalidArgument) as caught:
        Cursor.decode(text)
    assert caught.value.code == "BAD_USER_INPUT"


def test_a_cursor_of_many_streams_at_one_instant_still_decodes() -> None:
    streams = frozenset(f"stream-{i:03d}-" + "x" * 53 for i in range(500))
    text = Cursor(1, streams).encode()
    assert len(text) <= MAX_CURSOR_CHARS
    assert Cursor.decode(text).streams == streams


def test_a_forged_cursor_over_http_is_bad_user_input_not_a_500(tps: TpsProcess) -> None:
    status, body = request(tps, "POST", "/graphql", {
        "query": "query ($c: String) { temperatureMeasurementsPage(first: 2, cursor: $c) "
                 "{ hasMore } }",
        "variables": {"c": _encoded(b"[" * 100_000)}})
    assert status == 200
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT",
                                               "argumentName": "cursor"}
    assert "RecursionError" not in tps.log()


# --- secrets ---------------------------------------------------------------------------


def test_health_never_shows_the_webhook_credentials() -> None:
    sender = WebhookSender("http://hook-user:hook-secret@127.0.0.1:9/x?key=hook-key")
    shown = json.dumps(senders_health([sender]))
    assert "hook-secret" not in shown and "hook-key" not in shown
    assert "127.0.0.1:9/x" in shown


def test_health_over_http_never_shows_the_webhook_credentials(tps: TpsProcess) -> None:
    """``/health`` (no token) showed ``http://hook-user:hook-secret@...?key=hook-key``."""
    status, body = request(tps, "GET", "/health")
    assert status == 200
    text = json.dumps(body)
    assert "webhook" in text
    for secret in ("hook-user", "hook-secret", "hook-key"):
        assert secret not in text
    log = Path(tps.log_path).read_text()
    assert "hook-secret" not in log


# --- frame times --------------------------------------------------------------------------


@contextlib.contextmanager
def _hostile_feed(frame: dict[str, Any], count: int = 1) -> Iterator[int]:
    """A plain-JSON feed that sends ``frame`` ``count`` times, then plain readings; its
    port."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.dated_feed",
                             json.dumps(frame), str(count)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        yield int(line.split()[1])
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("first_time", [1e30, "0001-01-01T00:00:00Z",
                                        "2200-01-01T00:00:00Z"])
def test_a_frame_time_out_of_range_or_far_ahead_is_rejected_not_a_crash(
    tps: TpsProcess, first_time: float | str
) -> None:
    """A frame dated 1e30 or year 1 crashed the reader on every reconnect (a 64-bit
    overflow in the spool) until it was marked failed; a frame dated 2200 made every
    later reading of the stream 2200 too (times are strictly increasing per stream).
    Now the frame is rejected as ``bad_time`` and the stream's readings are dated now."""
    with _hostile_feed({"time": first_time, "value": 99.0}) as port:
        status, body = request(tps, "POST", "/api/streams", {
            "name": "dated", "url": f"ws://127.0.0.1:{port}/x", "protocol": "json"},
            token=TOKEN)
        assert status == 201, body
        try:
            wait_until(lambda: streams(tps)["dated"]["received"] >= 5, 20,
                       what="readings of the dated feed")
            shown = streams(tps)["dated"]
            assert shown["state"] == "subscribed" and shown["rejected"] >= 1, shown
            answer = tps.graphql('{ currentTemperature(stream: "dated") { time } }')
            newest = datetime.fromisoformat(answer["data"]["currentTemperature"]["time"])
            assert abs(newest.timestamp() - time.time()) < 300, newest
            assert "Unhandled exception" not in tps.log()
        finally:
            request(tps, "DELETE", "/api/streams/dated", token=TOKEN)


def test_values_that_overflow_a_sum_are_rejected_and_the_writer_keeps_writing(
    tps: TpsProcess
) -> None:
    """Readings of +/-1e308 (finite, so accepted) overflowed the rollup sums: the writer
    crashed on every restart until it was marked failed, and no stream was stored any
    more. Now they are ``bad_value`` and ``base`` keeps being stored."""
    lost = NothingLost(tps, "base").before()
    with _hostile_feed({"value": 1e308}, 4) as port:
        status, body = request(tps, "POST", "/api/streams", {
            "name": "huge", "url": f"ws://127.0.0.1:{port}/x", "protocol": "json"},
            token=TOKEN)
        assert status == 201, body
        try:
            wait_until(lambda: streams(tps)["huge"]["received"] >= 5, 20,
                       what="readings of the hostile feed")
            assert streams(tps)["huge"]["rejected"] >= 4
            lost.check()
            status, health = request(tps, "GET", "/health")
            assert health["supervisor"]["actors"]["writer"]["restarts"] == 0, health
            assert "OverflowError" not in tps.log()
        finally:
            request(tps, "DELETE", "/api/streams/huge", token=TOKEN)
