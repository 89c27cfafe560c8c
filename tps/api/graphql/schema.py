"""The Graphene schema of TPS: queries, mutations and the subscription types.

Resolvers are thin: they validate arguments (every violation is an
:class:`~tps.errors.InvalidArgument` naming the argument), then answer from the live
hub (``currentTemperature`` in the ``all`` role) or hand a blocking store call to the
query pool and await it without blocking the IO loop. Control-plane mutations go to
the supervisor proxy through the context's :class:`~tps.api.context.FutureWaiter`.

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
from typing import Any, TypeVar

import graphene
from graphql import GraphQLError

from tps.actors.stats import StreamStats
from tps.alarms.limits import Limits, parse_limits
from tps.alarms.model import AlarmEvent, AlarmSnapshot
from tps.api.alarms import AlarmsApi
from tps.api.context import ApiContext
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
from tps.api.stream_shape import NEW_STREAM_FIELDS, STREAM_FIELDS, StreamField, json_schema_type
from tps.config import DEFAULT_SUBSCRIPTION, PROTOCOLS, FeedConfig, validate_feed_name
from tps.errors import ConfigError, InvalidArgument, StoreUnavailable, UnknownAlarm
from tps.history.answers import Series, SeriesBucket
from tps.model import Reading, Statistics, datetime_to_ns, ns_to_datetime
from tps.store.base import Store

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000
MAX_WINDOW = 100_000
RECENT_NS = 2_000_000_000
"""``temperatureMeasurements`` with no arguments: the last 2 seconds (the seed's)."""


@dataclass(slots=True)
class RequestContext:
    """What resolvers see as ``info.context``: the API context and the caller's rights."""

    api: ApiContext
    authorized: bool = False


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
    after_ns = datetime_to_ns(after) if after is not None else None
    before_ns = datetime_to_ns(before) if before is not None else None
    if after_ns is not None and before_ns is not None and after_ns > before_ns:
        raise InvalidArgument("after", "must not be later than before")
    return after_ns, before_ns


def _context(info: graphene.ResolveInfo) -> RequestContext:
    context = info.context
    assert isinstance(context, RequestContext)
    return context


def _require_control(info: graphene.ResolveInfo) -> ApiContext:
    """The API context when the caller holds the control token; else an error."""
    context = _context(info)
    if not context.authorized:
        raise GraphQLError(
            "unauthorized: mutations need the header 'Authorization: Bearer <control token>'"
        )
    return context.api


def _control(api: ApiContext) -> StreamControl:
    """The control plane, or a clear error in the ``api`` role (no readers here)."""
    control = api.control
    if control is None:
        raise GraphQLError(
            "streams are not managed by this process (role api); send mutations to the "
            "ingest process"
        )
    return control


def _refresh_coverage(info: graphene.ResolveInfo) -> None:
    """Answers from memory never read the store, so they have a query actor refresh the
    stored-coverage snapshot (which streams exist) when it is stale."""
    api = _context(info).api
    board = api.history.board
    if api.queries is None or board.refresh_task is not None or not board.stale():
        return
    task = asyncio.ensure_future(api.queries.run(board.fresh))
    board.refresh_task = task  # also keeps the task referenced until it is done

    def done(finished: asyncio.Future[Any]) -> None:
        board.refresh_task = None
        if not finished.cancelled() and finished.exception() is not None:
            logger.debug("Coverage refresh failed: %s", finished.exception())

    task.add_done_callback(done)


async def _on_pool(
    info: graphene.ResolveInfo, fn: Callable[[Store], T], key: tuple[Any, ...] | None = None
) -> T:
    """Run ``fn(store)`` on the query pool; identical in-flight questions (``key``) share
    one store call."""
    queries = _context(info).api.queries
    if queries is None:
        raise StoreUnavailable("this process runs no query pool")
    return await queries.run(fn, key=key)


# --- output types -----------------------------------------------------------------


class Temperature(graphene.ObjectType):  # type: ignore[misc]
    """One reading. ``time`` and ``timestamp`` are the same instant (both names are in use)."""

    time = graphene.DateTime(required=True, description="Instant of the reading (UTC).")
    timestamp = graphene.DateTime(required=True, description="Same instant as `time`.")
    value = graphene.Float(required=True, description="Temperature value.")
    stream = graphene.String(required=True, description="Stream the reading came from.")

    @staticmethod
    def resolve_time(root: Reading, _info: graphene.ResolveInfo) -> datetime:
        return root.time

    @staticmethod
    def resolve_timestamp(root: Reading, _info: graphene.ResolveInfo) -> datetime:
        return root.time


class TemperatureStatistics(graphene.ObjectType):  # type: ignore[misc]
    """Aggregate of a window; min/max/mean are null when count is 0."""

    min = graphene.Float()
    max = graphene.Float()
    mean = graphene.Float()
    count = graphene.Int(required=True)


class TemperatureSeriesBucket(graphene.ObjectType):  # type: ignore[misc]
    """One interval of a series: its start and the aggregate of its readings."""

    time = graphene.DateTime(required=True, description=(
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
    """Rolling mean of the newest ``windowSize`` readings; null when there are none."""

    value = graphene.Float()
    window_size = graphene.Int(required=True)
    count = graphene.Int(required=True, description="Readings averaged (<= windowSize).")
    stream = graphene.String(description="The stream, or null for all streams.")


_SCALARS: dict[str, Any] = {
    "String": graphene.String,
    "Float": graphene.Float,
    "Int": graphene.Int,
    "DateTime": graphene.DateTime,
    "Boolean": graphene.Boolean,
}


def _stream_resolver(spec: StreamField) -> Callable[[Any, graphene.ResolveInfo], Any]:
    def resolve(root: Any, _info: graphene.ResolveInfo) -> Any:
        if isinstance(root, StreamStats):
            return spec.read(root)
        return getattr(root, spec.name, None)  # a StoredStream knows only its name

    return resolve


def _alarms(info: graphene.ResolveInfo) -> AlarmsApi:
    alarms = _context(info).api.alarms
    if alarms is None:
        raise GraphQLError("alarms are not available in this process")
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
    """``status``: "on" or "off"; ``stream``: one stream (default: every stream)."""

    status = graphene.String(required=True)
    stream = graphene.String()


class ToggleFeedPayload(graphene.ObjectType):  # type: ignore[misc]
    """The status asked for and the streams it was applied to."""

    status = graphene.String(required=True)
    streams = graphene.List(graphene.NonNull(Stream), required=True)


AddStreamInput = type("AddStreamInput", (graphene.InputObjectType,), {
    "__doc__": "A feed to subscribe to (protocol: " + ", ".join(PROTOCOLS) + ").",
    **{
        spec.name: _SCALARS[json_schema_type(spec.python_type).capitalize()](
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
        Temperature, stream=graphene.String(), description="The newest reading."
    )
    temperature_statistics = graphene.Field(
        graphene.NonNull(TemperatureStatistics),
        after=graphene.DateTime(),
        before=graphene.DateTime(),
        stream=graphene.String(),
        description="min/max/mean/count over an inclusive window (either bound optional).",
    )
    temperature_series = graphene.Field(
        graphene.NonNull(TemperatureSeries),
        after=graphene.DateTime(required=True),
        before=graphene.DateTime(required=True),
        points=graphene.Int(default_value=500),
        stream=graphene.String(),
        description=("min/max/mean/count per interval over an inclusive window, at most "
                     "`points` (1 to 10,000) intervals; the values of InfluxQL's "
                     "MIN/MAX/MEAN/COUNT ... GROUP BY time(interval) over the readings."),
    )
    temperature_measurements = graphene.Field(
        graphene.NonNull(graphene.List(graphene.NonNull(Temperature))),
        after=graphene.DateTime(),
        before=graphene.DateTime(),
        last=graphene.Int(),
        limit=graphene.Int(),
        stream=graphene.String(),
        description="Readings in a window, oldest first; no arguments: the last 2 seconds.",
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
        after=graphene.DateTime(),
        before=graphene.DateTime(),
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
        return _on_pool(info, lambda store: store.current(stream), ("current", stream))

    @staticmethod
    def resolve_temperature_statistics(
        _root: None,
        info: graphene.ResolveInfo,
        after: datetime | None = None,
        before: datetime | None = None,
        stream: str | None = None,
    ) -> Statistics | Awaitable[Statistics]:
        stream = check_stream(stream)
        after_ns, before_ns = check_window(after, before)
        history = _context(info).api.history
        question = history.statistics_plan(after_ns, before_ns, stream)
        answer = history.statistics_now(question)
        if answer is not None:
            # Held in memory: answered on the IO loop, no query-actor hop.
            _refresh_coverage(info)
            return answer
        return _on_pool(info, lambda store: history.statistics_finish(store, question),
                        ("statistics", after_ns, before_ns, stream))

    @staticmethod
    def resolve_temperature_series(
        _root: None,
        info: graphene.ResolveInfo,
        after: datetime,
        before: datetime,
        points: int = 500,
        stream: str | None = None,
    ) -> Series | Awaitable[Series]:
        stream = check_stream(stream)
        after_ns, before_ns = check_window(after, before)
        assert after_ns is not None and before_ns is not None
        history = _context(info).api.history
        question = history.series_plan(after_ns, before_ns, points, stream)
        answer = history.series_now(question)
        if answer is not None:
            _refresh_coverage(info)
            return answer
        return _on_pool(info, lambda store: history.series_finish(store, question),
                        ("series", after_ns, before_ns, points, stream))

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
        if after_ns is None and before_ns is None and last is None:
            after_ns = time.time_ns() - RECENT_NS

        def fetch(store: Store) -> list[Reading]:
            return store.measurements(after_ns, before_ns, stream, last=last, limit=size)

        key = ("measurements", after_ns, before_ns, stream, last, size)
        result: list[Reading] = await _on_pool(info, fetch, key)
        return result

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


async def _average_from_store(
    info: graphene.ResolveInfo, window_size: int, stream: str | None
) -> AverageValue:
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
        status = str(input.get("status", "")).strip().lower()
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
            protocol=str(input.get("protocol") or "auto"),
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
        description="Every new reading (of one stream, or of all).",
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
    return graphene.Schema(query=Query, mutation=Mutation, subscription=Subscription)
