"""Fast unit tests of the GraphQL layer's plain parts (no sockets, no store).

The document cache and its limits, argument checks, the rolling window, subprotocol
choice and the subscription protocol state machine driven with in-memory send/close.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from graphql import get_introspection_query

from tps.api.context import ApiContext, TokenAuth
from tps.api.graphql.cache import DocumentCache, ParsedDocument
from tps.api.graphql.connection import SubscriptionConnection
from tps.api.graphql.fanout import AverageWindows, SubscriptionManager
from tps.api.graphql.handshake import Access, choose_subprotocol, token_from_payload
from tps.api.graphql.schema import build_schema, check_range, check_stream, check_window
from tps.api.graphql.store_poller import NewReadings
from tps.api.graphql.subscription_spec import subscription_spec
from tps.config import Settings
from tps.errors import InvalidArgument
from tps.live import LiveHub
from tps.model import Reading

SCHEMA = build_schema().graphql_schema


# --- document cache ----------------------------------------------------------------


def test_cache_returns_the_same_parsed_document_for_the_same_text() -> None:
    cache = DocumentCache(SCHEMA)
    first = cache.get("{ currentTemperature { time value } }")
    second = cache.get("{ currentTemperature { time value } }")
    assert first is second and not first.errors
    assert (cache.hits, cache.misses) == (1, 1)


def test_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    cache = DocumentCache(SCHEMA, max_entries=3)
    texts = [f"{{ a{i}: streams {{ name }} }}" for i in range(5)]
    for text in texts:
        cache.get(text)
    assert len(cache) == 3
    cache.get(texts[0])
    assert cache.misses == 6  # evicted, parsed again


def test_large_documents_are_parsed_but_not_kept() -> None:
    cache = DocumentCache(SCHEMA, max_cached_chars=100)
    big = "{ streams { name } }" + " " * 200
    assert not cache.get(big).errors
    assert len(cache) == 0


def test_cache_keeps_invalid_documents_with_their_errors() -> None:
    cache = DocumentCache(SCHEMA)
    parsed = cache.get("{ nope }")
    assert parsed.errors and "nope" in parsed.errors[0].message
    assert cache.get("{ nope }") is parsed
    assert cache.get("{ unterminated").errors


def test_oversized_documents_are_refused_naming_the_query() -> None:
    cache = DocumentCache(SCHEMA, max_chars=100)
    parsed = cache.get("{ streams { name } }" + " " * 200)
    assert parsed.document is None
    assert parsed.errors[0].message.startswith("query:")


def test_depth_limit_counts_fragments_and_allows_graphiql_introspection() -> None:
    cache = DocumentCache(SCHEMA, max_depth=15)
    assert not cache.get(get_introspection_query(descriptions=True)).errors
    deep = ('{ __type(name: "Query") { fields { type ' + "{ ofType " * 15 + "{ name }"
            + " }" * 15 + " } } }")
    assert "query depth" in cache.get(deep).errors[0].message
    spread = ('query { __type(name: "Query") { ...F } } fragment F on __Type { fields { type '
              + "{ ofType " * 14 + "{ name }" + " }" * 14 + " } }")
    assert "query depth" in cache.get(spread).errors[0].message


def test_label_is_the_operation_type_and_first_root_field() -> None:
    cache = DocumentCache(SCHEMA)
    parsed = cache.get("query Mine { temperatureStatistics { count } streams { name } }")
    assert parsed.label("Mine") == "query.temperatureStatistics"
    assert parsed.label("Other") == "invalid"


# --- argument checks ---------------------------------------------------------------


def test_argument_checks_name_the_argument() -> None:
    with pytest.raises(InvalidArgument, match=r"^stream:"):
        check_stream("'; DROP DATABASE tps")
    with pytest.raises(InvalidArgument, match=r"^limit:"):
        check_range("limit", 0, 1, 100_000)
    with pytest.raises(InvalidArgument, match=r"^after:"):
        check_window(datetime(2023, 1, 2, tzinfo=UTC), datetime(2023, 1, 1, tzinfo=UTC))
    assert check_stream("sat-1.a:b_c") == "sat-1.a:b_c"
    assert check_window(datetime(1970, 1, 1), None) == (0, None)  # naive is UTC


# --- rolling window ------------------------------------------------------------------


def test_average_windows_keep_the_newest_values_and_ignore_repeats() -> None:
    window = AverageWindows(8)
    assert window.mean(3) == (None, 0)
    for i in range(5):
        assert window.push(Reading("a", i, float(i)))
    assert window.mean(3) == (3.0, 3)
    assert not window.push(Reading("a", 4, 100.0))  # already counted
    assert window.push(Reading("b", 1, 6.0))  # another stream has its own clock
    assert window.mean(3)[0] == pytest.approx((3 + 4 + 6) / 3)


def test_average_windows_share_one_ring_between_window_sizes() -> None:
    """Every window size's mean comes from one ring, exact after it wraps."""
    window = AverageWindows(16)
    values = [float(v * v % 17) for v in range(100)]
    for i, value in enumerate(values):
        window.push(Reading("a", i, value))
    for size in (1, 4, 10, 16):
        mean, count = window.mean(size)
        assert count == size and mean == pytest.approx(sum(values[-size:]) / size)
    assert not window.covers(17) and window.covers(16)


