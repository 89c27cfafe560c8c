"""Which parts of a window come from rollups and which from raw readings (pure).

A window ``[after, before]`` (inclusive ns, as every TPS window) is split into
*pieces*, oldest first:

- :class:`Buckets` ``(width, start, end)``: the whole ``width`` buckets starting in
  ``[start, end)``; ``start`` and ``end`` are multiples of ``width``;
- :class:`Raw` ``(lo, hi)``: raw readings with ``lo <= t <= hi``.

The coarsest tier whose whole buckets fit is used first; what is left at the edges,
and whatever the rollups do not cover yet, is tried with the next finer tier and
finally read raw. The pieces are disjoint and together are exactly the window, so
their aggregates combine into the window's aggregate.

:class:`Coverage` is where rollups are exact: a set of half-open ``[lo, hi)`` ranges. A
bucket may be used only when it lies wholly inside one range.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tps.history.buckets import TIERS, ceil_to, floor_to

logger = logging.getLogger(__name__)

FOREVER = 2**63
"""An open upper end of a coverage range (beyond every storable instant)."""


@dataclass(frozen=True, slots=True)
class Raw:
    """Raw readings with ``lo <= t <= hi``."""

    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class Buckets:
    """Whole ``width`` buckets starting at ``start, start + width, ... < end``."""

    width: int
    start: int
    end: int


Piece = Raw | Buckets


class Coverage:
    """Disjoint, sorted, half-open ``[lo, hi)`` ranges; immutable once built."""

    __slots__ = ("_his", "_los", "ranges")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted(r for r in ranges if r[0] < r[1]):
            if merged and lo <= merged[-1][1]:
                if hi > merged[-1][1]:
                    merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        self.ranges: tuple[tuple[int, int], ...] = tuple(merged)
        self._los = [lo for lo, _ in merged]
        self._his = [hi for _, hi in merged]

    def __repr__(self) -> str:
        return f"Coverage({list(self.ranges)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Coverage) and self.ranges == other.ranges

    def __hash__(self) -> int:
        return hash(self.ranges)

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def union(self, other: Coverage | Iterable[tuple[int, int]]) -> Coverage:
        """Both coverages together."""
        extra = other.ranges if isinstance(other, Coverage) else tuple(other)
        return Coverage((*self.ranges, *extra))

    def intersect(self, other: Coverage) -> Coverage:
        """Where both cover."""
        out: list[tuple[int, int]] = []
        a, b = self.ranges, other.ranges
        i = j = 0
        while i < len(a) and j < len(b):
            lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
            if lo < hi:
                out.append((lo, hi))
            if a[i][1] < b[j][1]:
                i += 1
            else:
                j += 1
        return Coverage(out)

    def covers(self, lo: int, hi: int) -> bool:
        """True when ``[lo, hi)`` lies inside one range."""
        index = bisect_right(self._los, lo) - 1
        return index >= 0 and self._his[index] >= hi

    def clip(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The covered parts of ``[lo, hi)``, oldest first."""
        out: list[tuple[int, int]] = []
        index = max(0, bisect_right(self._los, lo) - 1)
        ranges = self.ranges
        while index < len(ranges) and ranges[index][0] < hi:
            r_lo, r_hi = ranges[index]
            c_lo, c_hi = max(lo, r_lo), min(hi, r_hi)
            if c_lo < c_hi:
                out.append((c_lo, c_hi))
            index += 1
        return out

    def missing(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The parts of ``[lo, hi)`` not covered, oldest first."""
        out: list[tuple[int, int]] = []
        cursor = lo
        for c_lo, c_hi in self.clip(lo, hi):
            if c_lo > cursor:
                out.append((cursor, c_lo))
            cursor = c_hi
        if cursor < hi:
            out.append((cursor, hi))
        return out


LATE_NS = 5 * 60 * 1_000_000_000
"""How long before its coverage's end a span must end to be final (see :func:`is_final`)."""


def is_final(coverage: Coverage, lo: int, hi: int) -> bool:
    """True when what the store holds of ``[lo, hi)`` can no longer change, so it may be
    kept in memory (:mod:`tps.history.stored`, :mod:`tps.history.kept_raw`).

    Inside a coverage range the writer has stored every reading and rollup up to the
    range's end. The span must also end :data:`LATE_NS` before it: in cluster mode a
    redelivered message brings readings older than the newest stored one, about
    ``WRITER_ACK_WAIT`` late (:mod:`tps.cluster.rollups`), and their hours are
    recomputed. ``coverage`` should be a settled one
    (:meth:`~tps.history.answers.CoverageBoard.settled`)."""
    return coverage.covers(lo, hi + LATE_NS)


EVERYTHING = Coverage([(-FOREVER, FOREVER)])
NOTHING = Coverage()


def plan(
    after_ns: int, before_ns: int, coverage: Coverage, tiers: Sequence[int] = TIERS
) -> list[Piece]:
    """Split the inclusive window into pieces (see the module docstring), oldest first.

    ``tiers`` are the usable bucket widths, coarsest first, each a multiple of the next.
    An empty window (``after > before``) has no pieces.
    """
    out: list[Piece] = []
    _plan(after_ns, before_ns, 0, coverage, tuple(tiers), out)
    return out


def _plan(a: int, b: int, level: int, coverage: Coverage, tiers: tuple[int, ...],
          out: list[Piece]) -> None:
    if a > b:
        return
    if level == len(tiers):
        if out and isinstance(out[-1], Raw) and out[-1].hi + 1 == a:
            out[-1] = Raw(out[-1].lo, b)  # an uncovered stretch stays one raw piece
        else:
            out.append(Raw(a, b))
        return
    width = tiers[level]
    first, end = ceil_to(a, width), floor_to(b + 1, width)
    if first >= end:
        _plan(a, b, level + 1, coverage, tiers, out)
        return
    _plan(a, first - 1, level + 1, coverage, tiers, out)
    cursor = first
    for lo, hi in coverage.clip(first, end):
        lo, hi = ceil_to(lo, width), floor_to(hi, width)
        if lo >= hi:
            continue
        _plan(cursor, lo - 1, level + 1, coverage, tiers, out)
        out.append(Buckets(width, lo, hi))
        cursor = hi
    _plan(cursor, end - 1, level + 1, coverage, tiers, out)
    _plan(end, b, level + 1, coverage, tiers, out)


def usable_tiers(interval: int, tiers: Sequence[int] = TIERS) -> tuple[int, ...]:
    """The tiers whose buckets each fall inside one ``interval`` bucket (width divides it)."""
    return tuple(width for width in tiers if interval % width == 0)


def split_at(after_ns: int, before_ns: int, boundary: int
             ) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """The window's parts before ``boundary`` and from it on (either may be None)."""
    older = (after_ns, min(before_ns, boundary - 1)) if after_ns < boundary else None
    newer = (max(after_ns, boundary), before_ns) if before_ns >= boundary else None
    return older, newer
