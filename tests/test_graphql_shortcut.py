"""The history shortcut answers exactly what graphql-core's executor answers.

Every case runs the same request twice through one :class:`GraphQLService`: once the
way the server does (``respond``, which takes the shortcut when it recognises the
document) and once through the executor alone (``execute``). The JSON texts must be
identical, byte for byte: values, nulls, aliases, field order, errors with their
codes, paths and locations. The stores are real (SQLite in a temp dir, and a hot tier
holding the same readings), run inline instead of on query actors.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from inspect import isawaitable
from pathlib import Path
from typing import Any

import pytest
from graphql import OperationDefinitionNode

from tps.api.context import ApiContext, TokenAuth
from tps.api.graphql.handler import GraphQLService
from tps.api.graphql.handshake import Access
from tps.config.settings import Settings
from tps.history.answers import History
from tps.history.buckets import HOUR, MINUTE, SECOND
from tps.history.hot import HotTier
from tps.live import LiveHub
from tps.model import Reading
from tps.store import SqliteStore
from tps.store.base import Store

T0 = 1_690_549_200_000_000_000  # 2023-07-28T13:00:00Z


class InlineQueries:
    """A query runner that calls ``fn`` with a real store on the calling thread."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def run(self, fn: Callable[[Store], Any], timeout: float | None = None,
                  key: Any = None) -> Any:
        return fn(self.store)

    async def ping(self, timeout: float) -> bool:
        return True


def _readings() -> list[Reading]:
    out = []
    for k in range(3 * 3600 // 7):  # every 7 s for 3 h, stream "a"
        out.append(Reading("a", T0 + k * 7 * SECOND + 123, 10.0 + (k % 37) / 8))
    for k in range(400):  # stream "b": zeros of both signs, negatives
        value = [0.0, -0.0, -2.5, 3.25][k % 4]
        out.append(Reading("b", T0 + k * 13 * SECOND, value))
    return sorted(out, key=lambda r: r.time_ns)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteStore]:
    path: Path = tmp_path_factory.mktemp("shortcut") / "tps.db"
    store = SqliteStore(path)
    store.write(_readings())
    yield store
    store.close()


def _service(store: Store | None, hot: bool) -> GraphQLService:
    readings = _readings()
    memory: HotTier | None = None
    hub: LiveHub | None = None
    if hot:
        memory = HotTier(100_000 * 24 * HOUR, 1 << 30)
        memory.begin_load({}, ["a", "b"])  # nothing stored before: memory holds it all
        memory.append(readings)
        hub = LiveHub()
        hub.publish([readings[-1]])
    ctx = ApiContext(settings=Settings(), auth=TokenAuth("t" * 32),
                     queries=InlineQueries(store) if store is not None else None,
                     metrics=None, hub=hub, history=History(memory))
    return GraphQLService(ctx)


def _iso(time_ns: int) -> str:
    from tps.timefmt import ns_to_iso8601
    return ns_to_iso8601(time_ns)


async def _both(service: GraphQLService, doc: str, variables: dict[str, Any] | None,
                operation: str | None = None) -> tuple[str, str]:
    parsed = service.cache.get(doc)
    assert not parsed.errors, parsed.errors
    served = service.respond(parsed, operation, variables, Access.ANONYMOUS)
    if isawaitable(served):
        served = await served
    assert isinstance(served, list)
    executed = service.execute(parsed, operation, variables, Access.ANONYMOUS)
    if isawaitable(executed):
        executed = await executed
    return "".join(served), json.dumps(executed, separators=(",", ":"))


def _recognised(service: GraphQLService, doc: str, operation: str | None = None) -> bool:
    op = service.cache.get(doc).operation(operation)
    assert isinstance(op, OperationDefinitionNode)
    return service.shortcuts.find(op) is not None


STATS = ("query($a: DateTime, $b: DateTime, $s: String) { temperatureStatistics(after: $a, "
         "before: $b, stream: $s) { min max mean count } }")
