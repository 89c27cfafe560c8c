"""The per-stream limit checker: which level a stream is at, reading by reading.

A :class:`LimitChecker` turns one stream's batches of readings into the few facts the
alarm actor needs: the stream's level changed (:class:`LevelChanged`), an alarmed
value got worse (:class:`PeakChanged`), a reading arrived after a silence longer than
``staleAfter`` (:class:`StreamFresh`). It is plain code with no threads and no locks:
it runs inside the ingest sink, called by the one thread that delivers that stream's
batches, and it is touched by nobody else (``last_seen_ns`` is read by the alarm
actor's staleness tick, a single int attribute, like the stats counters).

Levels (the "process" state in Yamcs' words): ``OK`` (0), ``WARNING`` (1, beyond a
yellow limit), ``CRITICAL`` (2, beyond a red limit); ``None`` until the first reading
decides it, so that after a restart (or a limits change) the first reading tells the
alarm actor where the stream stands even when it is back in limits.

Rules:

- a value strictly beyond a limit is out; on the limit is in;
- *persistence* N: a level is entered when the last N readings were all at least that
  far out (W, C, C with N = 3 raises WARNING; a fourth C escalates to CRITICAL);
- *deadband* d: a level is left only when a value comes back inside the limit by d
  (yellowHigh 30, d 0.5: WARNING holds until a value <= 29.5) - no persistence is
  needed to go down, which is what keeps an alarm from flapping at the limit.

Cost: the ingest path calls :meth:`LimitChecker.check` for every batch, so the common
case must be cheap: at the current level it compares each value with the band in which
nothing can change (two comparisons per reading in limits; on CPython 3.11 this tight
loop is faster than ``min()``/``max()`` over the values). Only a batch that crosses a
threshold is walked again reading by reading, counting persistence.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tps.alarms.limits import Limits
from tps.model import Reading

logger = logging.getLogger(__name__)

OK, WARNING, CRITICAL = 0, 1, 2
LEVEL_NAMES = ("OK", "WARNING", "CRITICAL")

_NOTHING: tuple[()] = ()


@dataclass(frozen=True, slots=True)
class LevelChanged:
    """The stream's level is now ``level`` since the reading at ``time_ns``.

    ``limit_name``/``limit`` name the limit that reading crossed when the level went up
    (``"yellowHigh"``, 30.0); both are None when it went down.
    """

    stream: str
    level: int
    time_ns: int
    value: float
    limit_name: str | None = None
    limit: float | None = None


@dataclass(frozen=True, slots=True)
class PeakChanged:
    """While out of limits, a value further out than any before arrived."""

    stream: str
    value: float


@dataclass(frozen=True, slots=True)
class StreamFresh:
    """A reading arrived after no reading for longer than ``staleAfter`` (or at all)."""

    stream: str
    time_ns: int


Report = LevelChanged | PeakChanged | StreamFresh


class LimitChecker:
    """Evaluates one stream's readings against its :class:`Limits` (see module doc).

    Not thread-safe by design: only the thread that delivers this stream's batches
    calls :meth:`check`. ``clock`` gives monotonic nanoseconds (injectable for tests).
    """

    __slots__ = (
        "_c1", "_c2", "_c_hi", "_c_hi_back", "_c_lo", "_c_lo_back", "_clock", "_has_levels", "_n",
        "_names", "_peak_key", "_stale_ns", "_w_hi", "_w_hi_back", "_w_lo", "_w_lo_back",
        "last_seen_ns", "level", "limits", "stream",
    )

    def __init__(self, stream: str, limits: Limits,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.stream = stream
        self.limits = limits
        self._clock = clock
        inf = math.inf
        yl, yh, rl, rh = limits.yellow_low, limits.yellow_high, limits.red_low, limits.red_high
        # Beyond _w_*: at least WARNING (a side with only a red limit goes straight to
        # CRITICAL); beyond _c_*: CRITICAL.
        self._c_lo = rl if rl is not None else -inf
        self._c_hi = rh if rh is not None else inf
        self._w_lo = yl if yl is not None else self._c_lo
        self._w_hi = yh if yh is not None else self._c_hi
        self._names = (
            "yellowLow" if yl is not None else "redLow",
            "yellowHigh" if yh is not None else "redHigh",
        )
        deadband = limits.deadband
        self._w_lo_back = self._w_lo + deadband
        self._w_hi_back = self._w_hi - deadband
        self._c_lo_back = self._c_lo + deadband
        self._c_hi_back = self._c_hi - deadband
        self._n = limits.persistence
        self._stale_ns = (int(limits.stale_after * 1e9)
                          if limits.stale_after is not None else None)
        self._c1 = 0
        self._c2 = 0
        self._peak_key: tuple[int, float] | None = None
        self._has_levels = limits.has_levels
        self.level: int | None = None if limits.has_levels else OK
        self.last_seen_ns: int | None = None

    def resume(self, level: int, most_severe: float | None = None) -> None:
        """Start at ``level`` instead of undecided: the stream's open alarm was restored
        from the cluster's event log after a hand-over, so its readings continue it
        (deadband included) rather than decide afresh. Call before the checker is
        installed for the ingest thread."""
        if self._has_levels:
            self.level = level
            if level > OK and most_severe is not None:
                self._peak_key = self._key(most_severe)

    @property
    def stale_after_ns(self) -> int | None:
        """``staleAfter`` in nanoseconds, or None when staleness is not checked."""
        return self._stale_ns

    def check(self, readings: Sequence[Reading]) -> Sequence[Report]:
        """Evaluate one batch (oldest first); what changed, usually nothing."""
        if not readings:
            return _NOTHING
        reports: list[Report] | None = None
        if self._stale_ns is not None:
            now = self._clock()
            previous, self.last_seen_ns = self.last_seen_ns, now
            if previous is None or now - previous > self._stale_ns:
                reports = [StreamFresh(self.stream, readings[0].time_ns)]
        level = self.level
        if level == OK:
            if not self._has_levels:
                return reports or _NOTHING
            # The common case: a couple of comparisons per reading (a plain loop beats
            # min()/max() over a list of the values on CPython 3.11).
            w_lo, w_hi = self._w_lo, self._w_hi
            for reading in readings:
                value = reading.value
                if value < w_lo or value > w_hi:
                    return self._walk(readings, reports or [])
            self._c1 = self._c2 = 0
            return reports or _NOTHING
        if level == WARNING:
            c_lo, c_hi = self._c_lo, self._c_hi
            back_lo, back_hi = self._w_lo_back, self._w_hi_back
            for reading in readings:
                value = reading.value
                if value < c_lo or value > c_hi or back_lo <= value <= back_hi:
                    return self._walk(readings, reports or [])
            self._c2 = 0
        elif level == CRITICAL:
            back_lo, back_hi = self._c_lo_back, self._c_hi_back
            for reading in readings:
                value = reading.value
                if back_lo <= value <= back_hi:
                    return self._walk(readings, reports or [])
        else:
            return self._walk(readings, reports or [])
        # Still alarmed at the same level: only the most severe value may have moved.
        values = [reading.value for reading in readings]
        peak = self._peak(min(values), max(values))
        if peak is not None:
            return [*(reports or ()), peak]
        return reports or _NOTHING

    def _raw(self, value: float) -> int:
        if value < self._c_lo or value > self._c_hi:
            return CRITICAL
        if value < self._w_lo or value > self._w_hi:
            return WARNING
        return OK

    def _held(self, value: float) -> int:
        """The level ``value`` keeps an alarmed stream at (thresholds moved by the deadband)."""
        if value < self._c_lo_back or value > self._c_hi_back:
            return CRITICAL
        if value < self._w_lo_back or value > self._w_hi_back:
            return WARNING
        return OK

    def _key(self, value: float) -> tuple[int, float]:
        # Most severe: the higher raw level, then the farther outside the OK band.
        return self._raw(value), max(value - self._w_hi, self._w_lo - value)

    def _peak(self, lo: float, hi: float) -> PeakChanged | None:
        key_lo, key_hi = self._key(lo), self._key(hi)
        value, key = (hi, key_hi) if key_hi >= key_lo else (lo, key_lo)
        if self._peak_key is None or key > self._peak_key:
            self._peak_key = key
            return PeakChanged(self.stream, value)
        return None

    def _walk(self, readings: Sequence[Reading], reports: list[Report]) -> Sequence[Report]:
        """The slow path: reading by reading (only for batches near a threshold)."""
        n = self._n
        c1, c2 = self._c1, self._c2
        level = self.level
        peak_moved: float | None = None
        for reading in readings:
            value = reading.value
            raw = self._raw(value)
            c1 = c1 + 1 if raw >= WARNING else 0
            c2 = c2 + 1 if raw >= CRITICAL else 0
            up = CRITICAL if c2 >= n else WARNING if c1 >= n else OK
            if level is None:
                if up == OK and raw != OK:
                    continue  # out, but not yet for long enough to decide
                new = up
            elif up > level:
                new = up
            elif level > OK:
                held = self._held(value)
                if held < level:
                    new = max(held, up)
                else:
                    key = self._key(value)
                    if self._peak_key is None or key > self._peak_key:
                        self._peak_key = key
                        peak_moved = value
                    continue
            else:
                continue
            if new > (level or OK):
                high = value > self._w_hi
                if new == CRITICAL:
                    name = "redHigh" if high else "redLow"
                    limit = self._c_hi if high else self._c_lo
                else:
                    name = self._names[1] if high else self._names[0]
                    limit = self._w_hi if high else self._w_lo
                reports.append(LevelChanged(self.stream, new, reading.time_ns, value,
                                            name, limit))
                self._peak_key = self._key(value)
            else:
                reports.append(LevelChanged(self.stream, new, reading.time_ns, value))
                if new == OK:
                    self._peak_key = None
            peak_moved = None
            level = new
        self._c1, self._c2 = c1, c2
        self.level = level
        if peak_moved is not None:
            reports.append(PeakChanged(self.stream, peak_moved))
        return reports
