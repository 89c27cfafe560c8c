"""Limits and alarms over HTTP: the facade REST and GraphQL share, and the REST handlers.

:class:`AlarmsApi` is what the HTTP layer needs. Reads of open alarms come from the
keeper's :class:`~tps.actors.alarms.AlarmBoard` (no actor is asked); the history comes
from the store's alarm log through the query pool; acknowledge and shelve are messages
to the keeper, and limits go through the supervisor (it owns the registry they are
persisted in). Everything is awaited off the IO loop.

REST:

- ``GET /api/streams/{name}/limits``, ``PUT`` (the camelCase JSON object; 400 naming
  the field when invalid), ``DELETE`` (204);
- ``GET /api/alarms?active=true&stream=&after=&before=``, ``GET /api/alarms/{id}``
  (with ``history``, its events), ``POST /api/alarms/{id}/acknowledge`` (``{"comment"}``)
  and ``POST /api/alarms/{id}/shelve`` (``{"seconds", "comment"}``).

Changes need the control token (401 without it). Unknown ids and streams are 404, an
alarm already CLEARED is 409, anything malformed is 400 - never a 5xx.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pykka
import tornado.web

from tps.actors.alarms import AlarmBoard, AlarmKeeperProxy, AlarmView
from tps.actors.supervisor import SupervisorProxy
from tps.alarms.lifecycle import check_comment, check_shelve_seconds
from tps.alarms.limits import FIELDS, Limits, parse_limits
from tps.alarms.model import AlarmEvent, AlarmSnapshot
from tps.alarms.query import history_window, select_alarms
from tps.api.context import ApiContext
from tps.api.control import CALL_TIMEOUT, FutureWaiter
from tps.api.errors import ApiError, from_tps_error
from tps.api.rest import ControlHandler, json_object_body
from tps.errors import AlarmClosed, AlarmsUnavailable, InvalidArgument, TPSError, UnknownAlarm
from tps.model import datetime_to_ns
from tps.store.alarm_log import MAX_EVENTS, AlarmLog, InfluxAlarmLog, SqliteAlarmLog
from tps.store.base import Store
from tps.store.influx import InfluxStore
from tps.store.sqlite import SqliteStore

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
MAX_ID_CHARS = 64
_ALARM_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
Route = tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]


class _LogsByStore:
    """One alarm log per query actor's store, made on first use (by that actor's thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logs: weakref.WeakKeyDictionary[Any, AlarmLog] = weakref.WeakKeyDictionary()

    def __call__(self, store: Store) -> AlarmLog:
        with self._lock:
            log = self._logs.get(store)
            if log is None:
                if isinstance(store, InfluxStore):
                    log = InfluxAlarmLog(store)
                elif isinstance(store, SqliteStore):
                    log = SqliteAlarmLog(store.path)
                else:
                    raise TypeError(f"no alarm log for {type(store).__name__}")
                self._logs[store] = log
            return log


