"""Tiers, epoch-aligned buckets, exact aggregates and the series ladder.

A bucket of width ``w`` holds the instants ``[start, start + w)`` with ``start`` a
multiple of ``w`` counted from the Unix epoch - the same alignment as InfluxQL's
``GROUP BY time(w)`` (checked against InfluxDB 1.6: a 7 s grouping labels buckets at
multiples of 7 s since 1970). Floor division keeps instants before 1970 in the right
bucket too.

An :class:`Aggregate` is what a bucket keeps: ``min``, ``max``, ``sum`` and ``count``.
``min``, ``max`` and ``count`` combine exactly; sums are combined with
:func:`math.fsum`, so a mean from many buckets is as close to the mean of a raw scan as
the raw scan's own (naive) sum allows.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tps.errors import InvalidArgument
from tps.model import Reading

logger = logging.getLogger(__name__)

SECOND = 1_000_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

TIERS: tuple[int, ...] = (HOUR, MINUTE)
"""Rollup bucket widths, coarsest first. A 1 d tier was not needed: 30 days are 720
hour buckets, which combine in microseconds in memory and in a few ms in InfluxDB."""

TIER_NAMES = {MINUTE: "1m", HOUR: "1h"}

LADDER_SECONDS: tuple[int, ...] = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
    86400,
)
"""Intervals ``temperatureSeries`` may choose, in seconds (the issue's fixed ladder)."""

MAX_POINTS = 10_000
"""Most buckets one ``temperatureSeries`` answer may ask for."""

MAX_WINDOW_NS = MAX_POINTS * DAY
"""Longest window a query may name (about 27 years): ``MAX_POINTS`` buckets of the
ladder's widest step. Longer windows are refused instead of planned."""


def floor_to(time_ns: int, width: int) -> int:
    """Start of the ``width`` bucket holding ``time_ns``."""
    return time_ns - time_ns % width


def ceil_to(time_ns: int, width: int) -> int:
    """The first bucket boundary at or after ``time_ns``."""
    return -((-time_ns) // width) * width


@dataclass(frozen=True, slots=True)
class Aggregate:
    """min/max/sum/count of a non-empty set of readings."""

    min: float
    max: float
    sum: float
    count: int

    @property
    def mean(self) -> float:
        """sum / count."""
        return self.sum / self.count

    def merge(self, other: Aggregate) -> Aggregate:
        """The aggregate of both sets (disjoint sets: counts add)."""
        return Aggregate(min(self.min, other.min), max(self.max, other.max),
                         math.fsum((self.sum, other.sum)), self.count + other.count)


def of_values(values: Sequence[float]) -> Aggregate:
    """The aggregate of a non-empty sequence of values."""
    return Aggregate(min(values), max(values), math.fsum(values), len(values))


def combine(parts: Iterable[Aggregate | None]) -> Aggregate | None:
    """One aggregate of disjoint parts (None parts are empty); None when all are empty."""
    present = [part for part in parts if part is not None and part.count]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return Aggregate(min(p.min for p in present), max(p.max for p in present),
                     math.fsum(p.sum for p in present), sum(p.count for p in present))


def fold_sorted(
    times: Sequence[int], values: Sequence[float], width: int
) -> list[tuple[int, Aggregate]]:
    """(bucket start, aggregate) of every non-empty ``width`` bucket, oldest first.

    ``times`` must be ascending. Each bucket costs one bisection and C-speed
    ``min``/``max``/``fsum`` over a slice, not a Python step per reading.
    """
    out: list[tuple[int, Aggregate]] = []
    n = len(times)
    i = 0
    while i < n:
        start = times[i] - times[i] % width
        end = bisect_left(times, start + width, i)
        chunk = values[i:end]
        out.append((start, Aggregate(min(chunk), max(chunk), math.fsum(chunk), end - i)))
        i = end
    return out


def window_aggregate(times: Sequence[int], values: Sequence[float], lo: int, hi: int
                     ) -> Aggregate | None:
    """The aggregate of the readings with ``lo <= t <= hi`` (``times`` ascending); None
    when there are none. Two bisections and C-speed ``min``/``max``/``fsum``."""
    i = bisect_left(times, lo)
    j = bisect_right(times, hi, i)
    return of_values(values[i:j]) if i < j else None


def window_grouped(times: Sequence[int], values: Sequence[float], lo: int, hi: int,
                   interval: int) -> list[tuple[int, Aggregate]]:
    """:func:`fold_sorted` of the readings with ``lo <= t <= hi`` (``times`` ascending)."""
    i = bisect_left(times, lo)
    j = bisect_right(times, hi, i)
    return fold_sorted(times[i:j], values[i:j], interval)


def fold_run(times: Sequence[int], values: Sequence[float], widths: Sequence[int]
             ) -> dict[int, list[tuple[int, Aggregate]]]:
    """:func:`fold_sorted` for each of ``widths`` (each a multiple of the smallest, the
    last). A run inside one bucket of the smallest width - a slow stream's readings of
    one flush - is aggregated once and shared by every width."""
    finest = widths[-1]
    first = times[0] - times[0] % finest
    if times[-1] < first + finest:
        agg = Aggregate(min(values), max(values), math.fsum(values), len(times))
        return {width: [(first - first % width, agg)] for width in widths}
    return {width: fold_sorted(times, values, width) for width in widths}


Runs = dict[str, tuple[list[int], list[float]]]
"""Per stream, its readings' times and values in batch order."""


def runs_by_stream(readings: Iterable[Reading]) -> Runs:
    """A batch split per stream (times and values), once for every consumer of it."""
    runs: Runs = {}
    for reading in readings:
        run = runs.get(reading.stream)
        if run is None:
            run = runs[reading.stream] = ([], [])
        run[0].append(reading.time_ns)
        run[1].append(reading.value)
    return runs


def bucket_labels(after_ns: int, before_ns: int, width: int) -> int:
    """How many ``width`` buckets the inclusive window touches (empty ones included)."""
    return before_ns // width - after_ns // width + 1


def check_window_length(after_ns: int, before_ns: int) -> None:
    """Refuse a window longer than :data:`MAX_WINDOW_NS` (InvalidArgument on ``after``)."""
    if before_ns - after_ns > MAX_WINDOW_NS:
        days = (before_ns - after_ns) // DAY
        raise InvalidArgument(
            "after", f"the window spans {days:,} days; at most {MAX_WINDOW_NS // DAY:,} "
            "days can be asked for at once")


def series_interval(after_ns: int, before_ns: int, points: int) -> int:
    """The smallest ladder step (ns) giving at most ``points`` buckets for the window.

    InvalidArgument naming ``points`` when it is outside 1..MAX_POINTS, naming ``after``
    when the window is longer than :data:`MAX_WINDOW_NS`, and naming ``points`` when even
    the widest step needs more buckets than asked for.
    """
    if not 1 <= points <= MAX_POINTS:
        raise InvalidArgument("points", f"must be between 1 and {MAX_POINTS:,}, got {points}")
    check_window_length(after_ns, before_ns)
    for seconds in LADDER_SECONDS:
        width = seconds * SECOND
        if bucket_labels(after_ns, before_ns, width) <= points:
            return width
    needed = bucket_labels(after_ns, before_ns, DAY)
    raise InvalidArgument(
        "points", f"the window needs {needed:,} buckets even at 1 d intervals; ask for "
        f"at least {needed:,} points or a shorter window")
