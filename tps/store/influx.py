"""The InfluxDB store over the v1-compatible HTTP API (InfluxDB 1.x, 2.x and 3.x).

Writes are line protocol to ``POST /write?db=...&precision=ns``; reads are InfluxQL to
``POST /query`` with ``epoch=ns``. Each store object keeps one keep-alive connection
(a store is used by one thread at a time, so one connection is the whole pool) and
reconnects transparently when the server closed it.

Errors are split by what the caller should do about them: anything that may work if
tried again (refused connection, timeout, 5xx, 429) is :class:`StoreUnavailable`;
anything InfluxDB rejected on its merits (bad request, bad credentials) is
:class:`StoreError` carrying InfluxDB's own message; a write InfluxDB kept except for
points it will never accept (outside the retention policy, a field type conflict) is
:class:`PartialWrite` with the count it dropped. This module is where InfluxDB's
answers are read; everything above it tells failures apart by type only.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import math
import re
from array import array
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

from tps.errors import PartialWrite, StoreError, StoreUnavailable
from tps.history.buckets import Aggregate, combine
from tps.history.planner import Buckets, Piece, Raw
from tps.history.types import CoverageRange, RollupWrite, coverage_range
from tps.model import Reading, Statistics
from tps.redact import redact_url
from tps.store import influxql
from tps.store.base import StreamArrays
from tps.store.lineprotocol import encode_readings, encode_rollups, is_storable

logger = logging.getLogger(__name__)

_LINE_PROTOCOL = "text/plain; charset=utf-8"
CHUNK_ROWS = 10_000
"""Rows per chunk when a measurements answer is larger (see ``InfluxStore._query``)."""
_FORM = "application/x-www-form-urlencoded"

MAX_POINTS_PER_REQUEST = 50_000
"""Readings per HTTP write (about 2.5 MB), well under InfluxDB's default body limit."""

_PARTIAL_WRITE = "partial write"
"""How InfluxDB (1.x, and 2.x/3.x through the v1 API) starts the error of a write it
kept only in part; the count it dropped follows as ``dropped=N``."""
_DROPPED = re.compile(r"dropped=(\d+)")

Series = dict[str, Any]
"""One series of an InfluxQL JSON answer: ``name``, ``tags``, ``columns``, ``values``."""


