"""Fills the hot tier from the store at start-up: newest readings first, in chunks.

The protocol that keeps memory equal to the store is :class:`tps.history.hot.HotTier`'s
(read its docstring); this class only decides what to read next: one query per time
chunk for all streams being loaded, newest chunk first, the chunk's span adapted so a
query returns about ``target_rows`` readings, until the hot window or the byte budget
is reached. Blocking; runs on the history actor's thread with its own store.
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

    def load(self, streams: Sequence[str]) -> LoadReport:
        """Load ``streams`` (blocking) and return what was done."""
        started = time.monotonic()
        names = list(dict.fromkeys(streams))
        newest = self.store.newest_times(names)
        self.hot.begin_load(newest, names)
        active = [name for name in names if name in newest]
        oldest = self.store.oldest_times(active) if active else {}
        window_lo = floor_to(self._clock() - self.hot.window_ns, MINUTE)
        readings = queries = 0
        stopped_by = "empty" if not active else "window"
        upper = floor_to(max(newest.values()), MINUTE) + MINUTE if active else window_lo
        span = MINUTE
        try:
            while active and upper > window_lo:
                if self.hot.room() <= 0:
                    stopped_by = "budget"
                    break
                lo = max(upper - span, window_lo)
                data = self.store.readings_arrays(lo, upper - 1, active)
                queries += 1
                rows = 0
                for name in list(active):
                    times, values = data.get(name) or (array("q"), array("d"))
                    rows += len(times)
                    if not self.hot.prepend(name, times, values, lo):
                        active.remove(name)
                        stopped_by = "evicted"
                    elif lo <= oldest.get(name, lo):
                        active.remove(name)  # everything stored is held
                        self.hot.end_load(name, everything=True)
                readings += rows
                span = _next_span(span, rows, self.target_rows)
                upper = lo
        finally:
            for name in names:
                self.hot.end_load(name)
        report = LoadReport(len(names), readings, queries, time.monotonic() - started,
                            stopped_by)
        logger.info("Hot tier: loaded %d readings of %d stream(s) from the store in %.1f s "
                    "(%d queries; stopped at the %s)", report.readings, report.streams,
                    report.seconds, report.queries, report.stopped_by)
        return report


def _next_span(span: int, rows: int, target: int) -> int:
    """The next chunk's span: scaled towards ``target`` rows, whole minutes, 1 min..1 d,
    at most 8x larger at a time."""
    scaled = span * 8 if rows == 0 else min(span * 8, span * target // rows)
    return max(MINUTE, min(DAY, floor_to(scaled, MINUTE)))
