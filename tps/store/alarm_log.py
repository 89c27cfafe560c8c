"""The alarm event log: every alarm transition, durable in the store TPS already uses.

Both stores answer the same small interface (:class:`AlarmLog`); one conformance suite
runs against each:

- **InfluxDB**: measurement ``alarm_events`` with tags ``stream`` and ``alarm`` (the
  alarm id) and fields ``type``, ``severity``, ``state``, ``seq`` and ``record`` (the
  event as JSON). Each alarm is one series and the book gives every event a distinct
  time, so an event written twice is the same point - replaying is harmless.
  ``LAST("record") ... GROUP BY "alarm"`` gives every alarm's latest event in one query.
- **SQLite**: table ``alarm_events`` keyed by (alarm id, seq), in the same file as the
  readings (WAL mode; each object has its own connection).

Semantics shared by both: times are integer ns, windows inclusive, answers oldest
first; :meth:`AlarmLog.latest` returns each alarm's event with the highest ``seq``.
A record the log cannot read back (damaged by hand) is skipped with a warning rather
than stopping a restart.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from tps.alarms.model import AlarmEvent
from tps.config.settings import Settings
from tps.errors import StoreError
from tps.store import influxql
from tps.store.influx import InfluxStore
from tps.store.lineprotocol import escape_tag_value, is_storable
from tps.store.sqlite import open_connection, sqlite_error

logger = logging.getLogger(__name__)

MEASUREMENT = "alarm_events"
MAX_EVENTS = 10_000
"""The most events one question returns (``limit`` is capped to it)."""

_LATEST = 'SELECT LAST("record") FROM "alarm_events" GROUP BY "alarm"'
_FIELD_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})


class AlarmLog(Protocol):
    """Where alarm events are kept (blocking; one object per thread)."""

    def ensure_ready(self) -> None:
        """Create what is missing. Raises StoreUnavailable/StoreError."""

    def write(self, events: Sequence[AlarmEvent]) -> None:
        """Write every event or raise (StoreUnavailable: retry; StoreError: refused)."""

    def events(self, after_ns: int | None = None, before_ns: int | None = None, *,
               stream: str | None = None, alarm_id: str | None = None,
               limit: int = MAX_EVENTS) -> list[AlarmEvent]:
        """Events in the inclusive window, oldest first, at most ``limit``."""

    def latest(self) -> list[AlarmEvent]:
        """Each alarm's latest event (highest seq), oldest first."""

    def close(self) -> None:
        """Release connections. Idempotent."""


def open_alarm_log(settings: Settings) -> AlarmLog:
    """The alarm log of the configured store (InfluxDB when ``TPS_INFLUX_URL`` is set)."""
    if settings.influx_url:
        return InfluxAlarmLog(InfluxStore(
            settings.influx_url, settings.influx_db, token=settings.influx_token,
            username=settings.influx_username, password=settings.influx_password,
            timeout=settings.influx_timeout))
    return SqliteAlarmLog(settings.data_dir / "tps.sqlite3")


def _record_json(event: AlarmEvent) -> str:
    return json.dumps(event.to_record(), separators=(",", ":"), allow_nan=False)


