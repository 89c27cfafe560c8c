"""Fills the hot tier from the store at start-up: newest readings first, in chunks.

The protocol that keeps memory equal to the store is :class:`tps.history.hot.HotTier`'s
(read its docstring); this class only decides what to read next: one query per time
chunk for all streams being loaded, newest chunk first, the chunk's span adapted so a
query returns about ``target_rows`` readings, until the hot window or the byte budget
is reached. Blocking, one chunk per :meth:`HotLoader.step`; the history actor
(:mod:`tps.actors.history`) steps it on its own thread with its own store.
"""

from __future__ import annotations

import logging
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tps.history.buckets import DAY, MINUTE, floor_to
from tps.history.hot import HotTier
from tps.store.base import Store

logger = logging.getLogger(__name__)

TARGET_ROWS = 100_000
"""Readings per load query (about 4 MB of JSON from InfluxDB)."""


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What one load did."""

    streams: int
    readings: int
    queries: int
    seconds: float
    stopped_by: str
    """``window``, ``budget``, ``empty`` or ``evicted``."""


class HotLoader:
    """Loads streams into a hot tier from a store (see the module docstring)."""

    def __init__(self, hot: HotTier, store: Store, *, target_rows: int = TARGET_ROWS,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.hot = hot
        self.store = store
        self.target_rows = target_rows
        self._clock = clock
        self._names: list[str] = []
        self._active: list[str] = []
        self._oldest: dict[str, int] = {}
        self._started = 0.0
        self._window_lo = self._upper = self._span = 0
        self._readings = self._queries = 0
        self._stopped_by = "empty"

    def load(self, streams: Sequence[str]) -> LoadReport:
        """Load ``streams`` (blocking) and return what was done."""
        self.begin(streams)
        while self.step():
            pass
        return self.finish()

    def begin(self, streams: Sequence[str]) -> None:
        """Start loading ``streams``: read their newest and oldest stored times."""
        self._started = time.monotonic()
        self._names = list(dict.fromkeys(streams))
        newest = self.store.newest_times(self._names)
        self.hot.begin_load(newest, self._names)
        self._active = [name for name in self._names if name in newest]
        self._oldest = self.store.oldest_times(self._active) if self._active else {}
        self._window_lo = floor_to(self._clock() - self.hot.window_ns, MINUTE)
        self._readings = self._queries = 0
        self._stopped_by = "empty" if not self._active else "window"
        self._upper = (floor_to(max(newest.values()), MINUTE) + MINUTE if self._active
                       else self._window_lo)
        self._span = MINUTE

    def step(self) -> bool:
        """Load the next (older) chunk; False when the load is over."""
        if not self._active or self._upper <= self._window_lo:
            return False
        if self.hot.room() <= 0:
            self._stopped_by = "budget"
            return False
        lo = max(self._upper - self._span, self._window_lo)
        data = self.store.readings_arrays(lo, self._upper - 1, self._active)
        self._queries += 1
        rows = 0
        for name in list(self._active):
            times, values = data.get(name) or (array("q"), array("d"))
            rows += len(times)
            if not self.hot.prepend(name, times, values, lo):
                self._active.remove(name)
                self._stopped_by = "evicted"
            elif lo <= self._oldest.get(name, lo):
                self._active.remove(name)  # everything stored is held
                self.hot.end_load(name, everything=True)
        self._readings += rows
        self._span = _next_span(self._span, rows, self.target_rows)
        self._upper = lo
        return bool(self._active) and self._upper > self._window_lo

    def finish(self) -> LoadReport:
        """End the load of every stream (also after a failure) and report."""
        for name in self._names:
            self.hot.end_load(name)
        report = LoadReport(len(self._names), self._readings, self._queries,
                            time.monotonic() - self._started, self._stopped_by)
        self._names, self._active = [], []
        if report.streams:
            logger.info("Hot tier: loaded %d readings of %d stream(s) from the store in "
                        "%.1f s (%d queries; stopped at the %s)", report.readings,
                        report.streams, report.seconds, report.queries, report.stopped_by)
        return report


def _next_span(span: int, rows: int, target: int) -> int:
    """The next chunk's span: scaled towards ``target`` rows, whole minutes, 1 min..1 d,
    at most 8x larger at a time."""
    scaled = span * 8 if rows == 0 else min(span * 8, span * target // rows)
    return max(MINUTE, min(DAY, floor_to(scaled, MINUTE)))