class InfluxStore:
    """A :class:`~tps.store.base.Store` backed by InfluxDB's v1 HTTP API.

    ``token`` is sent as ``Authorization: Token ...`` (2.x/3.x); ``username`` and
    ``password`` as HTTP basic auth (1.x, or 2.x v1 authorizations). ``timeout`` bounds
    every request, in seconds.
    """

    def __init__(
        self,
        url: str,
        db: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"InfluxDB URL must be http:// or https://, got {url!r}")
        if not db:
            raise ValueError("InfluxDB database name must not be empty")
        self.url = url.rstrip("/")
        self.shown_url = redact_url(self.url)
        """The URL as messages and logs show it (no credentials or query values)."""
        self.db = db
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Token {token}"
        elif username is not None:
            basic = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {basic}"
        self._conn: http.client.HTTPConnection | None = None
        self._subqueries = True
        self._multi_statements = True
        base = parts.path.rstrip("/")
        self._write_url = f"{base}/write?{urlencode({'db': db, 'precision': 'ns'})}"
        self._query_url = f"{base}/query"
        self._ping_url = f"{base}/ping"

    def __repr__(self) -> str:
        return f"InfluxStore({self.shown_url!r}, {self.db!r})"

    # --- the Store interface -------------------------------------------------------

    def ensure_ready(self) -> None:
        """Create the database when missing (1.x); on 2.x/3.x check that it answers."""
        try:
            self._query(influxql.create_database(self.db), with_db=False)
            return
        except StoreUnavailable:
            raise
        except StoreError as exc:
            # 2.x/3.x refuse CREATE DATABASE (buckets are made elsewhere); the bucket
            # may still exist and be writable, so check it before giving up.
            logger.info("InfluxDB at %s refused CREATE DATABASE %r (%s); checking that "
                        "it exists instead", self.shown_url, self.db, exc)
        probe = influxql.select_measurements(None, None, None, newest=True, limit=1)
        try:
            self._query(probe, missing_ok=False)
        except StoreUnavailable:
            raise
        except StoreError as exc:
            raise StoreError(f"InfluxDB database {self.db!r} at {self.shown_url} is not usable "
                             f"and could not be created: {exc}") from None

    def ping(self) -> bool:
        """True when ``/ping`` answers 2xx right now."""
        try:
            status, _, _ = self._request("GET", self._ping_url, b"", None)
        except StoreError:
            return False
        return 200 <= status < 300

    def write(self, readings: Sequence[Reading], rollups: RollupWrite | None = None) -> None:
        """Write the batch: one request per :data:`MAX_POINTS_PER_REQUEST` readings.

        The whole batch is encoded before anything is sent, so a reading that cannot
        be encoded rejects the batch with nothing written. A batch that fails part-way
        may be retried whole: the points already written are simply overwritten. When
        InfluxDB drops some points of a request (:class:`PartialWrite`), the remaining
        requests are still sent and one ``PartialWrite`` counts every dropped point.

        ``rollups`` travel in the batch's last request, after its readings: whatever
        part of a failed batch InfluxDB kept, the coverage marks never claim more than
        the rollups beside them.
        """
        if not readings:
            if rollups:
                self.write_rollups(rollups)
            return
        try:
            if len(readings) <= MAX_POINTS_PER_REQUEST:
                bodies = [encode_readings(readings)]
            else:
                items = list(readings)
                bodies = [encode_readings(items[start:start + MAX_POINTS_PER_REQUEST])
                          for start in range(0, len(items), MAX_POINTS_PER_REQUEST)]
            if rollups:
                bodies[-1] += b"\n" + encode_rollups(rollups)
        except (ValueError, TypeError) as exc:
            raise StoreError(f"cannot write batch of {len(readings)} readings: {exc}") from exc
        partial: list[PartialWrite] = []
        for body in bodies:
            try:
                self._write_body(body)
            except PartialWrite as exc:
                partial.append(exc)  # the other requests still carry good readings
        if len(partial) == 1:
            raise partial[0]
        if partial:
            raise PartialWrite("; ".join(str(exc) for exc in partial),
                               sum(exc.dropped for exc in partial))

    def _write_body(self, body: bytes) -> None:
        status, error, data = self._request("POST", self._write_url, body, _LINE_PROTOCOL)
        if status == 404 and "not found" in self._message(error, data):
            # The database was dropped (or never made) under us: make it and retry once.
            logger.warning("InfluxDB database %r at %s is missing; creating it and "
                           "retrying the write", self.db, self.shown_url)
            self.ensure_ready()
            status, error, data = self._request("POST", self._write_url, body, _LINE_PROTOCOL)
        self._check(status, error, data, "write")

    def current(self, stream: str | None = None) -> Reading | None:
        """The newest reading of ``stream``, or of any stream (ties: largest name)."""
        if stream is not None and not is_storable(stream):
            return None
        readings = [
            reading
            for series in self._query(influxql.select_current(stream))
            for reading in _readings(series, stream)
        ]
        if not readings:
            return None
        return max(readings, key=_time_then_stream)

    def statistics(
        self, after_ns: int | None, before_ns: int | None, stream: str | None = None
    ) -> Statistics:
        """MIN/MAX/MEAN/COUNT of the inclusive window in one InfluxQL statement."""
        empty = Statistics(count=0, min=None, max=None, mean=None)
        if stream is not None and not is_storable(stream):
            return empty
        try:
            after_ns, before_ns = influxql.clamp_window(after_ns, before_ns)
        except ValueError:
            return empty
        rows = _rows(self._query(influxql.select_statistics(after_ns, before_ns, stream)))
        if not rows or not rows[0]["count"]:
            return empty
        row = rows[0]
        return Statistics(count=int(row["count"]), min=float(row["min"]),
                          max=float(row["max"]), mean=float(row["mean"]))

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
        if count < 1 or (stream is not None and not is_storable(stream)):
            return []
        try:
            after_ns, before_ns = influxql.clamp_window(after_ns, before_ns)
        except ValueError:
            return []
        statement = influxql.select_measurements(
            after_ns, before_ns, stream, newest=last is not None, limit=count)
        chunk = CHUNK_ROWS if count > CHUNK_ROWS else None
        readings = [r for series in self._query(statement, chunk_size=chunk)
                    for r in _readings(series, stream)]
        # InfluxDB orders ties by series key (the escaped name); TPS promises the
        # plain name, and the rows of a DESC query are reversed anyway.
        readings.sort(key=_time_then_stream)
        return readings

    def average(self, window_size: int, stream: str | None = None) -> float | None:
        """Mean of the newest ``window_size`` readings, computed by InfluxDB.

        Servers whose InfluxQL has no subqueries (the first refusal is remembered)
        get the readings fetched and averaged here instead.
        """
        if window_size < 1 or (stream is not None and not is_storable(stream)):
            return None
        if self._subqueries:
            try:
                rows = _rows(self._query(influxql.select_average(window_size, stream)))
            except StoreUnavailable:
                raise
            except StoreError as exc:
                logger.warning("InfluxDB at %s refused a subquery (%s); averaging the "
                               "newest readings in TPS from now on", self.shown_url, exc)
                self._subqueries = False
            else:
                if not rows or rows[0]["mean"] is None:
                    return None
                return float(rows[0]["mean"])
        readings = self.measurements(None, None, stream, last=window_size, limit=window_size)
        return math.fsum(r.value for r in readings) / len(readings) if readings else None

    def count(self, stream: str | None = None) -> int:
        """Number of stored readings, counted by InfluxDB."""
        if stream is not None and not is_storable(stream):
            return 0
        rows = _rows(self._query(influxql.select_count(stream)))
        return int(rows[0]["count"]) if rows else 0

    def stream_names(self) -> list[str]:
        """Every ``stream`` tag value, sorted."""
        rows = _rows(self._query(influxql.show_streams()))
        return sorted(str(row["value"]) for row in rows)

    def close(self) -> None:
        """Close the connection (the next call would open a new one)."""
        self._drop_connection()

    # --- rollups and history --------------------------------------------------------

    def write_rollups(self, rollups: RollupWrite) -> None:
        """Rollup points, then coverage marks, in requests of at most
        :data:`MAX_POINTS_PER_REQUEST` lines (marks last, so they never run ahead)."""
        if not rollups:
            return
        try:
            lines = encode_rollups(rollups).split(b"\n")
        except (ValueError, TypeError) as exc:
            raise StoreError(f"cannot write rollups: {exc}") from exc
        for start in range(0, len(lines), MAX_POINTS_PER_REQUEST):
            self._write_body(b"\n".join(lines[start:start + MAX_POINTS_PER_REQUEST]))

    def newest_times(self, streams: Sequence[str] | None = None) -> dict[str, int]:
        """``LAST(value)`` per stream: the time of its newest reading."""
        return self._edge_times(streams, newest=True)

    def oldest_times(self, streams: Sequence[str] | None = None) -> dict[str, int]:
        """``FIRST(value)`` per stream: the time of its oldest reading."""
        return self._edge_times(streams, newest=False)

    def _edge_times(self, streams: Sequence[str] | None, *, newest: bool) -> dict[str, int]:
        names = _storable(streams)
        if names == []:
            return {}
        out: dict[str, int] = {}
        for series in self._query(influxql.select_edge_times(names, newest=newest)):
            values = series.get("values") or []
            if values:
                out[str((series.get("tags") or {}).get("stream"))] = int(values[0][0])
        return out

    def raw_aggregates(
        self, after_ns: int, before_ns: int, width: int, streams: Sequence[str] | None = None
    ) -> dict[str, list[tuple[int, Aggregate]]]:
        """``GROUP BY time(width), stream`` over the raw readings of the window."""
        names = _storable(streams)
        window = _bounded(after_ns, before_ns)
        if names == [] or window is None:
            return {}
        statement = influxql.select_raw_aggregates(window[0], window[1], width, names)
        return _aggregates_by_stream(self._query(statement))

    def rollups(
        self, width: int, after_ns: int, before_ns: int, streams: Sequence[str] | None = None
    ) -> dict[str, list[tuple[int, Aggregate]]]:
        """The stored rollup points of tier ``width`` starting in the window."""
        names = _storable(streams)
        window = _clamped(after_ns, before_ns)
        if names == [] or window is None:
            return {}
        statement = influxql.select_rollups(width, window[0], window[1], names)
        return _aggregates_by_stream(self._query(statement))

    def coverage(self, streams: Sequence[str] | None = None) -> dict[str, list[CoverageRange]]:
        """Every coverage range per stream, as ``(at, lo, until)``."""
        names = _storable(streams)
        if names == []:
            return {}
        out: dict[str, list[CoverageRange]] = {}
        for series in self._query(influxql.select_coverage(names)):
            stream = str((series.get("tags") or {}).get("stream"))
            ranges = [coverage_range(int(row[0]), row[1], row[2])
                      for row in series.get("values") or []]
            if ranges:
                out[stream] = ranges
        return out

    def aggregate(self, pieces: Sequence[Piece], stream: str | None) -> Aggregate | None:
        """One InfluxQL statement per piece, all in one request; combined here."""
        if stream is not None and not is_storable(stream):
            return None
        statements = [st for st in (_piece_statement(p, stream, None) for p in pieces) if st]
        results = self._query_many(statements)
        return combine(agg for series_list in results
                       for _, agg in _aggregate_rows(series_list))

    def series(
        self, pieces: Sequence[Piece], interval: int, stream: str | None
    ) -> dict[int, Aggregate]:
        """Each piece grouped by ``time(interval)`` (one request); merged per bucket."""
        if stream is not None and not is_storable(stream):
            return {}
        statements = [st for st in (_piece_statement(p, stream, interval) for p in pieces)
                      if st]
        merged: dict[int, list[Aggregate]] = {}
        for series_list in self._query_many(statements):
            for start, agg in _aggregate_rows(series_list):
                merged.setdefault(start, []).append(agg)
        out: dict[int, Aggregate] = {}
        for start in sorted(merged):
            total = combine(merged[start])
            if total is not None:
                out[start] = total
        return out

    def readings_arrays(
        self, after_ns: int, before_ns: int, streams: Sequence[str] | None = None
    ) -> dict[str, StreamArrays]:
        """Raw readings of the window per stream (one series per stream)."""
        names = _storable(streams)
        window = _clamped(after_ns, before_ns)
        if names == [] or window is None:
            return {}
        out: dict[str, StreamArrays] = {}
        for series in self._query(influxql.select_readings(window[0], window[1], names)):
            rows = [row for row in series.get("values") or [] if row[1] is not None]
            stream = str((series.get("tags") or {}).get("stream"))
            out[stream] = (array("q", [row[0] for row in rows]),
                           array("d", [row[1] for row in rows]))
        return out

    def _query_many(self, statements: list[str]) -> list[list[Series]]:
        """Several statements in one request (InfluxQL separates them with ``;``).

        A server that answers fewer results than statements (some 3.x versions take
        one statement per request) is remembered and asked one statement at a time.
        """
        if not statements:
            return []
        if len(statements) == 1 or not self._multi_statements:
            return [self._query(statement) for statement in statements]
        params = {"q": ";\n".join(statements), "epoch": "ns", "db": self.db}
        status, error, data = self._request(
            "POST", self._query_url, urlencode(params).encode(), _FORM)
        self._check(status, error, data, "query")
        try:
            results = json.loads(data)["results"]
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"InfluxDB at {self.shown_url} sent an unreadable query answer: "
                             f"{data[:200]!r}") from exc
        if not isinstance(results, list) or len(results) != len(statements):
            logger.warning("InfluxDB at %s answered %s results for %d statements; asking one "
                           "statement per request from now on", self.shown_url,
                           len(results) if isinstance(results, list) else "no",
                           len(statements))
            self._multi_statements = False
            return [self._query(statement) for statement in statements]
        out: list[list[Series]] = []
        for result in results:
            message = result.get("error")
            if message:
                if str(message).startswith("database not found"):
                    out.append([])
                    continue
                raise StoreError(f"InfluxDB refused query: {message}")
            out.append(result.get("series") or [])
        return out

    # --- extras -----------------------------------------------------------------

    def query(self, statement: str) -> list[Series]:
        """Run one InfluxQL statement on the database; the series of its result.

        For operators and tests; TPS itself only runs the statements built in
        :mod:`tps.store.influxql`.
        """
        return self._query(statement, missing_ok=False)

    def select(self, statement: str) -> list[Series]:
        """Run one read-only InfluxQL statement; a missing database answers no series.

        For TPS's other measurements (the alarm event log, ``tps.store.alarm_log``),
        whose statements are built from quoted literals and checked integers.
        """
        return self._query(statement)

    def write_lines(self, body: bytes) -> None:
        """Write a ready line-protocol body (other measurements than ``temperature``).

        Same rules as :meth:`write`: a missing database is created and the write
        retried once; StoreUnavailable means retry, StoreError means refused.
        """
        if body:
            self._write_body(body)

    # --- HTTP -------------------------------------------------------------------

    def _query(self, statement: str, *, with_db: bool = True,
               missing_ok: bool = True, chunk_size: int | None = None) -> list[Series]:
        """POST one statement; its series. "database not found" reads as no data.

        With ``chunk_size`` the server answers in chunks of that many rows (one JSON
        document per line), parsed one by one: one ``json.loads`` of a 100,000-row
        answer is a single C call that holds the interpreter lock for tens of ms, and
        the IO loop waits that long. A server that ignores ``chunked`` answers one
        document, which parses the same way.
        """
        params = {"q": statement, "epoch": "ns"}
        if with_db:
            params["db"] = self.db
        if chunk_size is not None:
            params.update(chunked="true", chunk_size=str(chunk_size))
        status, error, data = self._request(
            "POST", self._query_url, urlencode(params).encode(), _FORM)
        self._check(status, error, data, "query")
        documents = data.split(b"\n") if chunk_size is not None else [data]
        series: list[Series] = []
        for document in documents:
            if not document.strip():
                continue
            try:
                answer = json.loads(document)
                result = answer["results"][0]
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise StoreError(f"InfluxDB at {self.shown_url} sent an unreadable query "
                                 f"answer: {document[:200]!r}") from exc
            message = result.get("error")
            if message:
                if missing_ok and str(message).startswith("database not found"):
                    return []
                raise StoreError(f"InfluxDB refused query: {message}")
            series.extend(result.get("series") or [])
        return series

    def _request(
        self, method: str, url: str, body: bytes, content_type: str | None
    ) -> tuple[int, str | None, bytes]:
        """Send one request on the kept-alive connection; (status, error header, body).

        A request that fails on a *reused* connection because the server had closed it
        is sent once more on a fresh one: every TPS request is idempotent (writes
        overwrite the same points), so repeating it is safe.
        """
        headers = dict(self._headers)
        if content_type is not None:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            reused = self._conn is not None
            conn = self._conn or self._connect()
            try:
                conn.request(method, url, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except TimeoutError as exc:
                self._drop_connection()
                raise StoreUnavailable(f"InfluxDB at {self.shown_url} did not answer within "
                                       f"{self.timeout:g} s") from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                stale = isinstance(exc, ConnectionError | http.client.BadStatusLine)
                if reused and stale and attempt == 1:
                    continue
                raise StoreUnavailable(f"InfluxDB at {self.shown_url} is unreachable: "
                                       f"{exc or type(exc).__name__}") from exc
            if response.will_close:
                self._drop_connection()
            return response.status, response.getheader("X-Influxdb-Error"), data
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _connect(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        self._conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    @staticmethod
    def _message(error: str | None, data: bytes) -> str:
        if error:
            return error
        try:
            answer = json.loads(data)
        except ValueError:
            return data[:200].decode(errors="replace").strip()
        if isinstance(answer, dict):
            # 1.x says {"error": ...}; 2.x says {"code": ..., "message": ...}.
            for key in ("error", "message"):
                if answer.get(key):
                    return str(answer[key])
        return data[:200].decode(errors="replace").strip()

    def _check(self, status: int, error: str | None, data: bytes, what: str) -> None:
        if 200 <= status < 300:
            return
        message = self._message(error, data) or http.client.responses.get(status, "")
        if status >= 500 or status == 429:
            raise StoreUnavailable(f"InfluxDB {what} failed with HTTP {status}: {message}")
        if _PARTIAL_WRITE in message:
            dropped = _DROPPED.search(message)
            raise PartialWrite(f"InfluxDB refused part of a {what} (HTTP {status}): {message}",
                               int(dropped.group(1)) if dropped else 0)
        raise StoreError(f"InfluxDB refused {what} (HTTP {status}): {message}")


def _rows(series_list: list[Series]) -> list[dict[str, Any]]:
    """Rows of every series as column-name dicts (tags merged in)."""
    rows: list[dict[str, Any]] = []
    for series in series_list:
        columns = series.get("columns") or []
        tags = series.get("tags") or {}
        for values in series.get("values") or []:
            row = dict(tags)
            row.update(zip(columns, values, strict=False))
            rows.append(row)
    return rows


def _readings(series: Series, stream: str | None) -> list[Reading]:
    """Readings of a ``time, value[, stream]`` series; the stream from a column or tag."""
    columns = series.get("columns") or []
    tag_stream = (series.get("tags") or {}).get("stream", stream)
    value_at = columns.index("value")
    stream_at = columns.index("stream") if "stream" in columns else None
    readings: list[Reading] = []
    for row in series.get("values") or []:
        if row[value_at] is None:
            continue
        name = row[stream_at] if stream_at is not None else tag_stream
        readings.append(Reading(str(name), int(row[0]), float(row[value_at])))
    return readings


def _time_then_stream(reading: Reading) -> tuple[int, str]:
    return reading.time_ns, reading.stream


def _storable(streams: Sequence[str] | None) -> list[str] | None:
    """The streams InfluxDB can hold (None: all streams; ``[]``: none of them can)."""
    if streams is None:
        return None
    return [stream for stream in streams if is_storable(stream)]


def _clamped(after_ns: int, before_ns: int) -> tuple[int | None, int | None] | None:
    try:
        return influxql.clamp_window(after_ns, before_ns)
    except ValueError:
        return None


def _bounded(after_ns: int, before_ns: int) -> tuple[int, int] | None:
    """The window clamped to InfluxDB's range with both bounds explicit: a ``GROUP BY
    time()`` query without an upper bound would stop at now()."""
    lo, hi = max(after_ns, influxql.MIN_TIME_NS), min(before_ns, influxql.MAX_TIME_NS)
    return (lo, hi) if lo <= hi else None


def _piece_statement(piece: Piece, stream: str | None, group_ns: int | None) -> str | None:
    """The statement answering one planner piece, or None when it cannot hold data."""
    if isinstance(piece, Raw):
        window = _bounded(piece.lo, piece.hi)
        if window is None:
            return None
        return influxql.select_raw_aggregate(window[0], window[1], stream, group_ns=group_ns)
    assert isinstance(piece, Buckets)
    window = _bounded(piece.start, piece.end - 1)
    if window is None:
        return None
    return influxql.select_rollup_aggregate(piece.width, window[0], window[1] + 1, stream,
                                            group_ns=group_ns)


def _aggregate_rows(series_list: list[Series]) -> list[tuple[int, Aggregate]]:
    """(time, aggregate) of every ``time, min, max, sum, count`` row with a count."""
    out: list[tuple[int, Aggregate]] = []
    for series in series_list:
        for row in series.get("values") or []:
            if row[4]:
                out.append((int(row[0]), Aggregate(float(row[1]), float(row[2]),
                                                   float(row[3]), int(row[4]))))
    return out


def _aggregates_by_stream(series_list: list[Series]) -> dict[str, list[tuple[int, Aggregate]]]:
    out: dict[str, list[tuple[int, Aggregate]]] = {}
    for series in series_list:
        stream = str((series.get("tags") or {}).get("stream"))
        rows = _aggregate_rows([series])
        if rows:
            out[stream] = rows
    return out