class AlarmsApi:
    """Limits and alarms for the HTTP layer (see the module docstring).

    ``board``/``keeper`` are None in a process that evaluates no limits (role ``api``):
    open alarms then come from the store, and changes answer AlarmsUnavailable.
    """

    def __init__(self, ctx: ApiContext, *, board: AlarmBoard | None,
                 keeper: AlarmKeeperProxy | None,
                 health: Callable[[], dict[str, Any]] | None = None) -> None:
        self._ctx = ctx
        self._board = board
        self._keeper = keeper
        self._health = health
        self._logs = _LogsByStore()

    def health(self) -> dict[str, Any] | None:
        """The alarm part of ``/health`` (None where no keeper runs)."""
        return self._health() if self._health is not None else None

    @property
    def waiter(self) -> FutureWaiter:
        """The context's waiter for pykka futures."""
        return self._ctx.waiter

    def view(self) -> AlarmView | None:
        """The keeper's latest view (None in a process without one)."""
        return self._board.view if self._board is not None else None

    def limits_of(self, stream: str) -> Limits | None:
        """The limits a stream is evaluated against, as the keeper last published them."""
        view = self.view()
        return view.limits.get(stream) if view is not None else None

    def state_of(self, stream: str) -> str:
        """``Stream.alarmState``: OK, WARNING, CRITICAL or STALE."""
        view = self.view()
        return str(view.state_of(stream)) if view is not None else "OK"

    async def alarms(self, *, active: bool | None = None, stream: str | None = None,
                     after_ns: int | None = None, before_ns: int | None = None
                     ) -> list[AlarmSnapshot]:
        """``alarms(active, stream, after, before)`` (see :mod:`tps.alarms.query`)."""
        view = self.view()
        now = time.time_ns()
        known = [*view.open, *view.recent] if view is not None else []
        events: list[AlarmEvent] = []
        if active is not True or view is None:
            if active is True:
                events = await self._store(lambda log: log.latest(), ("alarms-latest",))
            else:
                lower, _ = history_window(after_ns, before_ns, now)
                events = await self._store(
                    lambda log: log.events(lower, None, stream=stream, limit=MAX_EVENTS),
                    ("alarm-events", lower, stream))
        return select_alarms(known, events, active=active, stream=stream, after_ns=after_ns,
                             before_ns=before_ns, now_ns=now)

    async def alarm(self, alarm_id: str) -> tuple[AlarmSnapshot, list[AlarmEvent]]:
        """One alarm and its history (every event, oldest first); UnknownAlarm."""
        check_alarm_id(alarm_id)
        history = await self._store(lambda log: log.events(alarm_id=alarm_id),
                                    ("alarm-history", alarm_id))
        view = self.view()
        snapshot = view.find(alarm_id) if view is not None else None
        if snapshot is None and history:
            snapshot = max(history, key=lambda e: e.seq).alarm
        if snapshot is None:
            raise UnknownAlarm(alarm_id)
        return snapshot, history

    def _known(self, alarm_id: str) -> None:
        """Refuse ids the keeper's view does not hold before bothering the keeper (the
        view is published before anyone can learn a new id)."""
        check_alarm_id(alarm_id)
        view = self.view()
        if view is None:
            return
        snapshot = view.find(alarm_id)
        if snapshot is None:
            raise UnknownAlarm(alarm_id)
        if not snapshot.is_open:
            raise AlarmClosed(alarm_id)

    async def acknowledge(self, alarm_id: str, comment: str | None) -> AlarmSnapshot:
        """Acknowledge through the keeper."""
        self._known(alarm_id)
        comment = check_comment(comment)
        snapshot: AlarmSnapshot = await self.waiter.wait(
            self._require_keeper().acknowledge(alarm_id, comment), timeout=CALL_TIMEOUT)
        return snapshot

    async def shelve(self, alarm_id: str, seconds: object, comment: str | None
                     ) -> AlarmSnapshot:
        """Shelve through the keeper."""
        self._known(alarm_id)
        checked = check_shelve_seconds(seconds)
        comment = check_comment(comment)
        snapshot: AlarmSnapshot = await self.waiter.wait(
            self._require_keeper().shelve(alarm_id, checked, comment), timeout=CALL_TIMEOUT)
        return snapshot

    async def get_limits(self, stream: str) -> Limits | None:
        """The stream's limits (UnknownStream), from the supervisor."""
        supervisor = self._require_supervisor()
        limits: Limits | None = await self.waiter.wait(supervisor.get_limits(stream),
                                                       timeout=CALL_TIMEOUT)
        return limits

    async def set_limits(self, stream: str, limits: Limits | None) -> Limits | None:
        """Replace or clear the stream's limits (persisted by the supervisor)."""
        supervisor = self._require_supervisor()
        result: Limits | None = await self.waiter.wait(supervisor.set_limits(stream, limits),
                                                       timeout=CALL_TIMEOUT)
        if self._keeper is not None:
            # Answer once the keeper applied it, so a GET right after sees the change.
            await self.waiter.wait(self._keeper.sync(), timeout=CALL_TIMEOUT)
        return result

    def _require_keeper(self) -> AlarmKeeperProxy:
        if self._keeper is None:
            raise AlarmsUnavailable(f"this TPS process runs role={self._ctx.settings.role} "
                                    "and evaluates no limits; use the ingest process")
        return self._keeper

    def _require_supervisor(self) -> SupervisorProxy:
        if self._ctx.supervisor is None or self._keeper is None:
            raise AlarmsUnavailable(f"this TPS process runs role={self._ctx.settings.role} "
                                    "and has no streams; use the ingest process")
        return self._ctx.supervisor

    async def _store(self, fn: Any, key: Any) -> list[AlarmEvent]:
        queries = self._ctx.queries
        if queries is None:
            # The ingest role has no query pool: it answers from the keeper's memory
            # (open and recently cleared alarms) and leaves the history to the api role.
            return []
        logs = self._logs

        def ask(store: Store) -> list[AlarmEvent]:
            result: list[AlarmEvent] = fn(logs(store))
            return result

        return await queries.run(ask)


