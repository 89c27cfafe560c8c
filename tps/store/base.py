"""The store interface shared by the writer and the query actors.

Kept deliberately small so the InfluxDB and the embedded SQLite store can both answer
it identically (one conformance suite runs against both). Every method is blocking
and is called from an actor thread, never from the IO loop. A store object is used
by one thread at a time; each actor opens its own.

Semantics shared by both implementations:
- times are integer UTC nanoseconds; windows are inclusive: ``after <= t <= before``;
- ``stream=None`` means all streams;
- a write is idempotent: the same (stream, time_ns) written twice keeps one point
  whose value is the last written;
- results are ordered by time ascending (ties by stream name).

Rollups (issue 10, see :mod:`tps.history.types` for the layout): ``write`` takes the
rollup points and coverage marks of a batch and stores them in the same request or
transaction as the readings, so the two never disagree. The history methods below
answer the planner's pieces (:mod:`tps.history.planner`) in one round trip.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from typing import Protocol, TypeAlias

from tps.history.buckets import Aggregate
from tps.history.planner import Piece
from tps.history.types import CoverageRange, RollupWrite
from tps.model import Reading, Statistics

StreamArrays: TypeAlias = "tuple[array[int], array[float]]"
"""Times (``array('q')``, ns, ascending) and values (``array('d')``) of one stream."""


class Store(Protocol):
    """What TPS needs from a time-series store."""

    def ensure_ready(self) -> None:
        """Create the database/tables if missing. Raises StoreUnavailable/StoreError."""

    def ping(self) -> bool:
        """True when the store answers right now (cheap; used by /ready)."""

    def write(self, readings: Sequence[Reading], rollups: RollupWrite | None = None) -> None:
        """Write all readings (and ``rollups`` with them, atomically as far as the store
        allows) or raise (StoreUnavailable: retry; StoreError: rejected)."""

    def current(self, stream: str | None = None) -> Reading | None:
        """The newest reading (of ``stream``, or of any stream), or None."""

    def statistics(
        self, after_ns: int | None, before_ns: int | None, stream: str | None = None
    ) -> Statistics:
        """min/max/mean/count over the inclusive window; either bound may be None."""

    def measurements(
        self,
        after_ns: int | None,
        before_ns: int | None,
        stream: str | None = None,
        *,
        last: int | None = None,
        limit: int = 10_000,
    ) -> list[Reading]:
        """Readings in the window, oldest first.

        ``last`` keeps only the newest ``last`` readings of the window; ``limit`` caps
        the answer (the oldest ``limit`` when ``last`` is None).
        """

    def average(self, window_size: int, stream: str | None = None) -> float | None:
        """Mean of the newest ``window_size`` readings, or None when there are none."""

    def count(self, stream: str | None = None) -> int:
        """Number of stored readings (of ``stream`` or all); used by tests and health."""

    def stream_names(self) -> list[str]:
        """Names of every stream that has stored readings."""

    def close(self) -> None:
        """Release connections. Idempotent."""

    # --- rollups and history --------------------------------------------------------

    def write_rollups(self, rollups: RollupWrite) -> None:
        """Write rollup points and coverage marks alone (backfill, rebuild)."""

    def newest_times(self, streams: Sequence[str] | None = None) -> dict[str, int]:
        """Time of the newest stored reading of each stream (that has any)."""

    def oldest_times(self, streams: Sequence[str] | None = None) -> dict[str, int]:
        """Time of the oldest stored reading of each stream (that has any)."""

    def raw_aggregates(
        self, after_ns: int, before_ns: int, width: int, streams: Sequence[str] | None = None
    ) -> dict[str, list[tuple[int, Aggregate]]]:
        """Per stream, (bucket start, aggregate) of every non-empty ``width`` bucket of the
        raw readings in the inclusive window, oldest first."""

    def rollups(
        self, width: int, after_ns: int, before_ns: int, streams: Sequence[str] | None = None
    ) -> dict[str, list[tuple[int, Aggregate]]]:
        """Per stream, the stored rollup points of tier ``width`` starting in the
        inclusive window, oldest first."""

    def coverage(self, streams: Sequence[str] | None = None) -> dict[str, list[CoverageRange]]:
        """Per stream, the stored coverage ranges as ``(at, lo, until)`` (inclusive)."""

    def aggregate(self, pieces: Sequence[Piece], stream: str | None) -> Aggregate | None:
        """The combined aggregate of the planner's pieces (None when they hold nothing)."""

    def series(
        self, pieces: Sequence[Piece], interval: int, stream: str | None
    ) -> dict[int, Aggregate]:
        """Per ``interval`` bucket start (epoch-aligned), the aggregate of the pieces'
        readings in it; empty buckets are absent. Every tier of ``pieces`` must divide
        ``interval``."""

    def readings_arrays(
        self, after_ns: int, before_ns: int, streams: Sequence[str] | None = None
    ) -> dict[str, StreamArrays]:
        """Raw readings of the inclusive window per stream as compact arrays (hot tier)."""


StoreFactory = Callable[[], Store]
"""Opens a new store connection; each actor calls it once in ``on_start``."""
