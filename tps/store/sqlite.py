"""The embedded store: one SQLite file in the data dir, used when no InfluxDB is set.

WAL mode lets the writer and the query actors (each with its own connection) work at
the same time: readers never block the writer and see the last committed batch.
``synchronous=NORMAL`` keeps WAL commits durable across a crash of TPS (only a power
loss can take back the newest commits) while making batch writes fast.

SQL text is only ever assembled from constant fragments with ``?`` placeholders (see
``_window``); every value travels as a bound parameter (hence the S608 waivers).

The table is keyed by (stream, time_ns), so writing the same point twice keeps one row
with the last value - the same idempotence InfluxDB gives. A second index on
(time_ns, stream) serves the queries across all streams in the order TPS promises.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tps.errors import StoreError, StoreUnavailable
from tps.model import Reading, Statistics

logger = logging.getLogger(__name__)

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    stream TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (stream, time_ns)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS readings_by_time ON readings (time_ns, stream);
CREATE TABLE IF NOT EXISTS streams (name TEXT PRIMARY KEY) WITHOUT ROWID;
"""

# Errors that say "not now" rather than "never": the writer retries these.
_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CANTOPEN",
              "SQLITE_PROTOCOL", "SQLITE_READONLY")


class SqliteStore:
    """A :class:`~tps.store.base.Store` in one SQLite file (folder and file are created).

    ``busy_timeout`` is how long a statement waits for another connection's write
    lock before giving up with :class:`StoreUnavailable`.
    """

    def __init__(self, path: Path | str, *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    # --- the Store interface -------------------------------------------------------

    def ensure_ready(self) -> None:
        """Create the folder, the file and the tables when missing."""
        self._connection()

    def ping(self) -> bool:
        """True when the file can be read right now."""
        try:
            self._fetchone("SELECT 1")
        except StoreError:
            return False
        return True

    def write(self, readings: Sequence[Reading]) -> None:
        """Insert-or-replace the batch in one transaction."""
        if not readings:
            return
        rows: list[tuple[str, int, float]] = []
        for reading in readings:
            value = float(reading.value)
            if not math.isfinite(value):
                # SQLite would store NaN as NULL; refuse like the InfluxDB store does.
                raise StoreError(f"cannot write batch of {len(readings)} readings: stream "
                                 f"{reading.stream!r}: value {value!r} is not a finite number")
            if type(reading.time_ns) is not int:
                raise StoreError(f"cannot write batch of {len(readings)} readings: stream "
                                 f"{reading.stream!r}: time_ns {reading.time_ns!r} is not "
                                 "an integer")
            rows.append((reading.stream, reading.time_ns, value))
        names = [(name,) for name in {row[0] for row in rows}]
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR REPLACE INTO readings (stream, time_ns, value) VALUES (?, ?, ?)",
                    rows)
                conn.executemany("INSERT OR IGNORE INTO streams (name) VALUES (?)", names)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except (sqlite3.Error, OverflowError) as exc:
            raise self._error(exc, "write") from exc

    def current(self, stream: str | None = None) -> Reading | None:
        """The newest reading of ``stream``, or of any stream (ties: largest name)."""
        if stream is None:
            row = self._fetchone("SELECT stream, time_ns, value FROM readings "
                                 "ORDER BY time_ns DESC, stream DESC LIMIT 1")
        else:
            row = self._fetchone("SELECT stream, time_ns, value FROM readings WHERE stream = ? "
                                 "ORDER BY time_ns DESC LIMIT 1", (stream,))
        return None if row is None else Reading(row[0], row[1], row[2])

    def statistics(
        self, after_ns: int | None, before_ns: int | None, stream: str | None = None
    ) -> Statistics:
        """COUNT/MIN/MAX/AVG of the inclusive window."""
        window = _window(after_ns, before_ns, stream)
        if window is None:
            return Statistics(count=0, min=None, max=None, mean=None)
        where, params = window
        row = self._fetchone(
            f"SELECT COUNT(value), MIN(value), MAX(value), AVG(value) FROM readings{where}",  # noqa: S608
            params)
        if row is None or not row[0]:
            return Statistics(count=0, min=None, max=None, mean=None)
        return Statistics(count=row[0], min=row[1], max=row[2], mean=row[3])

    def measurements(
        self,
        after_ns: int | None,
        before_ns: int | None,
        stream: str | None = None,
        *,
        last: int | None = None,
        limit: int = 10_000,
    ) -> list[Reading]:
        """Readings of the window oldest first; ``last`` keeps the newest ``last``."""
        count = limit if last is None else min(last, limit)
        window = _window(after_ns, before_ns, stream)
        if count < 1 or window is None:
            return []
        where, params = window
        order = "time_ns ASC, stream ASC" if last is None else "time_ns DESC, stream DESC"
        rows = self._fetchall(
            f"SELECT stream, time_ns, value FROM readings{where} ORDER BY {order} LIMIT ?",  # noqa: S608
            (*params, count))
        if last is not None:
            rows.reverse()
        return [Reading(row[0], row[1], row[2]) for row in rows]

    def average(self, window_size: int, stream: str | None = None) -> float | None:
        """Mean of the newest ``window_size`` readings (ties at the cut: largest names)."""
        if window_size < 1:
            return None
        where, params = _window(None, None, stream) or ("", ())
        row = self._fetchone(
            f"SELECT AVG(value) FROM (SELECT value FROM readings{where} "  # noqa: S608
            "ORDER BY time_ns DESC, stream DESC LIMIT ?)", (*params, window_size))
        return None if row is None or row[0] is None else float(row[0])

    def count(self, stream: str | None = None) -> int:
        """Number of stored readings."""
        where, params = _window(None, None, stream) or ("", ())
        row = self._fetchone(f"SELECT COUNT(*) FROM readings{where}", params)  # noqa: S608
        return 0 if row is None else int(row[0])

    def stream_names(self) -> list[str]:
        """Every stream that has stored readings, sorted."""
        # A small table of names avoids a scan of every reading; the EXISTS keeps out
        # a stream whose rows were all removed by hand.
        rows = self._fetchall(
            "SELECT name FROM streams WHERE EXISTS "
            "(SELECT 1 FROM readings WHERE readings.stream = streams.name) ORDER BY name")
        return [row[0] for row in rows]

    def close(self) -> None:
        """Close the connection. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # --- plumbing ---------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        try:
            if str(self.path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit (isolation_level=None): write() opens its own transaction, and
            # reads never hold one open, so the WAL can be checkpointed.
            conn = sqlite3.connect(str(self.path), timeout=self.busy_timeout,
                                   isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"cannot open SQLite store {str(self.path)!r}: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            conn.close()
            raise self._error(exc, "open") from exc
        self._conn = conn
        return conn

    def _fetchone(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        try:
            row: tuple[Any, ...] | None = self._connection().execute(sql, params).fetchone()
        except (sqlite3.Error, OverflowError) as exc:
            raise self._error(exc, "query") from exc
        return row

    def _fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            rows: list[tuple[Any, ...]] = self._connection().execute(sql, params).fetchall()
        except (sqlite3.Error, OverflowError) as exc:
            raise self._error(exc, "query") from exc
        return rows

    def _error(self, exc: BaseException, what: str) -> StoreError:
        name = getattr(exc, "sqlite_errorname", "") or ""
        message = f"SQLite store {str(self.path)!r}: {what} failed: {exc}"
        if name.startswith(_TRANSIENT):
            return StoreUnavailable(message)
        return StoreError(message)


def _window(
    after_ns: int | None, before_ns: int | None, stream: str | None
) -> tuple[str, tuple[Any, ...]] | None:
    """`` WHERE ...`` and its parameters, or None when the window holds nothing.

    Bounds beyond SQLite's 64-bit integers are clamped (a year-9999 ``before`` is
    simply open); a window that cannot hold any stored time is empty.
    """
    conditions: list[str] = []
    params: list[Any] = []
    if stream is not None:
        conditions.append("stream = ?")
        params.append(stream)
    if after_ns is not None:
        if after_ns > _INT64_MAX:
            return None
        if after_ns > _INT64_MIN:
            conditions.append("time_ns >= ?")
            params.append(int(after_ns))
    if before_ns is not None:
        if before_ns < _INT64_MIN:
            return None
        if before_ns < _INT64_MAX:
            conditions.append("time_ns <= ?")
            params.append(int(before_ns))
    if after_ns is not None and before_ns is not None and after_ns > before_ns:
        return None
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), tuple(params)
