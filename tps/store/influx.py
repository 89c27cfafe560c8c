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
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

from tps.errors import PartialWrite, StoreError, StoreUnavailable
from tps.model import Reading, Statistics
from tps.store import influxql
from tps.store.lineprotocol import encode_readings, is_storable

logger = logging.getLogger(__name__)

_LINE_PROTOCOL = "text/plain; charset=utf-8"
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
        base = parts.path.rstrip("/")
        self._write_url = f"{base}/write?{urlencode({'db': db, 'precision': 'ns'})}"
        self._query_url = f"{base}/query"
        self._ping_url = f"{base}/ping"

    def __repr__(self) -> str:
        return f"InfluxStore({self.url!r}, {self.db!r})"

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
                        "it exists instead", self.url, self.db, exc)
        probe = influxql.select_measurements(None, None, None, newest=True, limit=1)
        try:
            self._query(probe, missing_ok=False)
        except StoreUnavailable:
            raise
        except StoreError as exc:
            raise StoreError(f"InfluxDB database {self.db!r} at {self.url} is not usable "
                             f"and could not be created: {exc}") from None

    def ping(self) -> bool:
        """True when ``/ping`` answers 2xx right now."""
        try:
            status, _, _ = self._request("GET", self._ping_url, b"", None)
        except StoreError:
            return False
        return 200 <= status < 300

    def write(self, readings: Sequence[Reading]) -> None:
        """Write the batch: one request per :data:`MAX_POINTS_PER_REQUEST` readings.

        The whole batch is encoded before anything is sent, so a reading that cannot
        be encoded rejects the batch with nothing written. A batch that fails part-way
        may be retried whole: the points already written are simply overwritten. When
        InfluxDB drops some points of a request (:class:`PartialWrite`), the remaining
        requests are still sent and one ``PartialWrite`` counts every dropped point.
        """
        if not readings:
            return
        try:
            if len(readings) <= MAX_POINTS_PER_REQUEST:
                bodies = [encode_readings(readings)]
            else:
                items = list(readings)
                bodies = [encode_readings(items[start:start + MAX_POINTS_PER_REQUEST])
                          for start in range(0, len(items), MAX_POINTS_PER_REQUEST)]
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
                           "retrying the write", self.db, self.url)
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
        readings = [r for series in self._query(statement) for r in _readings(series, stream)]
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
                               "newest readings in TPS from now on", self.url, exc)
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
               missing_ok: bool = True) -> list[Series]:
        """POST one statement; its series. "database not found" reads as no data."""
        params = {"q": statement, "epoch": "ns"}
        if with_db:
            params["db"] = self.db
        status, error, data = self._request(
            "POST", self._query_url, urlencode(params).encode(), _FORM)
        self._check(status, error, data, "query")
        try:
            answer = json.loads(data)
            result = answer["results"][0]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise StoreError(f"InfluxDB at {self.url} sent an unreadable query answer: "
                             f"{data[:200]!r}") from exc
        message = result.get("error")
        if message:
            if missing_ok and str(message).startswith("database not found"):
                return []
            raise StoreError(f"InfluxDB refused query: {message}")
        series: list[Series] = result.get("series") or []
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
                raise StoreUnavailable(f"InfluxDB at {self.url} did not answer within "
                                       f"{self.timeout:g} s") from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                stale = isinstance(exc, ConnectionError | http.client.BadStatusLine)
                if reused and stale and attempt == 1:
                    continue
                raise StoreUnavailable(f"InfluxDB at {self.url} is unreachable: "
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
