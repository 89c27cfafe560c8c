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
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tps.errors import StoreError, StoreUnavailable
from tps.history.buckets import Aggregate, combine
from tps.history.planner import Buckets, Piece, Raw
from tps.history.types import CoverageRange, RollupWrite, coverage_range
from tps.model import Reading, Statistics
from tps.store.base import StreamArrays

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
CREATE TABLE IF NOT EXISTS rollup_1m (
    stream TEXT NOT NULL, start_ns INTEGER NOT NULL,
    min REAL NOT NULL, max REAL NOT NULL, sum REAL NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (stream, start_ns)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_1h (
    stream TEXT NOT NULL, start_ns INTEGER NOT NULL,
    min REAL NOT NULL, max REAL NOT NULL, sum REAL NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (stream, start_ns)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_coverage (
    stream TEXT NOT NULL, at_ns INTEGER NOT NULL, from_ns INTEGER, until_ns INTEGER,
    PRIMARY KEY (stream, at_ns)
) WITHOUT ROWID;
"""

_ROLLUP_TABLES = {60_000_000_000: "rollup_1m", 3_600_000_000_000: "rollup_1h"}
_BUCKET_AGGREGATES = ("SELECT time_ns - ((time_ns % ?) + ?) % ? AS b, MIN(value), MAX(value), "
                      "SUM(value), COUNT(value) FROM readings")

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

    def write(self, readings: Sequence[Reading], rollups: RollupWrite | None = None) -> None:
        """Insert-or-replace the batch (and its rollups) in one transaction."""
        if not readings:
            if rollups:
                self.write_rollups(rollups)
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
                if rollups:
                    _insert_rollups(conn, rollups)
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

    # --- rollups and history --------------------------------------------------------

    def write_rollups(self, rollups: RollupWrite) -> None:
        """Rollup points and coverage marks in one transaction."""
        if not rollups:
            return
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                _insert_rollups(conn, rollups)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except (sqlite3.Error, OverflowError) as exc:
            raise self._error(exc, "write") from exc

    def newest_times(self, streams: Sequence[str] | None = None) -> dict[str, int]:
        """MAX(time_ns) per stream (one index probe each)."""
        return self._edge_times(streams, "MAX")

    def oldest_times(self, streams: Sequence[str] | None = None) -> dict[str, int]:
        """MIN(time_ns) per stream (one index probe each)."""
        return self._edge_times(streams, "MIN")

    def _edge_times(self, streams: Sequence[str] | None, fn: str) -> dict[str, int]:
        names = self.stream_names() if streams is None else list(streams)
        out: dict[str, int] = {}
        for name in names:
            row = self._fetchone(
                f"SELECT {fn}(time_ns) FROM readings WHERE stream = ?", (name,))  # noqa: S608
            if row is not None and row[0] is not None:
                out[name] = int(row[0])
        return out

    def raw_aggregates(
        self, after_ns: int, before_ns: int, width: int, streams: Sequence[str] | None = None
    ) -> dict[str, list[tuple[int, Aggregate]]]:
        """GROUP BY stream and ``width`` bucket of the raw readings of the window."""
        out: dict[str, list[tuple[int, Aggregate]]] = {}
        for name in self._names(streams):
            window = _window(after_ns, before_ns, name)
            if window is None:
                return {}
            where, params = window
            sql = (_BUCKET_AGGREGATES
                   + f"{where} GROUP BY b ORDER BY b")
            rows = self._fetchall(sql, (width, width, width, *params))
            if rows:
                out[name] = [(int(r[0]), Aggregate(r[1], r[2], r[3], int(r[4]))) for r in rows]
        return out

    def rollups(
        self, width: int, after_ns: int, before_ns: int, streams: Sequence[str] | None = None
    ) -> dict[str, list[tuple[int, Aggregate]]]:
        """The stored rollup rows of tier ``width`` starting in the window."""
        table = _rollup_table(width)
        out: dict[str, list[tuple[int, Aggregate]]] = {}
        for name in self._names(streams):
            rows = self._fetchall(
                f"SELECT start_ns, min, max, sum, count FROM {table} "  # noqa: S608
                "WHERE stream = ? AND start_ns >= ? AND start_ns <= ? ORDER BY start_ns",
                (name, _clamp64(after_ns), _clamp64(before_ns)))
            if rows:
                out[name] = [(int(r[0]), Aggregate(r[1], r[2], r[3], int(r[4]))) for r in rows]
        return out

    def coverage(self, streams: Sequence[str] | None = None) -> dict[str, list[CoverageRange]]:
        """Every coverage range per stream, as ``(at, lo, until)``."""
        if streams is None:
            rows = self._fetchall("SELECT stream, at_ns, from_ns, until_ns FROM rollup_coverage "
                                  "ORDER BY stream, at_ns")
        else:
            rows = [row for name in streams for row in self._fetchall(
                "SELECT stream, at_ns, from_ns, until_ns FROM rollup_coverage WHERE stream = ? "
                "ORDER BY at_ns", (name,))]
        out: dict[str, list[CoverageRange]] = {}
        for stream, at, lo, until in rows:
            out.setdefault(stream, []).append(coverage_range(int(at), lo, until))
        return out

    def aggregate(self, pieces: Sequence[Piece], stream: str | None) -> Aggregate | None:
        """One statement per piece inside one read transaction (one snapshot)."""
        parts: list[Aggregate] = []
        with self._snapshot():
            for piece in pieces:
                sql, params = _piece_sql(piece, stream, None)
                if not sql:
                    continue
                row = self._fetchone(sql, params)
                if row is not None and row[4]:
                    parts.append(Aggregate(row[1], row[2], row[3], int(row[4])))
        return combine(parts)

    def series(
        self, pieces: Sequence[Piece], interval: int, stream: str | None
    ) -> dict[int, Aggregate]:
        """Each piece grouped by ``interval`` bucket, merged per bucket."""
        merged: dict[int, list[Aggregate]] = {}
        with self._snapshot():
            for piece in pieces:
                sql, params = _piece_sql(piece, stream, interval)
                if not sql:
                    continue
                for row in self._fetchall(sql, params):
                    if row[4]:
                        merged.setdefault(int(row[0]), []).append(
                            Aggregate(row[1], row[2], row[3], int(row[4])))
        out: dict[int, Aggregate] = {}
        for start in sorted(merged):
            total = combine(merged[start])
            if total is not None:
                out[start] = total
        return out

    def readings_arrays(
        self, after_ns: int, before_ns: int, streams: Sequence[str] | None = None
    ) -> dict[str, StreamArrays]:
        """Raw readings of the window per stream."""
        out: dict[str, StreamArrays] = {}
        for name in self._names(streams):
            window = _window(after_ns, before_ns, name)
            if window is None:
                return {}
            where, params = window
            rows = self._fetchall(
                f"SELECT time_ns, value FROM readings{where} ORDER BY time_ns", params)  # noqa: S608
            if rows:
                out[name] = (array("q", [r[0] for r in rows]), array("d", [r[1] for r in rows]))
        return out

    def _names(self, streams: Sequence[str] | None) -> list[str]:
        return self.stream_names() if streams is None else list(streams)

    def _snapshot(self) -> _ReadTransaction:
        return _ReadTransaction(self)

    # --- plumbing ---------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        conn = open_connection(self.path, self.busy_timeout, _SCHEMA, "SQLite store")
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
        return sqlite_error("SQLite store", self.path, exc, what)


def sqlite_error(label: str, path: Path | str, exc: BaseException, what: str) -> StoreError:
    """``exc`` from SQLite as a TPS error: StoreUnavailable when it may pass (busy,
    locked, disk full or unreadable), else StoreError; the message names ``label`` and
    ``path``."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    message = f"{label} {str(path)!r}: {what} failed: {exc}"
    if name.startswith(_TRANSIENT):
        return StoreUnavailable(message)
    return StoreError(message)


def open_connection(path: Path | str, busy_timeout: float, schema: str,
                    label: str) -> sqlite3.Connection:
    """An autocommit WAL connection to ``path`` with ``schema`` applied (the directory
    made first); StoreUnavailable when it cannot be opened.

    Autocommit (isolation_level=None): writers open their own transactions and reads
    never hold one open, so the WAL can be checkpointed.
    """
    try:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None,
                               check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise StoreUnavailable(f"cannot open {label} {str(path)!r}: {exc}") from exc
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(schema)
    except sqlite3.Error as exc:
        conn.close()
        raise sqlite_error(label, path, exc, "open") from exc
    return conn


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


class _ReadTransaction:
    """``BEGIN`` ... ``COMMIT`` around several reads, so they see one snapshot."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    def __enter__(self) -> None:
        try:
            self._store._connection().execute("BEGIN")
        except sqlite3.Error as exc:
            raise self._store._error(exc, "query") from exc

    def __exit__(self, *_exc: object) -> None:
        conn = self._store._conn
        if conn is not None and conn.in_transaction:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error:
                logger.debug("Ending a read transaction failed", exc_info=True)


def _clamp64(value: int) -> int:
    return max(_INT64_MIN, min(_INT64_MAX, value))


def _rollup_table(width: int) -> str:
    try:
        return _ROLLUP_TABLES[width]
    except KeyError:
        raise ValueError(f"no rollup tier of {width} ns") from None


def _insert_rollups(conn: sqlite3.Connection, rollups: RollupWrite) -> None:
    by_table: dict[str, list[tuple[str, int, float, float, float, int]]] = {}
    for p in rollups.points:
        agg = p.agg
        if not (math.isfinite(agg.min) and math.isfinite(agg.max) and math.isfinite(agg.sum)):
            raise StoreError(f"stream {p.stream!r}: rollup at {p.start} is not finite")
        by_table.setdefault(_rollup_table(p.width), []).append(
            (p.stream, p.start, agg.min, agg.max, agg.sum, agg.count))
    for table, rows in by_table.items():
        conn.executemany(
            f"INSERT OR REPLACE INTO {table} (stream, start_ns, min, max, sum, count) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?)", rows)
    if rollups.coverage:
        # Like InfluxDB's merge of a point's fields: a mark sets only what it names.
        conn.executemany(
            "INSERT INTO rollup_coverage (stream, at_ns, from_ns, until_ns) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (stream, at_ns) DO UPDATE SET "
            "from_ns = COALESCE(excluded.from_ns, from_ns), "
            "until_ns = COALESCE(excluded.until_ns, until_ns)",
            [(m.stream, m.at, m.lo, m.until) for m in rollups.coverage])


def _piece_sql(piece: Piece, stream: str | None, group: int | None
               ) -> tuple[str, tuple[Any, ...]]:
    """SQL answering one planner piece: rows of (bucket, min, max, sum, count)."""
    if isinstance(piece, Raw):
        window = _window(piece.lo, piece.hi, stream)
        if window is None:
            return "", ()
        where, params = window
        source, column = "readings", "time_ns"
        agg = "MIN(value), MAX(value), SUM(value), COUNT(value)"
    else:
        assert isinstance(piece, Buckets)
        conditions = ["start_ns >= ?", "start_ns < ?"]
        params = (_clamp64(piece.start), _clamp64(piece.end))
        if stream is not None:
            conditions.insert(0, "stream = ?")
            params = (stream, *params)
        where = " WHERE " + " AND ".join(conditions)
        source, column = _rollup_table(piece.width), "start_ns"
        agg = "MIN(min), MAX(max), SUM(sum), SUM(count)"
    if group is None:
        return f"SELECT 0, {agg} FROM {source}{where}", params  # noqa: S608
    bucket = f"{column} - (({column} % ?) + ?) % ?"
    return (f"SELECT {bucket} AS b, {agg} FROM {source}{where} GROUP BY b ORDER BY b",  # noqa: S608
            (group, group, group, *params))
