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

from tps.store.lineprotocol import FIELD_KEY, MEASUREMENT, TAG_KEY

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
