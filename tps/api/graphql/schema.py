"""The Graphene schema of TPS: queries, mutations and the subscription types.

Resolvers are thin: they validate arguments (every violation is an
:class:`~tps.errors.InvalidArgument` naming the argument; a stream name TPS does not
know is :class:`~tps.errors.UnknownStream`), then answer from the live hub
(``currentTemperature`` in the ``all`` role) or hand a blocking store call to the
query pool and await it without blocking the IO loop. Control-plane mutations go to
the supervisor proxy through the context's :class:`~tps.api.context.FutureWaiter`.
Errors become ``extensions.code`` by their type (:mod:`tps.api.graphql.results`).

Subscription fields resolve to their root value: the subscription machinery in
:mod:`tps.api.graphql.subscriptions` executes the validated document once per event
with the event (a reading or an average) as the root.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from inspect import isawaitable
from typing import Any, TypeVar

import graphene
from graphql import GraphQLFloat

from tps.actors.stats import StreamStats
from tps.alarms.limits import Limits, parse_limits
from tps.alarms.model import AlarmEvent, AlarmSnapshot
from tps.api.alarms import AlarmsApi
from tps.api.context import ApiContext, QueryRunner
from tps.api.control import StreamControl
from tps.api.graphql.alarm_types import (
    AlarmEventType,
    AlarmType,
    LimitsInput,
    LimitsType,
    StreamAlarmStateEnum,
    limits_input,
    limits_or_blank,
)
from tps.api.graphql.known_streams import KnownStreams
from tps.api.graphql.paging import Cursor, Page, fetch_limit, make_page, start_ns
from tps.api.graphql.scalars import (
    LENIENT_ENUMS,
    Counter,
    DateTime,
    FeedProtocol,
    FeedStatus,
    StreamState,
    enum_value,
    instant_ns,
)
from tps.api.stream_shape import NEW_STREAM_FIELDS, STREAM_FIELDS, StreamField, json_schema_type
from tps.compat.graphene import accept_strings
from tps.config import DEFAULT_SUBSCRIPTION, PROTOCOLS, FeedConfig, validate_feed_name
from tps.errors import (
    ConfigError,
    InvalidArgument,
    ServiceUnavailable,
    StoreUnavailable,
    Unauthenticated,
    UnknownAlarm,
)
from tps.history.answers import Series, SeriesBucket
from tps.model import Reading, Statistics, ns_to_datetime
from tps.store.base import Store

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_LIMIT = 10_000
DEFAULT_PAGE = 1_000
MAX_LIMIT = 100_000
MAX_WINDOW = 100_000
RECENT_NS = 2_000_000_000
"""``temperatureMeasurements`` with no arguments: the last 2 seconds (the seed's)."""


@dataclass(slots=True)
class RequestContext:
    """What resolvers see as ``info.context``: the API context and the caller's rights.

    ``home`` is the IO loop's event loop when the request runs on another one (a big
    request, :mod:`tps.api.graphql.offload`): store calls are then made from ``home``,
    whose thread alone owns the query pool's answer cache.
    """

    api: ApiContext
    authorized: bool = False
    streams: KnownStreams | None = None
    """Which stream names exist (None: every name is taken as known)."""
    home: asyncio.AbstractEventLoop | None = None


@dataclass(frozen=True, slots=True)
class AverageValue:
    """The rolling mean of the newest ``window_size`` readings (of ``stream`` or all)."""

    value: float | None
    window_size: int
    count: int
    stream: str | None


@dataclass(frozen=True, slots=True)
class StoredStream:
    """A stream known only from stored readings (the ``api`` role has no readers)."""

    name: str


@dataclass(frozen=True, slots=True)
class RemovedStream:
    """Answer of ``removeStream``."""

    name: str
    removed: bool


@dataclass(frozen=True, slots=True)
class ToggleResult:
    """Answer of ``toggleFeed``."""

    status: str
    streams: list[Any]


# --- argument checks --------------------------------------------------------------


def check_stream(stream: str | None) -> str | None:
    """A valid stream name or None; anything else is refused naming ``stream``."""
    if stream is None:
        return None
    try:
        return validate_feed_name(stream, "stream")
    except ConfigError as exc:
        raise InvalidArgument("stream", exc.problem) from None


def check_range(argument: str, value: int | None, low: int, high: int) -> int | None:
    """``value`` when ``low <= value <= high`` (or None); else InvalidArgument."""
    if value is not None and not low <= value <= high:
        raise InvalidArgument(argument, f"must be between {low} and {high}, got {value}")
    return value


def check_window(after: datetime | None, before: datetime | None) -> tuple[int | None, int | None]:
    """The window as nanoseconds; a naive datetime is UTC; ``after`` <= ``before``."""
    after_ns = instant_ns(after) if after is not None else None
    before_ns = instant_ns(before) if before is not None else None
    if after_ns is not None and before_ns is not None and after_ns > before_ns:
        raise InvalidArgument("after", "must not be later than before")
    return after_ns, before_ns


def _context(info: graphene.ResolveInfo) -> RequestContext:
    context = info.context
    assert isinstance(context, RequestContext)
    return context


def _require_control(info: graphene.ResolveInfo) -> ApiContext:
    """The API context when the caller holds the control token; else Unauthenticated."""
    context = _context(info)
    if not context.authorized:
        raise Unauthenticated(
            "unauthorized: mutations need the header 'Authorization: Bearer <control token>'"
        )
    return context.api


def _control(api: ApiContext) -> StreamControl:
    """The control plane, or a clear error in the ``api`` role (no readers here)."""
    control = api.control
    if control is None:
        raise ServiceUnavailable(
            "streams are not managed by this process (role api); send mutations to the "
            "ingest process"
        )
    return control


def _refresh_coverage(context: RequestContext) -> None:
    """Answers from memory never read the store, so they have a query actor refresh the
    stored-coverage snapshot (which streams exist) when it is stale."""
    api = context.api
    board = api.history.board
    if context.home is not None:
        return  # off the IO loop (a big request): the board is the loop's; skip this time
    if api.queries is None or board.refresh_task is not None or not board.stale():
        return
    task = asyncio.ensure_future(api.queries.run(board.fresh))
    board.refresh_task = task  # also keeps the task referenced until it is done

    def done(finished: asyncio.Future[Any]) -> None:
        board.refresh_task = None
        if not finished.cancelled() and finished.exception() is not None:
            logger.debug("Coverage refresh failed: %s", finished.exception())

    task.add_done_callback(done)


def _known_now(context: RequestContext, stream: str | None) -> bool:
    """True when ``stream`` is None or known without asking the store (the fast path)."""
    streams = context.streams
    return streams is None or streams.known_now(stream)


async def _after_known(context: RequestContext, stream: str | None,
                       then: Callable[[], T | Awaitable[T]]) -> T:
    """``then()`` once ``stream`` is known to exist (UnknownStream otherwise)."""
    await _require_context_known(context, stream)
    # Known now, so ``then`` takes its own fast path (the name is cached).
    result = then()
    if isawaitable(result):
        return await result
    return result


async def _require_known(info: graphene.ResolveInfo, stream: str | None) -> None:
    """Return when ``stream`` is None or a stream TPS knows; UnknownStream otherwise."""
    await _require_context_known(_context(info), stream)


async def _require_context_known(context: RequestContext, stream: str | None) -> None:
    """:func:`_require_known` for a request's context.

    ``KnownStreams`` lives on the IO loop: a big request running on a heavy-request
    thread asks it from there (``home``).
    """
    streams = context.streams
    if streams is None:
        return
    home = context.home
    if home is not None and home is not asyncio.get_running_loop():
        asked = asyncio.run_coroutine_threadsafe(streams.require(stream), home)
        await asyncio.wrap_future(asked)
        return
    await streams.require(stream)


async def _on_pool(
    info: graphene.ResolveInfo, fn: Callable[[Store], T], key: tuple[Any, ...] | None = None
) -> T:
    """Run ``fn(store)`` on the query pool; identical in-flight questions (``key``) share
    one store call."""
    return await _on_context_pool(_context(info), fn, key)


async def _on_context_pool(
    context: RequestContext, fn: Callable[[Store], T], key: tuple[Any, ...] | None = None
) -> T:
    """:func:`_on_pool` for a request's context."""
    queries = context.api.queries
    if queries is None:
        raise StoreUnavailable("this process runs no query pool")
    home = context.home
    if home is not None and home is not asyncio.get_running_loop():
        asked = asyncio.run_coroutine_threadsafe(_ask(queries, fn, key), home)
        return await asyncio.wrap_future(asked)
    return await queries.run(fn, key=key)


async def _ask(queries: QueryRunner, fn: Callable[[Store], T],
               key: tuple[Any, ...] | None) -> T:
    return await queries.run(fn, key=key)


def temperature_statistics(
    context: RequestContext,
    after: datetime | None = None,
    before: datetime | None = None,
    stream: str | None = None,
) -> Statistics | Awaitable[Statistics]:
    """``temperatureStatistics``: from memory on the IO loop when the hot tier holds the
    window, else through the query pool (the resolver, and the shortcut of
    :mod:`tps.api.graphql.shortcut`)."""
    stream = check_stream(stream)
    after_ns, before_ns = check_window(after, before)
    if not _known_now(context, stream):
        return _after_known(context, stream, lambda: temperature_statistics(
            context, after, before, stream))
    history = context.api.history
    question = history.statistics_plan(after_ns, before_ns, stream)
    answer = history.statistics_now(question)
    if answer is not None:
        # Held in memory: answered on the IO loop, no query-actor hop.
        _refresh_coverage(context)
        return answer
    return _on_context_pool(context, lambda store: history.statistics_finish(store, question),
                            ("statistics", after_ns, before_ns, stream))


def temperature_series(
    context: RequestContext,
    after: datetime,
    before: datetime,
    points: int = 500,
    stream: str | None = None,
) -> Series | Awaitable[Series]:
    """``temperatureSeries`` (see :func:`temperature_statistics`)."""
    stream = check_stream(stream)
    after_ns, before_ns = check_window(after, before)
    assert after_ns is not None and before_ns is not None
    if not _known_now(context, stream):
        return _after_known(context, stream, lambda: temperature_series(
            context, after, before, points, stream))
    history = context.api.history
    question = history.series_plan(after_ns, before_ns, points, stream)
    answer = history.series_now(question)
    if answer is not None:
        _refresh_coverage(context)
        return answer
    return _on_context_pool(context, lambda store: history.series_finish(store, question),
                            ("series", after_ns, before_ns, points, stream))


# --- output types -----------------------------------------------------------------


class Temperature(graphene.ObjectType):  # type: ignore[misc]
    """One reading. ``time`` and ``timestamp`` are the same instant (both names are in use)."""

    time = DateTime(required=True, description="Instant of the reading (UTC).")
    timestamp = DateTime(required=True, description="Same instant as `time`.")
    value = graphene.Float(
        required=True,
        description="Temperature as the feed sent it, unconverted: degrees Celsius from the "
        "satellite-temperature feeds and `tps simulate`.",
    )
    stream = graphene.String(required=True, description="Stream the reading came from.")

    @staticmethod
    def resolve_time(root: Reading, _info: graphene.ResolveInfo) -> datetime:
        return root.time

    @staticmethod
    def resolve_timestamp(root: Reading, _info: graphene.ResolveInfo) -> datetime:
        return root.time


class TemperatureStatistics(graphene.ObjectType):  # type: ignore[misc]
    """Aggregate of a window (values in the feeds' unit, degrees Celsius); min/max/mean
    are null when count is 0."""

    min = graphene.Float()
    max = graphene.Float()
    mean = graphene.Float()
    count = graphene.Int(required=True)


class TemperatureSeriesBucket(graphene.ObjectType):  # type: ignore[misc]
    """One interval of a series: its start and the aggregate of its readings."""

    time = DateTime(required=True, description=(
        "Start of the interval (UTC), aligned to the Unix epoch like InfluxQL's "
        "GROUP BY time(interval)."))
    min = graphene.Float(required=True)
    max = graphene.Float(required=True)
    mean = graphene.Float(required=True)
    count = graphene.Int(required=True)

    @staticmethod
    def resolve_time(root: SeriesBucket, _info: graphene.ResolveInfo) -> datetime:
        return ns_to_datetime(root.time_ns)


FLAT_LISTS: dict[str, dict[str, Callable[[Any], Any]]] = {
    # A 100,000-row temperatureMeasurements answer: 3.5 s through graphql-core's
    # per-field completion, a tenth of that here (issue 14).
    "Temperature": {
        "time": lambda r: r.time.isoformat(),
        "timestamp": lambda r: r.time.isoformat(),
        "value": lambda r: GraphQLFloat.serialize(r.value),
        "stream": lambda r: r.stream,
    },
    "TemperatureSeriesBucket": {
        "time": lambda b: b.time_iso or ns_to_datetime(b.time_ns).isoformat(),
        "min": lambda b: b.min,
        "max": lambda b: b.max,
        "mean": lambda b: b.mean,
        "count": lambda b: b.count,
    },
}
"""Serialized field getters of the types whose lists skip graphql-core's per-field
completion (:func:`tps.compat.graphql_core.flat_list_context`); each must give what the
type's own resolver and scalar would."""


class TemperatureSeries(graphene.ObjectType):  # type: ignore[misc]
    """A downsampled series for charts; intervals without readings are left out."""

    interval = graphene.Int(required=True, description=(
        "Seconds per bucket: the smallest step of 1 s, 2 s, 5 s, 10 s, 15 s, 30 s, 1 m, 2 m, "
        "5 m, 10 m, 15 m, 30 m, 1 h, 2 h, 3 h, 6 h, 12 h, 1 d giving at most `points`."))
    buckets = graphene.List(graphene.NonNull(TemperatureSeriesBucket), required=True)

    @staticmethod
    def resolve_interval(root: Series, _info: graphene.ResolveInfo) -> int:
        return root.interval_ns // 1_000_000_000


class Average(graphene.ObjectType):  # type: ignore[misc]
    """Rolling mean of the newest ``windowSize`` readings (degrees Celsius); null when
    there are none."""

    value = graphene.Float()
    window_size = graphene.Int(required=True)
    count = graphene.Int(required=True, description="Readings averaged (<= windowSize).")
    stream = graphene.String(description="The stream, or null for all streams.")


_SCALARS: dict[str, Any] = {
    "String": graphene.String,
    "Float": graphene.Float,
    "Int": graphene.Int,
    "DateTime": DateTime,
    "Boolean": graphene.Boolean,
    "Counter": Counter,
    "StreamState": StreamState,
    "FeedProtocol": FeedProtocol,
}


class TemperaturePage(graphene.ObjectType):  # type: ignore[misc]
    """One page of readings, oldest first. Pass ``nextCursor`` as ``cursor`` to get the
    next; ``hasMore`` says whether more readings were already stored when this page was
    read (a later call with the same cursor also returns readings stored since)."""

    readings = graphene.List(graphene.NonNull(Temperature), required=True)
    next_cursor = graphene.String(
        description="Where the next page starts (null only when this page and the cursor "
        "it was asked with are both empty).")
    has_more = graphene.Boolean(required=True)

    @staticmethod
    def resolve_next_cursor(root: Page, _info: graphene.ResolveInfo) -> str | None:
        return root.next_cursor.encode() if root.next_cursor is not None else None


def _stream_resolver(spec: StreamField) -> Callable[[Any, graphene.ResolveInfo], Any]:
    def resolve(root: Any, _info: graphene.ResolveInfo) -> Any:
        if isinstance(root, StreamStats):
            return spec.read(root)
        return getattr(root, spec.name, None)  # a StoredStream knows only its name

    return resolve


def _alarms(info: graphene.ResolveInfo) -> AlarmsApi:
    alarms = _context(info).api.alarms
    if alarms is None:
        raise ServiceUnavailable("alarms are not available in this process")
    return alarms


def _stream_name(root: Any) -> str:
    return str(root.name)


def _resolve_stream_limits(root: Any, info: graphene.ResolveInfo) -> Limits | None:
    alarms = _context(info).api.alarms
    return alarms.limits_of(_stream_name(root)) if alarms is not None else None


def _resolve_stream_alarm_state(root: Any, info: graphene.ResolveInfo) -> str:
    alarms = _context(info).api.alarms
    return alarms.state_of(_stream_name(root)) if alarms is not None else "OK"


# Derived from tps/api/stream_shape.py, like the REST JSON and the OpenAPI schema. Only
# the name is non-null: the api role knows streams only by the names stored.
Stream = type("Stream", (graphene.ObjectType,), {
    "__doc__": "A stream with its state and counters (only the name in the ``api`` role).",
    "id": graphene.ID(required=True, description="The stream's name (unique; for client "
                      "caches such as Apollo's).",
                      resolver=lambda root, _info: root.name),
    **{
        spec.name: _SCALARS[spec.graphql](required=spec.name == "name",
                                          description=spec.description or None,
                                          resolver=_stream_resolver(spec))
        for spec in STREAM_FIELDS if spec.graphql is not None
    },
    "limits": graphene.Field(LimitsType, resolver=_resolve_stream_limits,
                             description="The limits it is evaluated against (null: none)."),
    "alarm_state": graphene.Field(graphene.NonNull(StreamAlarmStateEnum),
                                  resolver=_resolve_stream_alarm_state,
                                  description="OK, WARNING, CRITICAL or STALE right now."),
})


class ToggleFeedInput(graphene.InputObjectType):  # type: ignore[misc]
    """``status``: on or off (the strings "on" and "off" are accepted too); ``stream``:
    one stream (default: every stream)."""

    status = FeedStatus(required=True)
    stream = graphene.String()


class ToggleFeedPayload(graphene.ObjectType):  # type: ignore[misc]
    """The status asked for and the streams it was applied to."""

    status = FeedStatus(required=True)
    streams = graphene.List(graphene.NonNull(Stream), required=True)


_NEW_STREAM_TYPES: dict[str, Any] = {"protocol": FeedProtocol}
AddStreamInput = type("AddStreamInput", (graphene.InputObjectType,), {
    "__doc__": "A feed to subscribe to (protocol: " + ", ".join(PROTOCOLS) + ").",
    **{
        spec.name: _NEW_STREAM_TYPES.get(
            spec.name, _SCALARS[json_schema_type(spec.python_type).capitalize()])(
            required=spec.required, description=spec.description)
        for spec in NEW_STREAM_FIELDS if spec.graphql
    },
})


class RemoveStreamPayload(graphene.ObjectType):  # type: ignore[misc]
    """Answer of ``removeStream``."""

    name = graphene.String(required=True)
    removed = graphene.Boolean(required=True)


# --- root types -------------------------------------------------------------------


class Query(graphene.ObjectType):  # type: ignore[misc]
    """Read-only questions about the readings and streams."""

    current_temperature = graphene.Field(
        Temperature, stream=graphene.String(),
        description="The newest reading (of `stream`, or of any); null before the first. "
        "A stream that is neither configured nor stored is NOT_FOUND.",
    )
    temperature_statistics = graphene.Field(
        graphene.NonNull(TemperatureStatistics),
        after=DateTime(),
        before=DateTime(),
        stream=graphene.String(),
        description="min/max/mean/count over an inclusive window (either bound optional).",
    )
    temperature_series = graphene.Field(
        graphene.NonNull(TemperatureSeries),
        after=DateTime(required=True),
        before=DateTime(required=True),
        points=graphene.Int(default_value=500),
        stream=graphene.String(),
        description=("min/max/mean/count per interval over an inclusive window, at most "
                     "`points` (1 to 10,000) intervals; the values of InfluxQL's "
                     "MIN/MAX/MEAN/COUNT ... GROUP BY time(interval) over the readings."),
    )
    temperature_measurements = graphene.Field(
        graphene.NonNull(graphene.List(graphene.NonNull(Temperature))),
        after=DateTime(),
        before=DateTime(),
        last=graphene.Int(),
        limit=graphene.Int(),
        stream=graphene.String(),
        description="Readings in a window, oldest first; no arguments: the last 2 seconds. "
        f"At most `limit` readings (default {DEFAULT_LIMIT:,}, at most {MAX_LIMIT:,}): use "
        "temperatureMeasurementsPage to read a longer window.",
    )
    temperature_measurements_page = graphene.Field(
        graphene.NonNull(TemperaturePage),
        after=DateTime(),
        before=DateTime(),
        stream=graphene.String(),
        first=graphene.Int(description=f"Readings per page (default {DEFAULT_PAGE:,}, at "
                           f"most {MAX_LIMIT:,})."),
        cursor=graphene.String(description="nextCursor of the previous page."),
        description="Readings in an inclusive window, oldest first, a page at a time.",
    )
    stream = graphene.Field(
        Stream, name=graphene.String(required=True),
        description="One stream by name; NOT_FOUND when TPS knows no such stream.",
    )
    average_temperature = graphene.Field(
        graphene.NonNull(Average),
        window_size=graphene.Int(required=True),
        stream=graphene.String(),
        description="Mean of the newest windowSize readings.",
    )
    streams = graphene.List(graphene.NonNull(Stream), required=True)
    alarms = graphene.Field(
        graphene.NonNull(graphene.List(graphene.NonNull(AlarmType))),
        active=graphene.Boolean(),
        stream=graphene.String(),
        after=DateTime(),
        before=DateTime(),
        description="active: true lists every alarm not yet CLEARED; otherwise alarms "
        "triggered in the window (default: the 7 days before `before`), newest state.",
    )
    alarm = graphene.Field(AlarmType, id=graphene.ID(required=True),
                           description="One alarm (null when unknown).")
    alarm_history = graphene.Field(
        graphene.NonNull(graphene.List(graphene.NonNull(AlarmEventType))),
        id=graphene.ID(required=True), description="Every event of one alarm, oldest first.")

    @staticmethod
    async def resolve_alarms(
        _root: None, info: graphene.ResolveInfo, active: bool | None = None,
        stream: str | None = None, after: datetime | None = None,
        before: datetime | None = None,
    ) -> list[AlarmSnapshot]:
        stream = check_stream(stream)
        after_ns, before_ns = check_window(after, before)
        return await _alarms(info).alarms(active=active, stream=stream, after_ns=after_ns,
                                          before_ns=before_ns)

    @staticmethod
    async def resolve_alarm(_root: None, info: graphene.ResolveInfo,
                            id: str) -> AlarmSnapshot | None:
        try:
            snapshot, _ = await _alarms(info).alarm(id)
        except UnknownAlarm:
            return None
        return snapshot

    @staticmethod
    async def resolve_alarm_history(_root: None, info: graphene.ResolveInfo,
                                    id: str) -> list[AlarmEvent]:
        _, history = await _alarms(info).alarm(id)
        return history

    @staticmethod
    def resolve_current_temperature(
        _root: None, info: graphene.ResolveInfo, stream: str | None = None
    ) -> Reading | Awaitable[Reading | None] | None:
        stream = check_stream(stream)
        hub = _context(info).api.hub
        if hub is not None:
            # The hot path: answered from memory without leaving the IO loop.
            latest = hub.latest(stream)
            if latest is not None:
                return latest
        return _current_from_store(info, stream)

    @staticmethod
    def resolve_temperature_statistics(
        _root: None,
        info: graphene.ResolveInfo,
        after: datetime | None = None,
        before: datetime | None = None,
        stream: str | None = None,
    ) -> Statistics | Awaitable[Statistics]:
        return temperature_statistics(_context(info), after, before, stream)

    @staticmethod
    def resolve_temperature_series(
        _root: None,
        info: graphene.ResolveInfo,
        after: datetime,
        before: datetime,
        points: int = 500,
        stream: str | None = None,
    ) -> Series | Awaitable[Series]:
        return temperature_series(_context(info), after, before, points, stream)

    @staticmethod
    async def resolve_temperature_measurements(
        _root: None,
        info: graphene.ResolveInfo,
        after: datetime | None = None,
        before: datetime | None = None,
        last: int | None = None,
        limit: int | None = None,
        stream: str | None = None,
    ) -> list[Reading]:
        stream = check_stream(stream)
        check_range("last", last, 1, MAX_LIMIT)
        size = check_range("limit", limit, 1, MAX_LIMIT) or DEFAULT_LIMIT
        after_ns, before_ns = check_window(after, before)
        await _require_known(info, stream)
        if after_ns is None and before_ns is None and last is None:
            after_ns = time.time_ns() - RECENT_NS

        def fetch(store: Store) -> list[Reading]:
            return store.measurements(after_ns, before_ns, stream, last=last, limit=size)

        key = ("measurements", after_ns, before_ns, stream, last, size)
        result: list[Reading] = await _on_pool(info, fetch, key)
        return result

    @staticmethod
    async def resolve_temperature_measurements_page(
        _root: None,
        info: graphene.ResolveInfo,
        after: datetime | None = None,
        before: datetime | None = None,
        stream: str | None = None,
        first: int | None = None,
        cursor: str | None = None,
    ) -> Page:
        stream = check_stream(stream)
        size = check_range("first", first, 1, MAX_LIMIT) or DEFAULT_PAGE
        position = Cursor.decode(cursor) if cursor is not None else None
        after_ns, before_ns = check_window(after, before)
        await _require_known(info, stream)
        start, limit = start_ns(after_ns, position), fetch_limit(size, position)

        def fetch(store: Store) -> list[Reading]:
            return store.measurements(start, before_ns, stream, limit=limit)

        rows: list[Reading] = await _on_pool(
            info, fetch, ("page", start, before_ns, stream, limit))
        return make_page(rows, size, position)

    @staticmethod
    async def resolve_stream(_root: None, info: graphene.ResolveInfo, name: str) -> Any:
        checked = check_stream(name)
        assert checked is not None
        control = _context(info).api.control
        if control is not None:
            return await control.get_stream(checked)
        await _require_known(info, checked)
        return StoredStream(checked)

    @staticmethod
    def resolve_average_temperature(
        _root: None, info: graphene.ResolveInfo, window_size: int, stream: str | None = None
    ) -> AverageValue | Awaitable[AverageValue]:
        check_range("windowSize", window_size, 1, MAX_WINDOW)
        stream = check_stream(stream)
        hub = _context(info).api.hub
        if hub is not None and stream is not None:
            recent = hub.recent(stream, window_size)
            if len(recent) == window_size:
                mean = sum(r.value for r in recent) / window_size
                return AverageValue(mean, window_size, window_size, stream)
        return _average_from_store(info, window_size, stream)

    @staticmethod
    async def resolve_streams(_root: None, info: graphene.ResolveInfo) -> list[Any]:
        control = _context(info).api.control
        if control is not None:
            return list(await control.list_streams())
        names = await _on_pool(info, lambda store: store.stream_names())
        return [StoredStream(name) for name in names]


async def _current_from_store(info: graphene.ResolveInfo, stream: str | None) -> Reading | None:
    await _require_known(info, stream)
    result: Reading | None = await _on_pool(
        info, lambda store: store.current(stream), ("current", stream))
    return result


async def _average_from_store(
    info: graphene.ResolveInfo, window_size: int, stream: str | None
) -> AverageValue:
    await _require_known(info, stream)
    def fetch(store: Store) -> list[Reading]:
        return store.measurements(None, None, stream, last=window_size, limit=window_size)

    readings: list[Reading] = await _on_pool(info, fetch, ("average", window_size, stream))
    mean = sum(r.value for r in readings) / len(readings) if readings else None
    return AverageValue(mean, window_size, len(readings), stream)


class Mutation(graphene.ObjectType):  # type: ignore[misc]
    """Control of the streams; every mutation needs the control token."""

    toggle_feed = graphene.Field(
        graphene.NonNull(ToggleFeedPayload),
        input=ToggleFeedInput(required=True),
        description='Start ("on") or stop ("off") one stream, or every stream.',
    )
    add_stream = graphene.Field(graphene.NonNull(Stream), input=AddStreamInput(required=True))
    remove_stream = graphene.Field(
        graphene.NonNull(RemoveStreamPayload), name=graphene.String(required=True)
    )

    set_limits = graphene.Field(
        graphene.NonNull(LimitsType), stream=graphene.String(required=True),
        limits=LimitsInput(required=True),
        description="Replace a stream's limits (persisted); invalid limits change nothing.")
    clear_limits = graphene.Field(graphene.NonNull(LimitsType),
                                  stream=graphene.String(required=True),
                                  description="Remove a stream's limits; its alarms return.")
    acknowledge_alarm = graphene.Field(graphene.NonNull(AlarmType), id=graphene.ID(required=True),
                                       comment=graphene.String())
    shelve_alarm = graphene.Field(graphene.NonNull(AlarmType), id=graphene.ID(required=True),
                                  seconds=graphene.Int(required=True), comment=graphene.String())

    @staticmethod
    async def resolve_set_limits(_root: None, info: graphene.ResolveInfo, stream: str,
                                 limits: dict[str, Any]) -> Limits | dict[str, None]:
        _require_control(info)
        checked = check_stream(stream)
        assert checked is not None
        parsed = parse_limits(limits_input(dict(limits)))
        return limits_or_blank(await _alarms(info).set_limits(checked, parsed))

    @staticmethod
    async def resolve_clear_limits(_root: None, info: graphene.ResolveInfo,
                                   stream: str) -> dict[str, None]:
        _require_control(info)
        checked = check_stream(stream)
        assert checked is not None
        await _alarms(info).set_limits(checked, None)
        return dict(limits_or_blank(None))  # type: ignore[arg-type]

    @staticmethod
    async def resolve_acknowledge_alarm(_root: None, info: graphene.ResolveInfo, id: str,
                                        comment: str | None = None) -> AlarmSnapshot:
        _require_control(info)
        return await _alarms(info).acknowledge(id, comment)

    @staticmethod
    async def resolve_shelve_alarm(_root: None, info: graphene.ResolveInfo, id: str,
                                   seconds: int, comment: str | None = None) -> AlarmSnapshot:
        _require_control(info)
        return await _alarms(info).shelve(id, seconds, comment)

    @staticmethod
    async def resolve_toggle_feed(
        _root: None, info: graphene.ResolveInfo, input: dict[str, Any]
    ) -> ToggleResult:
        api = _require_control(info)
        status = str(enum_value(input.get("status", ""))).strip().lower()
        if status not in ("on", "off"):
            raise InvalidArgument("status", f'must be "on" or "off", got {input.get("status")!r}')
        stream = check_stream(input.get("stream"))
        control = _control(api)
        running = status == "on"
        streams: list[Any]
        if stream is None:
            streams = list(await control.set_all(running))
        elif running:
            streams = [await control.start_stream(stream)]
        else:
            streams = [await control.stop_stream(stream)]
        logger.info("toggleFeed %s applied to %d stream(s)", status, len(streams))
        return ToggleResult(status, streams)

    @staticmethod
    async def resolve_add_stream(
        _root: None, info: graphene.ResolveInfo, input: dict[str, Any]
    ) -> Any:
        api = _require_control(info)
        query = input.get("query")
        feed = FeedConfig(
            name=str(input["name"]),
            url=str(input["url"]),
            protocol=str(enum_value(input.get("protocol")) or "auto"),
            query=DEFAULT_SUBSCRIPTION if query is None else str(query),
        )
        # The supervisor checks every field (check_feed) and names the bad one.
        return await _control(api).add_stream(feed)

    @staticmethod
    async def resolve_remove_stream(
        _root: None, info: graphene.ResolveInfo, name: str
    ) -> RemovedStream:
        api = _require_control(info)
        checked = check_stream(name)
        assert checked is not None
        await _control(api).remove_stream(checked)
        return RemovedStream(checked, True)


class Subscription(graphene.ObjectType):  # type: ignore[misc]
    """Pushed over WebSocket on /graphql (graphql-transport-ws or graphql-ws)."""

    temperature = graphene.Field(
        graphene.NonNull(Temperature),
        stream=graphene.String(),
        description="Every new reading (of one stream, or of all). A stream that is "
        "neither configured nor stored is NOT_FOUND.",
    )
    average_temperature = graphene.Field(
        graphene.NonNull(Average),
        window_size=graphene.Int(required=True),
        stream=graphene.String(),
        description="The rolling mean of the newest windowSize readings, after each reading.",
    )

    alarm_events = graphene.Field(
        graphene.NonNull(AlarmEventType),
        stream=graphene.String(),
        description="Every alarm transition (of one stream, or of all), as it happens.",
    )

    @staticmethod
    def resolve_temperature(root: Reading, _info: graphene.ResolveInfo, **_args: Any) -> Reading:
        return root

    @staticmethod
    def resolve_alarm_events(root: AlarmEvent, _info: graphene.ResolveInfo,
                             **_args: Any) -> AlarmEvent:
        return root

    @staticmethod
    def resolve_average_temperature(
        root: AverageValue, _info: graphene.ResolveInfo, **_args: Any
    ) -> AverageValue:
        return root


def build_schema() -> graphene.Schema:
    """The TPS schema (build once per application; it is immutable)."""
    schema = graphene.Schema(query=Query, mutation=Mutation, subscription=Subscription)
    accept_strings(schema.graphql_schema, LENIENT_ENUMS)
    return schema
