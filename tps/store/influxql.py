"""InfluxQL statements for the store, built only from validated values.

Nothing a user typed is ever pasted into a statement as is: stream names become
single-quoted string literals (backslash, quote and newline escaped exactly as
InfluxQL's scanner unescapes them), identifiers are double-quoted, times are bare
integers (InfluxQL reads them as epoch nanoseconds) and limits are integers. Each
builder checks the type of every number, so a string cannot slip in where an
integer is expected.

Ordering conventions the store relies on (verified against InfluxDB 1.6): a query
without ``GROUP BY`` merges all series by time, ties ascending by series key with
``ORDER BY time ASC`` and descending with ``ORDER BY time DESC``.
"""

from __future__ import annotations

import logging

from tps.store.lineprotocol import (
    COVERAGE_MEASUREMENT,
    FIELD_KEY,
    MEASUREMENT,
    ROLLUP_MEASUREMENTS,
    TAG_KEY,
)

logger = logging.getLogger(__name__)

MIN_TIME_NS = -(2**63) + 2
"""Earliest instant InfluxDB can store or compare (``models.MinNanoTime``)."""
MAX_TIME_NS = 2**63 - 2
"""Latest instant InfluxDB can store or compare (``models.MaxNanoTime``)."""

_STRING_ESCAPES = str.maketrans({"\\": "\\\\", "'": "\\'", "\n": "\\n"})
_IDENT_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})

_FROM = f'FROM "{MEASUREMENT}"'
_VALUE = f'"{FIELD_KEY}"'
_STREAM = f'"{TAG_KEY}"'


def quote_string(value: str) -> str:
    """``value`` as an InfluxQL string literal: ``'...'`` with ``\\``, ``'``, newline escaped.

    ValueError for a carriage return, which no InfluxQL literal can hold.
    """
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    if "\r" in value:
        # The scanner reads a carriage return as a line break and has no escape for it.
        raise ValueError(f"{value!r}: InfluxQL string literals cannot hold a carriage return")
    return "'" + value.translate(_STRING_ESCAPES) + "'"