def check_alarm_id(alarm_id: object) -> str:
    """Ids are short and plain (TPS makes 16 hex digits); anything else names no alarm
    (UnknownAlarm) and never reaches a store query."""
    if not isinstance(alarm_id, str) or not _ALARM_ID.fullmatch(alarm_id):
        raise UnknownAlarm(str(alarm_id)[:MAX_ID_CHARS])
    return alarm_id


def limits_json(limits: Limits | None) -> dict[str, Any]:
    """The REST/GraphQL shape of a stream's limits (every field null when none)."""
    if limits is None:
        return dict.fromkeys(FIELDS)
    return limits.to_json()


# --- REST -------------------------------------------------------------------------------


def _json_body(handler: ControlHandler, *, required: bool) -> dict[str, Any]:
    body = handler.body  # streamed in after the token check (ControlHandler.prepare)
    if not body and not required:
        return {}
    return json_object_body(handler.request.headers.get("Content-Type"), body, MAX_BODY_BYTES)


def _refuse(exc: TPSError) -> ApiError:
    """Alarm errors as HTTP: 400 naming the field, 404, 409, 503."""
    if isinstance(exc, InvalidArgument):
        return ApiError(400, str(exc), field=exc.argument)
    if isinstance(exc, UnknownAlarm):
        return ApiError(404, str(exc))
    if isinstance(exc, AlarmClosed):
        return ApiError(409, str(exc))
    if isinstance(exc, AlarmsUnavailable):
        return ApiError(503, str(exc))
    return from_tps_error(exc)


class _AlarmHandler(ControlHandler):
    """Plumbing shared by the alarm handlers."""

    alarms: AlarmsApi
    body_limit = MAX_BODY_BYTES

    def initialize(self, ctx: ApiContext, alarms: AlarmsApi) -> None:  # type: ignore[override]
        """Receive the API context and the alarms facade from the route table."""
        super().initialize(ctx)
        self.alarms = alarms

    async def run(self, call: Any) -> Any:
        """Await ``call``, mapping errors to HTTP answers."""
        try:
            return await call
        except TPSError as exc:
            raise _refuse(exc) from None
        except pykka.ActorDeadError:
            raise ApiError(503, "alarms are not running (TPS is shutting down)") from None
        except pykka.Timeout:
            raise ApiError(503, f"no answer within {CALL_TIMEOUT:g} s", code="timeout") \
                from None

    def options(self, *_: str) -> None:
        """CORS preflight (PUT too)."""
        origin = self.request.headers.get("Origin")
        if origin and origin in self.ctx.settings.cors_origins:
            self.set_header("Access-Control-Allow-Methods", "GET, PUT, POST, DELETE, OPTIONS")
            self.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
            self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()