def _parse(text: Any, where: str) -> AlarmEvent | None:
    try:
        return AlarmEvent.from_record(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("Skipping an unreadable alarm event in %s (%s): %.200r", where, exc, text)
        return None


def _limit(limit: int) -> int:
    return max(1, min(int(limit), MAX_EVENTS))


class InfluxAlarmLog:
    """:class:`AlarmLog` in InfluxDB, over the store's own HTTP connection."""

    def __init__(self, store: InfluxStore) -> None:
        self.store = store

    def ensure_ready(self) -> None:
        """The database is the readings' one: make sure it exists."""
        self.store.ensure_ready()

    def write(self, events: Sequence[AlarmEvent]) -> None:
        """One line-protocol request for the whole batch."""
        if not events:
            return
        lines = []
        for event in events:
            snap = event.alarm
            try:
                tags = f"stream={escape_tag_value(snap.stream)},alarm={escape_tag_value(snap.id)}"
            except ValueError as exc:
                raise StoreError(f"cannot write alarm event of {snap.id!r}: {exc}") from exc
            record = _record_json(event).translate(_FIELD_ESCAPES)
            lines.append(
                f'{MEASUREMENT},{tags} type="{event.type}",severity="{snap.severity}",'
                f'state="{snap.state}",seq={event.seq}i,record="{record}" {event.time_ns}')
        self.store.write_lines("\n".join(lines).encode())

    def events(self, after_ns: int | None = None, before_ns: int | None = None, *,
               stream: str | None = None, alarm_id: str | None = None,
               limit: int = MAX_EVENTS) -> list[AlarmEvent]:
        """``SELECT "record"`` over the window, oldest first."""
        for name in (stream, alarm_id):
            if name is not None and not is_storable(name):
                return []  # no point can carry such a tag value
        try:
            after_ns, before_ns = influxql.clamp_window(after_ns, before_ns)
        except ValueError:
            return []
        conditions = []
        if stream is not None:
            conditions.append(f'"stream" = {influxql.quote_string(stream)}')
        if alarm_id is not None:
            conditions.append(f'"alarm" = {influxql.quote_string(alarm_id)}')
        if after_ns is not None:
            conditions.append(f"time >= {influxql.check_int('after_ns', after_ns)}")
        if before_ns is not None:
            conditions.append(f"time <= {influxql.check_int('before_ns', before_ns)}")
        where = " WHERE " + " AND ".join(conditions) if conditions else ""
        statement = (f'SELECT "record" FROM "{MEASUREMENT}"{where} '  # noqa: S608 - quoted
                     f"ORDER BY time ASC LIMIT {_limit(limit)}")
        return self._events(statement)

    def latest(self) -> list[AlarmEvent]:
        """``LAST("record")`` of every alarm's series."""
        events = self._events(_LATEST)
        events.sort(key=lambda e: e.time_ns)
        return events

    def close(self) -> None:
        """Close the connection."""
        self.store.close()

    def _events(self, statement: str) -> list[AlarmEvent]:
        events = []
        for series in self.store.select(statement):
            for row in series.get("values") or []:
                event = _parse(row[1], f"InfluxDB {self.store.db!r}")
                if event is not None:
                    events.append(event)
        return events


_SCHEMA = """
CREATE TABLE IF NOT EXISTS alarm_events (
    alarm_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time_ns INTEGER NOT NULL,
    stream TEXT NOT NULL,
    type TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (alarm_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alarm_events_by_time ON alarm_events (time_ns);
"""


class SqliteAlarmLog:
    """:class:`AlarmLog` in the embedded store's SQLite file (its own connection)."""

    def __init__(self, path: Path | str, *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None

    def ensure_ready(self) -> None:
        """Create the folder, the file and the table when missing."""
        self._connection()

    def write(self, events: Sequence[AlarmEvent]) -> None:
        """Insert-or-replace the batch in one transaction."""
        if not events:
            return
        rows = [(e.alarm.id, e.seq, e.time_ns, e.alarm.stream, str(e.type), _record_json(e))
                for e in events]
        conn = self._connection()
        try:
            with conn:
                conn.executemany("INSERT OR REPLACE INTO alarm_events "
                                 "(alarm_id, seq, time_ns, stream, type, record) "
                                 "VALUES (?, ?, ?, ?, ?, ?)", rows)
        except (sqlite3.Error, OverflowError) as exc:
            raise _error(self.path, exc, "write") from exc

    def events(self, after_ns: int | None = None, before_ns: int | None = None, *,
               stream: str | None = None, alarm_id: str | None = None,
               limit: int = MAX_EVENTS) -> list[AlarmEvent]:
        """Events of the window, oldest first."""
        conditions: list[str] = []
        params: list[Any] = []
        for column, value in (("stream", stream), ("alarm_id", alarm_id)):
            if value is not None:
                conditions.append(f"{column} = ?")
                params.append(value)
        if after_ns is not None:
            if after_ns > 2**63 - 1:
                return []
            conditions.append("time_ns >= ?")
            params.append(max(after_ns, -(2**63)))
        if before_ns is not None:
            if before_ns < -(2**63):
                return []
            conditions.append("time_ns <= ?")
            params.append(min(before_ns, 2**63 - 1))
        where = " WHERE " + " AND ".join(conditions) if conditions else ""
        rows = self._fetchall(
            f"SELECT record FROM alarm_events{where} "  # noqa: S608 - constant fragments
            "ORDER BY time_ns, alarm_id, seq LIMIT ?", (*params, _limit(limit)))
        return [e for e in (_parse(row[0], str(self.path)) for row in rows) if e is not None]

    def latest(self) -> list[AlarmEvent]:
        """Each alarm's row with the highest seq (SQLite's bare-column MAX)."""
        rows = self._fetchall("SELECT record, MAX(seq) FROM alarm_events GROUP BY alarm_id")
        events = [e for e in (_parse(row[0], str(self.path)) for row in rows) if e is not None]
        events.sort(key=lambda e: e.time_ns)
        return events

    def close(self) -> None:
        """Close the connection. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        conn = open_connection(self.path, self.busy_timeout, _SCHEMA, "SQLite alarm log")
        self._conn = conn
        return conn

    def _fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            rows: list[tuple[Any, ...]] = self._connection().execute(sql, params).fetchall()
        except (sqlite3.Error, OverflowError) as exc:
            raise _error(self.path, exc, "query") from exc
        return rows


def _error(path: Path, exc: BaseException, what: str) -> StoreError:
    return sqlite_error("SQLite alarm log", path, exc, what)