# --- the api role's store poller ---------------------------------------------------


def test_store_poller_delivers_each_new_reading_once_per_stream_batch() -> None:
    news = NewReadings(start_ns=10)
    first = news.take([Reading("a", 5, 0.5), Reading("a", 11, 1.0), Reading("b", 12, 2.0),
                       Reading("a", 13, 3.0)])
    assert first == [[Reading("a", 11, 1.0), Reading("a", 13, 3.0)], [Reading("b", 12, 2.0)]]
    # The next poll overlaps the last one (lookback) and brings a late reading of b.
    assert news.after() == 13 - 5_000_000_000
    again = news.take([Reading("a", 13, 3.0), Reading("b", 9, 9.0), Reading("b", 14, 4.0)])
    assert again == [[Reading("b", 14, 4.0)]]


# --- protocol helpers ----------------------------------------------------------------


def test_subprotocol_is_the_first_offered_that_tps_speaks() -> None:
    assert choose_subprotocol(["graphql-ws", "graphql-transport-ws"]) == "graphql-ws"
    assert choose_subprotocol(["mqtt", "graphql-transport-ws"]) == "graphql-transport-ws"
    assert choose_subprotocol(["mqtt"]) is None


def test_token_is_read_from_the_usual_init_payload_shapes() -> None:
    assert token_from_payload({"token": "t"}) == "t"
    assert token_from_payload({"Authorization": "Bearer t"}) == "t"
    assert token_from_payload({"headers": {"authorization": "Bearer t"}}) == "t"
    assert token_from_payload({"Authorization": "Basic x"}) is None
    assert token_from_payload(None) is None


def test_subscription_spec_reads_the_field_and_checks_arguments() -> None:
    cache = DocumentCache(SCHEMA)
    text = "subscription($n: Int!) { averageTemperature(windowSize: $n, stream: \"s\") { value } }"
    spec = subscription_spec(SCHEMA, text, cache.get(text), None, {"n": 20})
    assert (spec.kind, spec.stream, spec.window_size) == ("average", "s", 20)
    with pytest.raises(InvalidArgument, match="windowSize"):
        subscription_spec(SCHEMA, text, cache.get(text), None, {"n": 0})


# --- the connection state machine ---------------------------------------------------------