class LimitsHandler(_AlarmHandler):
    """``/api/streams/{name}/limits``."""

    async def get(self, name: str) -> None:
        """The stream's limits."""
        self.write_json(limits_json(await self.run(self.alarms.get_limits(name))))

    async def put(self, name: str) -> None:
        """Replace the limits; 400 naming the field when invalid (nothing changes)."""
        self.require_token()
        data = _json_body(self, required=True)
        try:
            limits = parse_limits(data)
        except InvalidArgument as exc:
            raise ApiError(400, str(exc), field=exc.argument) from None
        result = await self.run(self.alarms.set_limits(name, limits))
        logger.info("REST: limits of stream %r set by %s", name, self.client())
        self.write_json(limits_json(result))

    async def delete(self, name: str) -> None:
        """Clear the limits; 204."""
        self.require_token()
        await self.run(self.alarms.set_limits(name, None))
        logger.info("REST: limits of stream %r cleared by %s", name, self.client())
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()


def _query_bool(handler: tornado.web.RequestHandler, name: str) -> bool | None:
    raw = handler.get_query_argument(name, None)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise ApiError(400, f"{name}: expected true or false, got {raw[:40]!r}", field=name)


def _query_time(handler: tornado.web.RequestHandler, name: str) -> int | None:
    raw = handler.get_query_argument(name, None)
    if raw is None or raw == "":
        return None
    try:
        return datetime_to_ns(datetime.fromisoformat(raw.replace("Z", "+00:00")))
    except (ValueError, OverflowError):
        raise ApiError(400, f"{name}: expected an ISO 8601 date-time, got {raw[:40]!r}",
                       field=name) from None


class AlarmsHandler(_AlarmHandler):
    """``GET /api/alarms``."""

    async def get(self) -> None:
        """Alarms, oldest trigger first."""
        stream = self.get_query_argument("stream", None) or None
        if stream is not None and len(stream) > 64:
            raise ApiError(400, "stream: at most 64 characters", field="stream")
        alarms = await self.run(self.alarms.alarms(
            active=_query_bool(self, "active"), stream=stream,
            after_ns=_query_time(self, "after"), before_ns=_query_time(self, "before")))
        self.write_json({"alarms": [alarm.to_json() for alarm in alarms]})


class AlarmHandler(_AlarmHandler):
    """``GET /api/alarms/{id}``: the alarm with its history."""

    async def get(self, alarm_id: str) -> None:
        """The alarm and every event of it."""
        snapshot, history = await self.run(self.alarms.alarm(alarm_id))
        self.write_json({**snapshot.to_json(),
                         "history": [event.to_json() for event in history]})


class AlarmActionHandler(_AlarmHandler):
    """``POST /api/alarms/{id}/acknowledge`` and ``.../shelve``."""

    async def post(self, alarm_id: str, action: str) -> None:
        """Acknowledge or shelve; 200 with the alarm after it."""
        self.require_token()
        data = _json_body(self, required=action == "shelve")
        allowed = {"comment"} if action == "acknowledge" else {"seconds", "comment"}
        for key in data:
            if key not in allowed:
                raise ApiError(400, f"unknown field {key[:64]!r}", field=key[:64])
        comment = data.get("comment")
        if comment is not None and not isinstance(comment, str):
            raise ApiError(400, "comment: must be a string", field="comment")
        if action == "acknowledge":
            snapshot = await self.run(self.alarms.acknowledge(alarm_id, comment))
        else:
            if "seconds" not in data:
                raise ApiError(400, "seconds: is required", field="seconds")
            snapshot = await self.run(self.alarms.shelve(alarm_id, data["seconds"], comment))
        logger.info("REST: alarm %s %s by %s", alarm_id,
                    "acknowledged" if action == "acknowledge" else "shelved",
                    self.client())
        self.write_json(snapshot.to_json())


def routes(ctx: ApiContext, alarms: AlarmsApi) -> list[Route]:
    """The limits and alarm routes."""
    args = {"ctx": ctx, "alarms": alarms}
    return [
        (r"/api/streams/([^/]+)/limits", LimitsHandler, args),
        (r"/api/alarms", AlarmsHandler, args),
        (r"/api/alarms/([^/]+)", AlarmHandler, args),
        (r"/api/alarms/([^/]+)/(acknowledge|shelve)", AlarmActionHandler, args),
    ]