SERIES = ("query($a: DateTime!, $b: DateTime!, $p: Int, $s: String) { temperatureSeries("
          "after: $a, before: $b, points: $p, stream: $s) { interval buckets { time min max "
          "mean count } } }")

# (document, variables): recognised shapes, with answers and with errors.
RECOGNISED: list[tuple[str, dict[str, Any] | None]] = [
    (STATS, {"a": _iso(T0 + 17 * SECOND + 5), "b": _iso(T0 + 2 * HOUR + 11), "s": "a"}),
    (STATS, {"a": _iso(T0 - HOUR), "b": _iso(T0 + 9 * HOUR), "s": "a"}),
    (STATS, {"a": str(T0 + MINUTE), "b": T0 + HOUR + 1, "s": "b"}),  # epoch ns, both forms
    (STATS, {"s": "a"}),  # open window
    (STATS, {"a": _iso(T0 - 2 * HOUR), "b": _iso(T0 - HOUR), "s": "a"}),  # empty: nulls
    (STATS, {"a": _iso(T0 + MINUTE), "b": _iso(T0 + 2 * MINUTE)}),  # every stream
    (STATS, {"a": _iso(T0 + HOUR), "b": _iso(T0), "s": "a"}),  # after > before
    (STATS, {"a": _iso(T0), "b": _iso(T0 + HOUR), "s": "nosuch"}),  # NOT_FOUND
    (STATS, {"a": _iso(T0), "b": _iso(T0 + HOUR), "s": "bad name!"}),  # stream refused
    (STATS, {"a": "2023-01-01T00:00:00Z", "b": "2223-01-01T00:00:00Z", "s": "a"}),  # too long
    (STATS, {"a": "yesterday", "s": "a"}),  # a variable that is no DateTime
    (STATS, {"a": 12.5, "s": "a"}),
    ('{ top: temperatureStatistics(stream: "b") { n: count mean lo: min } }', None),
    ('{ temperatureStatistics(after: "2023-07-28T13:10:00Z", before: 1690553000000000000, '
     'stream: "a") { count max } }', None),
    (SERIES, {"a": _iso(T0 + 17 * SECOND + 5), "b": _iso(T0 + 2 * HOUR + 11), "s": "a"}),
    (SERIES, {"a": _iso(T0), "b": _iso(T0 + 3 * HOUR), "p": 7, "s": "a"}),
    (SERIES, {"a": _iso(T0), "b": _iso(T0 + 3 * HOUR), "p": 1500, "s": "b"}),  # zeros, 1 s
    (SERIES, {"a": _iso(T0 - HOUR), "b": _iso(T0 + 4 * HOUR), "p": 40}),  # every stream
    (SERIES, {"a": _iso(T0), "b": _iso(T0 + HOUR), "p": 0, "s": "a"}),  # points refused
    (SERIES, {"a": _iso(T0), "b": _iso(T0 + HOUR), "p": 50, "s": "nosuch"}),
    (SERIES, {"a": _iso(T0 + HOUR), "b": _iso(T0), "s": "a"}),
    (SERIES, {"b": _iso(T0), "s": "a"}),  # a required variable missing
    ('{ s: temperatureSeries(after: "2023-07-28T13:00:00Z", before: "2023-07-28T15:00:00Z",'
     ' points: 9, stream: "a") { buckets { c: count time hi: max } step: interval } }', None),
    ('{ temperatureSeries(after: "2023-07-28T13:00:00Z", before: "2023-07-28T15:00:00Z",'
     ' stream: "a") { interval } }', None),
]