class Wire:
    """In-memory socket: records what the connection sends and how it closes."""

    def __init__(self, flush: bool = True) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self.flush = flush

    def send(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def busy(self) -> bool:
        return not self.flush

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def _connection(protocol: str, wire: Wire, hub: LiveHub, queue: int = 1000
                ) -> tuple[SubscriptionConnection, SubscriptionManager]:
    ctx = ApiContext(settings=Settings(), auth=TokenAuth("tok"), queries=None, metrics=None,
                     hub=hub)
    manager = SubscriptionManager(SCHEMA, ctx)

    async def executor(parsed: ParsedDocument, operation_name: str | None,
                       variables: dict[str, Any] | None, access: Access) -> str:
        return '{"data":null}'

    connection = SubscriptionConnection(
        protocol, send=wire.send, busy=wire.busy, close=wire.close, schema=SCHEMA,
        cache=DocumentCache(SCHEMA), manager=manager, executor=executor,
        check_token=ctx.auth.check_token, queue_limit=queue)
    return connection, manager


def _on_loop(fn: Callable[[], None]) -> None:
    async def main() -> None:
        fn()
        await asyncio.sleep(0)  # one loop turn: callbacks fn scheduled have run

    asyncio.run(main())


def _message(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


SUB = {"query": 'subscription { temperature(stream: "s") { value } }'}


def test_modern_protocol_acks_pings_and_pushes_readings() -> None:
    hub, wire = LiveHub(), Wire()

    def run() -> None:
        conn, manager = _connection("graphql-transport-ws", wire, hub)
        conn.on_message(_message("connection_init", payload={"token": "tok"}))
        assert conn.authorized
        conn.on_message(_message("ping"))
        conn.on_message(_message("subscribe", id="1", payload=SUB))
        manager.dispatch([Reading("s", 1, 1.5), Reading("other", 2, 9.0)])
        conn.on_message(_message("complete", id="1"))
        manager.dispatch([Reading("s", 3, 2.5)])

    _on_loop(run)
    assert [m["type"] for m in wire.sent] == ["connection_ack", "pong", "next"]
    assert wire.sent[2] == {"id": "1", "type": "next",
                            "payload": {"data": {"temperature": {"value": 1.5}}}}


def test_modern_protocol_errors_close_with_its_codes() -> None:
    cases = [
        ([_message("subscribe", id="1", payload=SUB)], 4401),
        ([_message("connection_init"), _message("connection_init")], 4429),
        ([_message("connection_init"), _message("subscribe", id="1", payload=SUB),
          _message("subscribe", id="1", payload=SUB)], 4409),
        (["not json"], 4400),
        ([_message("start", id="1", payload=SUB)], 4400),
    ]
    for messages, code in cases:
        wire = Wire()

        def run(messages: list[str] = messages, wire: Wire = wire) -> None:
            conn, _ = _connection("graphql-transport-ws", wire, LiveHub())
            for message in messages:
                conn.on_message(message)

        _on_loop(run)
        assert wire.closed is not None and wire.closed[0] == code, (messages, wire.closed)


def test_legacy_protocol_uses_start_data_stop() -> None:
    hub, wire = LiveHub(), Wire()

    def run() -> None:
        conn, manager = _connection("graphql-ws", wire, hub)
        conn.on_message(_message("connection_init"))
        conn.on_message(_message("start", id="a", payload=SUB))
        manager.dispatch([Reading("s", 1, 4.0)])
        conn.on_message(_message("stop", id="a"))
        conn.on_message(_message("start", id="b", payload={
            "query": "subscription { averageTemperature(windowSize: 0) { value } }"}))

    _on_loop(run)
    kinds = [m["type"] for m in wire.sent]
    assert kinds == ["connection_ack", "ka", "data", "complete", "error"]
    assert "windowSize" in wire.sent[-1]["payload"]["message"]


def test_a_consumer_that_stops_flushing_is_told_and_disconnected() -> None:
    hub, wire = LiveHub(), Wire(flush=False)

    def run() -> None:
        conn, manager = _connection("graphql-transport-ws", wire, hub, queue=5)
        conn.on_message(_message("connection_init"))
        conn.on_message(_message("subscribe", id="1", payload=SUB))
        manager.dispatch([Reading("s", i, float(i)) for i in range(1, 20)])
        assert manager.subscriber_count() == 0

    _on_loop(run)
    assert wire.closed == (1008, "subscriber too slow")
    # The ack and 4 readings fill the bound of 5 waiting messages; the next overflows.
    assert [m["type"] for m in wire.sent].count("next") == 4
    assert "too slow" in wire.sent[-1]["payload"][0]["message"]


# --- average windows seeded while readings arrive ------------------------------------


class _Payloads:
    """A subscriber that keeps every payload it is sent."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    def deliver(self, sub_id: str, payload: str) -> None:
        self.payloads.append(json.loads(payload))

    def fail(self, sub_id: str, message: str) -> None:
        raise AssertionError(message)


class _GatedStore:
    """A query pool whose store answers (with no readings) only once ``gate`` is set."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def run(self, fn: Any, timeout: float | None = None, key: Any = None) -> Any:
        await self.gate.wait()
        return []

    async def ping(self, timeout: float) -> bool:
        return True


def test_readings_arriving_while_an_average_window_is_seeded_each_get_their_event() -> None:
    hub = LiveHub()
    hub.publish([Reading("s", i, float(i)) for i in range(3)])  # 0, 1, 2: too few to seed
    store = _GatedStore()
    ctx = ApiContext(settings=Settings(), auth=TokenAuth("tok"), queries=store, metrics=None,
                     hub=hub)
    manager = SubscriptionManager(SCHEMA, ctx)
    text = 'subscription { averageTemperature(windowSize: 4, stream: "s") { value } }'
    spec = subscription_spec(SCHEMA, text, DocumentCache(SCHEMA).get(text), None, None)
    subscriber = _Payloads()

    async def main() -> None:
        manager.add(1, "1", subscriber, spec)  # the store seed now waits for the gate
        hub.publish([Reading("s", 3, 3.0)])
        hub.publish([Reading("s", 4, 4.0)])
        await asyncio.sleep(0)  # the hub's hand-overs reach the loop: both wait
        assert subscriber.payloads == []
        store.gate.set()
        for _ in range(3):
            await asyncio.sleep(0)

    asyncio.run(main())
    means = [p["data"]["averageTemperature"]["value"] for p in subscriber.payloads]
    assert means == [1.5, 2.5]  # 0..3, then 1..4
