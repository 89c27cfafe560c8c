"""What the history layer writes to and reads from a store: rollup points and coverage.

InfluxDB keeps them beside the raw readings, written through the same ``/write``:

- ``temperature_1m`` and ``temperature_1h``, tag ``stream``, fields ``min``, ``max``,
  ``sum`` (floats) and ``count`` (integer), one point per bucket at the bucket's start;
- ``temperature_coverage``, tag ``stream``, integer fields ``from`` and ``until``, one
  point per contiguous range: the rollups of that stream are exact for every bucket
  lying wholly within ``[from, until]``. ``from`` defaults to the point's time and
  ``until`` to the point's time minus 1 ns. The live writer widens ``until`` of its
  range with every write, the backfill widens ``from`` of the range it extends
  downwards; InfluxDB merges the two fields of one point, so neither overwrites the
  other.

SQLite keeps the same in the tables ``rollup_1m``, ``rollup_1h`` and
``rollup_coverage``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tps.history.buckets import Aggregate

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RollupPoint:
    """The full aggregate of one bucket of one stream (rewritten as the bucket grows)."""

    stream: str
    width: int
    start: int
    agg: Aggregate


@dataclass(frozen=True, slots=True)
class CoverageMark:
    """Widen the coverage range of ``stream`` keyed ``at``: set its ``lo`` (field
    ``from``) and/or its inclusive ``until``; None leaves a field as stored.

    Marks only ever widen a range: a later ``lo`` is earlier, a later ``until`` later.
    """

    stream: str
    at: int
    lo: int | None = None
    until: int | None = None


CoverageRange = tuple[int, int, int]
"""A stored range as ``(at, lo, until)``: its key and the inclusive instants it covers."""


@dataclass(frozen=True, slots=True)
class RollupWrite:
    """Rollup points and coverage marks written together (with a batch of readings, or
    alone by the backfill)."""

    points: tuple[RollupPoint, ...] = ()
    coverage: tuple[CoverageMark, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.points or self.coverage)


def coverage_range(at: int, lo: int | None, until: int | None) -> CoverageRange:
    """A stored range with the defaults applied (``lo = at``, ``until = at - 1``)."""
    return (at, at if lo is None else int(lo), at - 1 if until is None else int(until))