# Shapes the shortcut leaves to the executor (answers must still be the same).
UNRECOGNISED: list[tuple[str, dict[str, Any] | None]] = [
    ('{ temperatureStatistics(stream: "a") { count __typename } }', None),
    ('{ temperatureStatistics(stream: "a") { count count } }', None),
    ('{ temperatureStatistics(stream: "a") { count @include(if: true) } }', None),
    ('query { temperatureStatistics(stream: "a") { ...F } } '
     'fragment F on TemperatureStatistics { min count }', None),
    ('{ a: temperatureStatistics(stream: "a") { count } '
     'b: temperatureStatistics(stream: "b") { count } }', None),
    ('{ temperatureSeries(after: "2023-07-28T13:00:00Z", before: "2023-07-28T15:00:00Z",'
     ' stream: "a") { buckets { time } buckets { count } } }', None),
    ('{ temperatureSeries(after: "2023-07-28T13:00:00Z", before: "2023-07-28T15:00:00Z",'
     ' stream: "a") { buckets { ... on TemperatureSeriesBucket { time } } } }', None),
    ('{ currentTemperature(stream: "a") { value } }', None),
]


def _cases() -> Iterator[tuple[str, dict[str, Any] | None]]:
    yield from RECOGNISED
    yield from UNRECOGNISED


@pytest.mark.parametrize("role", ["all", "api", "api without a query pool"])
def test_the_shortcut_answers_byte_for_byte_what_the_executor_answers(
        store: SqliteStore, role: str) -> None:
    service = _service(None if role == "api without a query pool" else store, role == "all")

    async def run() -> None:
        for doc, variables in _cases():
            served, executed = await _both(service, doc, variables)
            assert served == executed, (doc, variables)

    try:
        asyncio.run(run())
    finally:
        service.close()


def test_recognised_shapes_take_the_shortcut_and_others_do_not(store: SqliteStore) -> None:
    service = _service(store, hot=True)
    assert all(_recognised(service, doc) for doc, _ in RECOGNISED)
    assert not any(_recognised(service, doc) for doc, _ in UNRECOGNISED)


def test_the_operation_name_picks_the_operation_the_shortcut_answers(store: SqliteStore) -> None:
    doc = ('query S($a: DateTime) { temperatureStatistics(after: $a, stream: "a") { count } } '
           'query T($a: DateTime!) { temperatureSeries(after: $a, before: "2023-07-28T14:00:00Z",'
           ' points: 4, stream: "a") { buckets { time count } } } '
           'query C { currentTemperature { value } }')
    service = _service(store, hot=True)
    variables = {"a": _iso(T0 + 10 * MINUTE)}

    async def run() -> None:
        for name in ("S", "T", "C"):
            served, executed = await _both(service, doc, variables, name)
            assert served == executed
        assert _recognised(service, doc, "S") and _recognised(service, doc, "T")
        assert not _recognised(service, doc, "C")

    try:
        asyncio.run(run())
    finally:
        service.close()


def test_a_repeated_series_reuses_bucket_texts_and_stays_exact(store: SqliteStore) -> None:
    service = _service(store, hot=True)
    doc, variables = SERIES, {"a": _iso(T0), "b": _iso(T0 + 3 * HOUR), "p": 200, "s": "a"}

    async def run() -> None:
        first = await _both(service, doc, variables)
        second = await _both(service, doc, variables)
        assert first[0] == first[1] == second[0] == second[1]
        assert len(json.loads(first[0])["data"]["temperatureSeries"]["buckets"]) > 100

    try:
        asyncio.run(run())
    finally:
        service.close()


def test_bucket_texts_have_one_bound_over_every_document(
        store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from tps.api.graphql import shortcut
    monkeypatch.setattr(shortcut, "MAX_BUCKET_TEXTS", 50)
    service = _service(store, hot=True)
    variables = {"a": _iso(T0), "b": _iso(T0 + 3 * HOUR), "p": 200, "s": "a"}

    async def run() -> None:
        for alias in ("x", "y", "z"):
            doc = SERIES.replace("temperatureSeries(", f"{alias}: temperatureSeries(")
            for _ in range(2):
                served, executed = await _both(service, doc, variables)
                assert served == executed
            assert 0 < service.shortcuts.kept_texts() <= 50

    try:
        asyncio.run(run())
    finally:
        service.close()