def quote_ident(name: str) -> str:
    """``name`` as a double-quoted InfluxQL identifier (database, measurement, key)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"identifier must be a non-empty string, got {name!r}")
    return '"' + name.translate(_IDENT_ESCAPES) + '"'


def check_int(name: str, value: int, *, minimum: int | None = None) -> int:
    """Return ``value`` if it is a real ``int`` (not a bool, float or string) >= minimum."""
    if type(value) is not int:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def clamp_window(after_ns: int | None, before_ns: int | None) -> tuple[int | None, int | None]:
    """Bring finite bounds into InfluxDB's time range; ``(None, None)`` bounds stay open.

    Raises ValueError when the window cannot hold any instant InfluxDB stores (the
    caller answers "empty" without a query).
    """
    if after_ns is not None:
        check_int("after_ns", after_ns)
        if after_ns > MAX_TIME_NS:
            raise ValueError("window starts after the latest storable instant")
        after_ns = None if after_ns <= MIN_TIME_NS else after_ns
    if before_ns is not None:
        check_int("before_ns", before_ns)
        if before_ns < MIN_TIME_NS:
            raise ValueError("window ends before the earliest storable instant")
        before_ns = None if before_ns >= MAX_TIME_NS else before_ns
    if after_ns is not None and before_ns is not None and after_ns > before_ns:
        raise ValueError("window starts after it ends")
    return after_ns, before_ns


def where_clause(
    after_ns: int | None = None, before_ns: int | None = None, stream: str | None = None
) -> str:
    """`` WHERE ...`` for an inclusive window and optional stream, or ``""`` when open.

    Bounds must already be clamped (see :func:`clamp_window`).
    """
    conditions: list[str] = []
    if stream is not None:
        conditions.append(f"{_STREAM} = {quote_string(stream)}")
    if after_ns is not None:
        conditions.append(f"time >= {check_int('after_ns', after_ns)}")
    if before_ns is not None:
        conditions.append(f"time <= {check_int('before_ns', before_ns)}")
    return " WHERE " + " AND ".join(conditions) if conditions else ""


def select_current(stream: str | None) -> str:
    """Newest reading of ``stream``; without a stream, the newest of each stream."""
    if stream is not None:
        return f"SELECT {_VALUE} {_FROM}{where_clause(stream=stream)} ORDER BY time DESC LIMIT 1"
    # One point per series; the store picks the newest (ties: largest name) itself.
    return f"SELECT {_VALUE} {_FROM} GROUP BY {_STREAM} ORDER BY time DESC LIMIT 1"


def select_statistics(after_ns: int | None, before_ns: int | None, stream: str | None) -> str:
    """MIN, MAX, MEAN and COUNT of the window in one statement."""
    return (
        f"SELECT MIN({_VALUE}), MAX({_VALUE}), MEAN({_VALUE}), COUNT({_VALUE}) {_FROM}"
        f"{where_clause(after_ns, before_ns, stream)}"
    )


def select_measurements(
    after_ns: int | None, before_ns: int | None, stream: str | None, *, newest: bool, limit: int
) -> str:
    """Readings of the window with their stream: the oldest ``limit``, or the newest.

    With ``newest`` the rows come newest first (the store reverses them).
    """
    check_int("limit", limit, minimum=1)
    order = "DESC" if newest else "ASC"
    return (
        f"SELECT {_VALUE}, {_STREAM} {_FROM}{where_clause(after_ns, before_ns, stream)}"
        f" ORDER BY time {order} LIMIT {limit}"
    )


def select_average(window_size: int, stream: str | None) -> str:
    """Mean of the newest ``window_size`` readings (a subquery; InfluxDB 1.2+).

    InfluxDB insists the outer query is ordered the same way as the subquery.
    """
    check_int("window_size", window_size, minimum=1)
    # Selecting the stream tag too is what makes InfluxDB order time ties by series
    # (as measurements do); with the field alone, which tied rows survive the LIMIT
    # is arbitrary.
    inner = (
        f"SELECT {_VALUE}, {_STREAM} {_FROM}{where_clause(stream=stream)}"
        f" ORDER BY time DESC LIMIT {window_size}"
    )
    # inner is built above from constants, a quoted literal and a checked int.
    return f"SELECT MEAN({_VALUE}) FROM ({inner}) ORDER BY time DESC"  # noqa: S608


def select_count(stream: str | None) -> str:
    """Number of readings (of one stream or all)."""
    return f"SELECT COUNT({_VALUE}) {_FROM}{where_clause(stream=stream)}"


def show_streams() -> str:
    """Every value of the ``stream`` tag."""
    return f"SHOW TAG VALUES {_FROM} WITH KEY = {_STREAM}"


def create_database(db: str) -> str:
    """``CREATE DATABASE`` (idempotent on InfluxDB 1.x)."""
    return f"CREATE DATABASE {quote_ident(db)}"


# --- rollups and history (issue 10) --------------------------------------------------

_AGG_RAW = (f'MIN({_VALUE}) AS "min", MAX({_VALUE}) AS "max", SUM({_VALUE}) AS "sum", '
            f'COUNT({_VALUE}) AS "count"')
_AGG_ROLLUP = ('MIN("min") AS "min", MAX("max") AS "max", SUM("sum") AS "sum", '
               'SUM("count") AS "count"')


def streams_condition(streams: list[str] | tuple[str, ...] | None) -> str:
    """``("stream" = 'a' OR "stream" = 'b')`` for a list of streams, ``""`` for all."""
    if streams is None:
        return ""
    if not streams:
        raise ValueError("an empty list of streams selects nothing; pass None for all")
    return "(" + " OR ".join(f"{_STREAM} = {quote_string(s)}" for s in streams) + ")"


def _where(after_ns: int | None, before_ns: int | None,
           streams: list[str] | tuple[str, ...] | None) -> str:
    """`` WHERE`` with a streams condition and an inclusive window (bounds clamped)."""
    base = where_clause(after_ns, before_ns)
    tags = streams_condition(streams)
    if not tags:
        return base
    return f" WHERE {tags}" + (" AND " + base.removeprefix(" WHERE ") if base else "")


def duration(width_ns: int) -> str:
    """An InfluxQL duration literal for a whole number of ns (``7200s``, ``1500ms``...)."""
    check_int("width", width_ns, minimum=1)
    for unit, size in (("h", 3_600_000_000_000), ("m", 60_000_000_000),
                       ("s", 1_000_000_000), ("ms", 1_000_000), ("u", 1_000)):
        if width_ns % size == 0:
            return f"{width_ns // size}{unit}"
    return f"{width_ns}ns"


def rollup_measurement(width_ns: int) -> str:
    """The quoted measurement holding ``width_ns`` buckets."""
    try:
        return quote_ident(ROLLUP_MEASUREMENTS[width_ns])
    except KeyError:
        raise ValueError(f"no rollup tier of {width_ns} ns") from None


def select_raw_aggregate(after_ns: int | None, before_ns: int | None, stream: str | None,
                         *, group_ns: int | None = None, by_stream: bool = False) -> str:
    """min/max/sum/count of raw readings in the inclusive window, optionally per
    ``group_ns`` bucket (``GROUP BY time()``, empty buckets left out) and per stream."""
    streams = None if stream is None else [stream]
    return _aggregate_statement(_AGG_RAW, _FROM, _where(after_ns, before_ns, streams),
                                group_ns, by_stream)


def select_raw_aggregates(after_ns: int | None, before_ns: int | None, group_ns: int,
                          streams: list[str] | tuple[str, ...] | None) -> str:
    """min/max/sum/count per ``group_ns`` bucket and stream of raw readings (backfill)."""
    return _aggregate_statement(_AGG_RAW, _FROM, _where(after_ns, before_ns, streams),
                                group_ns, True)


def select_rollup_aggregate(width_ns: int, start_ns: int, end_ns: int, stream: str | None,
                            *, group_ns: int | None = None) -> str:
    """The buckets of tier ``width_ns`` starting in ``[start_ns, end_ns)`` combined (or
    combined per ``group_ns`` bucket)."""
    streams = None if stream is None else [stream]
    where = _where(start_ns, end_ns - 1, streams)
    return _aggregate_statement(_AGG_ROLLUP, f"FROM {rollup_measurement(width_ns)}", where,
                                group_ns, False)


def select_rollups(width_ns: int, after_ns: int | None, before_ns: int | None,
                   streams: list[str] | tuple[str, ...] | None) -> str:
    """The stored rollup points of tier ``width_ns`` starting in the inclusive window."""
    where = _where(after_ns, before_ns, streams)
    source = rollup_measurement(width_ns)
    return f'SELECT "min", "max", "sum", "count" FROM {source}{where} GROUP BY {_STREAM}'  # noqa: S608


def _aggregate_statement(fields: str, source: str, where: str, group_ns: int | None,
                         by_stream: bool) -> str:
    groups = []
    if group_ns is not None:
        groups.append(f"time({duration(group_ns)})")
    if by_stream:
        groups.append(_STREAM)
    group = f" GROUP BY {', '.join(groups)}" if groups else ""
    fill = " fill(none)" if group_ns is not None else ""
    return f"SELECT {fields} {source}{where}{group}{fill}"


def select_edge_times(streams: list[str] | tuple[str, ...] | None, *, newest: bool) -> str:
    """The newest (or oldest) reading's time of every stream."""
    selector = "LAST" if newest else "FIRST"
    where = _where(None, None, streams)
    return f"SELECT {selector}({_VALUE}) {_FROM}{where} GROUP BY {_STREAM}"


def select_coverage(streams: list[str] | tuple[str, ...] | None) -> str:
    """Every coverage range: time (its key), ``from`` and ``until``, per stream."""
    source = quote_ident(COVERAGE_MEASUREMENT)
    where = _where(None, None, streams)
    return f'SELECT "from", "until" FROM {source}{where} GROUP BY {_STREAM}'  # noqa: S608


def select_readings(after_ns: int | None, before_ns: int | None,
                    streams: list[str] | tuple[str, ...] | None) -> str:
    """Raw readings of the inclusive window, one series per stream, oldest first."""
    return (f"SELECT {_VALUE} {_FROM}{_where(after_ns, before_ns, streams)}"
            f" GROUP BY {_STREAM}")
