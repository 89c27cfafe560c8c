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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from tps.model import Reading, Statistics


class Store(Protocol):
    """What TPS needs from a time-series store."""

    def ensure_ready(self) -> None:
        """Create the database/tables if missing. Raises StoreUnavailable/StoreError."""

    def ping(self) -> bool:
        """True when the store answers right now (cheap; used by /ready)."""

    def write(self, readings: Sequence[Reading]) -> None:
        """Write all readings or raise (StoreUnavailable: retry; StoreError: rejected)."""

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


StoreFactory = Callable[[], Store]
"""Opens a new store connection; each actor calls it once in ``on_start``."""
