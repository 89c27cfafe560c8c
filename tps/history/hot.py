"""The hot tier: the newest stored readings of each stream and their rollups, in memory.

Per stream, readings are two compact arrays (``array('q')`` times, ``array('d')``
values: 16 bytes a reading, no Python object per reading) plus the 1 m and 1 h rollups
of the same readings as parallel arrays (start, min, max, sum, count). Statistics and
series inside the horizon are then bisections and C-speed ``min``/``max``/``fsum`` over
array slices: tens of microseconds, no store round trip.

Where the readings come from, so memory always equals the store:

- **acknowledged writes**: the writer calls :meth:`HotTier.append` with each batch the
  store accepted. Replays of readings already held are dropped (per stream, times only
  grow: see :mod:`tps.history.rollup`).
- **the store, at start-up**: a background loader (:mod:`tps.history.loader`) reads
  each stream's newest stored time ``T`` (:meth:`begin_load`), then the readings up to
  ``T`` newest chunk first (:meth:`prepend`). Appended readings at or before ``T`` are
  dropped at the first merge (the store, and so the load, has them); later ones are
  kept. Everything stored after ``T`` was written by this process after the loader
  looked, so it was appended. A stream answers from memory once its newest chunk is
  merged; its *horizon* (everything at or after it is held) then moves back as older
  chunks arrive.

Bounds: readings older than ``window_ns`` and, beyond ``max_bytes``, the globally
oldest readings are evicted (whole minutes, so the minute buckets left are complete).

Series: a whole series bucket that starts at or after a stream's horizon and ends at or
before its newest reading never changes: appends only bring newer readings, loads only
older ones (before the horizon), eviction only removes readings before the (new)
horizon. So its aggregate is kept per stream and interval (:data:`SERIES_MEMO_LABELS`
buckets in all), and a dashboard asking for the same 30 days every second combines 720
hours once per 2-hour bucket, not per request. Loads and eviction still forget a
stream's kept buckets (memory, and a second line of defence). The same
:class:`Aggregate` object is returned for a kept bucket each time, which lets callers
keep what they derived from it by identity.

Thread-safety: one lock around every stream; appends come from the writer's thread,
loads from the loader's, questions from the IO loop. Nothing under the lock does I/O.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import compress

from tps.history.buckets import (
    DAY,
    MINUTE,
    TIERS,
    Aggregate,
    Runs,
    ceil_to,
    combine,
    floor_to,
    fold_run,
    fold_sorted,
    runs_by_stream,
    window_aggregate,
    window_grouped,
)
from tps.history.planner import FOREVER, Buckets, Coverage, Piece, Raw, plan, usable_tiers
from tps.model import Reading

logger = logging.getLogger(__name__)

EVERYWHERE = Coverage([(-FOREVER, FOREVER)])
"""What is asked of memory lies wholly after the horizon: every bucket there is whole."""
HOT_TIERS = (DAY, *TIERS)
"""Bucket widths held in memory: the stored tiers plus whole days, which make a 30-day
window 30 buckets instead of 720 (statistics over it took 170 us with hours only, on
this machine, 2026-11-29)."""
READING_BYTES = 16
TIER_ENTRY_BYTES = 40
_EVICT_TO = 0.95  # after eviction, bytes are at most this share of the budget
SERIES_MEMO_LABELS = 20_000
"""Series buckets kept in all (see the module docstring): about 3 MB."""


class TierArrays:
    """Non-empty buckets of one width, ascending: parallel arrays."""

    __slots__ = ("counts", "maxs", "mins", "starts", "sums", "width")

    def __init__(self, width: int) -> None:
        self.width = width
        self.starts = array("q")
        self.mins = array("d")
        self.maxs = array("d")
        self.sums = array("d")
        self.counts = array("q")

    def __len__(self) -> int:
        return len(self.starts)

    def add(self, folded: list[tuple[int, Aggregate]]) -> int:
        """Merge buckets newer than (or equal to) the newest held one; how many are new."""
        before = len(self.starts)
        for start, agg in folded:
            if self.starts and self.starts[-1] == start:
                self.mins[-1] = min(self.mins[-1], agg.min)
                self.maxs[-1] = max(self.maxs[-1], agg.max)
                self.sums[-1] = math.fsum((self.sums[-1], agg.sum))
                self.counts[-1] += agg.count
            else:
                self.starts.append(start)
                self.mins.append(agg.min)
                self.maxs.append(agg.max)
                self.sums.append(agg.sum)
                self.counts.append(agg.count)
        return len(self.starts) - before

    def replace(self, lo: int, hi: int, folded: list[tuple[int, Aggregate]]) -> None:
        """Replace the buckets starting in ``[lo, hi)`` by ``folded``."""
        i = bisect_left(self.starts, lo)
        j = bisect_left(self.starts, hi)
        self.starts[i:j] = array("q", [s for s, _ in folded])
        self.mins[i:j] = array("d", [a.min for _, a in folded])
        self.maxs[i:j] = array("d", [a.max for _, a in folded])
        self.sums[i:j] = array("d", [a.sum for _, a in folded])
        self.counts[i:j] = array("q", [a.count for _, a in folded])

    def drop_before(self, time_ns: int) -> None:
        """Forget buckets starting before ``time_ns``."""
        i = bisect_left(self.starts, time_ns)
        if i:
            for column in (self.starts, self.mins, self.maxs, self.sums, self.counts):
                del column[:i]

    def aggregate(self, start: int, end: int) -> Aggregate | None:
        """The buckets starting in ``[start, end)`` combined."""
        i = bisect_left(self.starts, start)
        j = bisect_left(self.starts, end, i)
        if i >= j:
            return None
        return Aggregate(min(self.mins[i:j]), max(self.maxs[i:j]), math.fsum(self.sums[i:j]),
                         sum(self.counts[i:j]))

    def grouped(self, start: int, end: int, interval: int) -> list[tuple[int, Aggregate]]:
        """The buckets starting in ``[start, end)`` combined per ``interval`` bucket."""
        i = bisect_left(self.starts, start)
        j = bisect_left(self.starts, end, i)
        starts, mins, maxs = self.starts, self.mins, self.maxs
        sums, counts = self.sums, self.counts
        if interval == self.width:
            return [(starts[k], Aggregate(mins[k], maxs[k], sums[k], counts[k]))
                    for k in range(i, j)]
        if (j - i) * self.width <= 16 * interval:
            # Few buckets per interval (2 h of hours, 5 m of minutes...): one pass.
            out: list[tuple[int, Aggregate]] = []
            current: int | None = None
            lo = hi = 0.0
            n = 0
            parts: list[float] = []
            for k in range(i, j):
                start = starts[k]
                label_k = start - start % interval
                if label_k != current:
                    if current is not None:
                        out.append((current, Aggregate(lo, hi, math.fsum(parts), n)))
                    current, lo, hi, parts, n = label_k, mins[k], maxs[k], [sums[k]], counts[k]
                else:
                    lo = min(lo, mins[k])
                    hi = max(hi, maxs[k])
                    parts.append(sums[k])
                    n += counts[k]
            if current is not None:
                out.append((current, Aggregate(lo, hi, math.fsum(parts), n)))
            return out
        out = []
        while i < j:
            label_i = floor_to(starts[i], interval)
            k = bisect_left(starts, label_i + interval, i, j)
            out.append((label_i, Aggregate(min(mins[i:k]), max(maxs[i:k]),
                                           math.fsum(sums[i:k]), sum(counts[i:k]))))
            i = k
        return out


class _Stream:
    """One stream's readings and rollups; touched only under the tier's lock."""

    __slots__ = ("complete_from", "last_ns", "load_point", "memo", "tiers", "times", "values")

    def __init__(self) -> None:
        self.memo: dict[int, dict[int, Aggregate | None]] = {}
        """interval -> {start of a whole, closed bucket: its aggregate (None: empty)}."""
        self.times = array("q")
        self.values = array("d")
        self.tiers = {width: TierArrays(width) for width in HOT_TIERS}
        self.last_ns: int | None = None
        self.load_point: int | None = None
        """While loading: the loader brings every stored reading at or before this."""
        self.complete_from: int | None = None
        """Memory holds every stored reading at or after this; None: not answerable."""

    def nbytes(self) -> int:
        entries = sum(len(tier) for tier in self.tiers.values())
        return len(self.times) * READING_BYTES + entries * TIER_ENTRY_BYTES

    def extend(self, times: Sequence[int], values: Sequence[float]) -> int:
        """Append readings newer than everything held; the bytes this adds."""
        self.times.extend(times)
        self.values.extend(values)
        folded = fold_run(times, values, HOT_TIERS)
        entries = 0
        for width, tier in self.tiers.items():
            entries += tier.add(folded[width])
        self.last_ns = times[-1]
        return len(times) * READING_BYTES + entries * TIER_ENTRY_BYTES

    def keep_after(self, time_ns: int) -> None:
        """Keep only readings after ``time_ns`` (appended replays the load brings)."""
        cut = bisect_right(self.times, time_ns)
        if cut:
            self.memo = {}
            times, values = list(self.times[cut:]), list(self.values[cut:])
            self.times, self.values = array("q"), array("d")
            self.tiers = {width: TierArrays(width) for width in HOT_TIERS}
            if times:
                self.extend(times, values)

    def refold(self, lo: int, hi: int) -> None:
        """Recompute the buckets of ``[lo, hi)`` (whole days) from the readings held."""
        self.memo = {}
        i = bisect_left(self.times, lo)
        k = bisect_left(self.times, hi, i)
        times, values = self.times[i:k], self.values[i:k]
        for width, tier in self.tiers.items():
            tier.replace(lo, hi, fold_sorted(times, values, width))

    def raw(self, lo: int, hi: int) -> Aggregate | None:
        return window_aggregate(self.times, self.values, lo, hi)

    def raw_grouped(self, lo: int, hi: int, interval: int) -> list[tuple[int, Aggregate]]:
        return window_grouped(self.times, self.values, lo, hi, interval)

    def drop_before(self, time_ns: int) -> None:
        """Evict readings and buckets before ``time_ns`` (a minute boundary)."""
        self.memo = {}
        i = bisect_left(self.times, time_ns)
        if i:
            del self.times[:i]
            del self.values[:i]
        for tier in self.tiers.values():
            tier.drop_before(time_ns)
        if self.complete_from is not None:
            self.complete_from = max(self.complete_from, time_ns)


@dataclass(frozen=True, slots=True)
class HotStatus:
    """What /health shows about the hot tier."""

    streams: int
    ready: int
    loading: int
    bytes: int
    max_bytes: int
    window_s: float
    oldest_ns: int | None


class HotTier:
    """Newest readings and rollups of the streams this process writes (see module doc)."""

    def __init__(self, window_ns: int, max_bytes: int) -> None:
        if window_ns <= 0 or max_bytes <= 0:
            raise ValueError("the hot window and byte budget must be positive")
        self.window_ns = window_ns
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._bytes = 0
        self._evicted_at = 0.0
        self._memo_labels = 0
        """Series buckets kept over every stream (an upper bound: forgetting a stream's
        memo does not lower it; reaching the limit forgets them all and resets it)."""

    # --- feeding ------------------------------------------------------------------------

    def append(self, readings: Sequence[Reading], runs: Runs | None = None) -> None:
        """Take a batch the store acknowledged (any thread; oldest first per stream).

        ``runs``: the batch already split per stream (not changed)."""
        if runs is None:
            runs = runs_by_stream(readings)
        with self._lock:
            for name, (times, values) in runs.items():
                stream = self._streams.get(name)
                if stream is None:
                    stream = self._streams[name] = _Stream()
                if stream.last_ns is not None:
                    skip = bisect_right(times, stream.last_ns)
                    if skip:
                        times, values = times[skip:], values[skip:]
                if times:
                    self._bytes += stream.extend(times, values)
            self._evict_locked(time.time_ns())

    def begin_load(self, newest: dict[str, int], streams: Iterable[str]) -> None:
        """The loader read each stream's newest stored time and will load up to it.

        A stream without stored readings is complete at once: memory holds all of it."""
        with self._lock:
            for name in streams:
                stream = self._streams.get(name)
                if stream is None:
                    stream = self._streams[name] = _Stream()
                point = newest.get(name)
                if point is None:
                    stream.complete_from, stream.load_point = -FOREVER, None
                else:
                    stream.load_point = point

    def prepend(self, name: str, times: array[int], values: array[float], lo: int) -> bool:
        """Merge loaded readings from ``lo`` on, older than what is held; False when the
        stream is not being loaded (any more): the loader stops with it."""
        with self._lock:
            stream = self._streams.get(name)
            if stream is None or stream.load_point is None:
                return False
            before = stream.nbytes()
            if stream.complete_from is None:
                # First merge: the load brings everything up to the load point.
                stream.keep_after(stream.load_point)
                upper = stream.load_point + 1
            else:
                upper = stream.complete_from
            if lo < upper:
                j = bisect_left(times, upper)
                if j:
                    stream.times[0:0] = times[:j]
                    stream.values[0:0] = values[:j]
                    if stream.last_ns is None:
                        stream.last_ns = stream.times[-1]
                # The touched days, including the one the chunk completes.
                stream.refold(floor_to(lo, DAY), floor_to(upper - 1, DAY) + DAY)
                stream.complete_from = lo
            elif stream.complete_from is None:
                stream.complete_from = upper
            self._bytes += stream.nbytes() - before
            return True

    def end_load(self, name: str, *, everything: bool = False) -> None:
        """The loader is done with ``name``: it reached the window or the budget, or
        (``everything``) the stream's oldest stored reading."""
        with self._lock:
            stream = self._streams.get(name)
            if stream is not None:
                if everything and stream.load_point is not None and \
                        stream.complete_from is not None:
                    stream.complete_from = -FOREVER
                self._end_load_locked(stream)

    def _end_load_locked(self, stream: _Stream) -> None:
        point, stream.load_point = stream.load_point, None
        if point is not None and stream.complete_from is None:
            # Nothing was merged: memory is complete after the load point only.
            before = stream.nbytes()
            stream.keep_after(point)
            stream.complete_from = point + 1
            self._bytes += stream.nbytes() - before

    def forget(self, streams: Iterable[str]) -> None:
        """Drop streams (removed, or found to differ from the store)."""
        with self._lock:
            for name in streams:
                stream = self._streams.pop(name, None)
                if stream is not None:
                    self._bytes -= stream.nbytes()

    def room(self) -> int:
        """Bytes left in the budget."""
        with self._lock:
            return self.max_bytes - self._bytes

    def _evict_locked(self, now_ns: int) -> None:
        """Drop what is older than the window, then the oldest beyond the budget."""
        if self._bytes > self.max_bytes:
            target = int(self.max_bytes * _EVICT_TO)
            while self._bytes > target:
                oldest = min((s.times[0] for s in self._streams.values() if s.times),
                             default=None)
                if oldest is None:
                    break
                self._drop_before_locked(floor_to(oldest, MINUTE) + MINUTE)
        if time.monotonic() - self._evicted_at >= 60.0:
            self._evicted_at = time.monotonic()
            self._drop_before_locked(floor_to(now_ns - self.window_ns, MINUTE))

    def _drop_before_locked(self, time_ns: int) -> None:
        for stream in self._streams.values():
            if (stream.times and stream.times[0] < time_ns) or (
                    stream.complete_from is not None and stream.complete_from < time_ns):
                if stream.load_point is not None:
                    self._end_load_locked(stream)  # no room for older readings
                before = stream.nbytes()
                stream.drop_before(time_ns)
                self._bytes += stream.nbytes() - before

    # --- questions --------------------------------------------------------------------

    def horizon(self, streams: Iterable[str]) -> int | None:
        """From when on memory holds every reading of all ``streams`` (None: it does
        not answer for one of them yet)."""
        with self._lock:
            return self._horizon_locked(streams)

    def _horizon_locked(self, streams: Iterable[str]) -> int | None:
        horizon = -FOREVER
        for name in streams:
            stream = self._streams.get(name)
            if stream is None or stream.complete_from is None:
                return None
            horizon = max(horizon, stream.complete_from)
        return horizon

    def aggregate(self, streams: Sequence[str], after_ns: int, before_ns: int
                  ) -> tuple[Aggregate | None, int] | None:
        """(aggregate of the window's part held in memory, the horizon), or None when
        memory cannot answer for these streams. The caller asks the store for the part
        before the horizon."""
        with self._lock:
            horizon = self._horizon_locked(streams)
            if horizon is None:
                return None
            lo = max(after_ns, horizon)
            if lo > before_ns:
                return None, horizon
            pieces = plan(lo, before_ns, Coverage([(horizon, FOREVER)]), HOT_TIERS)
            parts = [_piece_aggregate(self._streams[name], piece)
                     for name in streams for piece in pieces]
            return combine(parts), horizon

    def series(self, streams: Sequence[str], after_ns: int, before_ns: int, interval: int
               ) -> tuple[dict[int, Aggregate], int] | None:
        """({interval bucket start: aggregate} of the part held in memory, the horizon),
        or None when memory cannot answer for these streams."""
        with self._lock:
            horizon = self._horizon_locked(streams)
            if horizon is None:
                return None
            lo = max(after_ns, horizon)
            if lo > before_ns:
                return {}, horizon
            tiers = usable_tiers(interval, HOT_TIERS)
            if len(streams) == 1:
                only = self._grouped_locked(self._streams[streams[0]], lo, before_ns,
                                            interval, tiers)
                return dict(only), horizon
            merged: dict[int, list[Aggregate]] = {}
            for name in streams:
                stream = self._streams[name]
                for label, agg in self._grouped_locked(stream, lo, before_ns, interval, tiers):
                    merged.setdefault(label, []).append(agg)
        out: dict[int, Aggregate] = {}
        for label in sorted(merged):
            parts = merged[label]
            total = parts[0] if len(parts) == 1 else combine(parts)
            if total is not None:
                out[label] = total
        return out, horizon

    def _grouped_locked(self, stream: _Stream, lo: int, hi: int, interval: int,
                        tiers: Sequence[int]) -> list[tuple[int, Aggregate]]:
        """``stream``'s non-empty ``interval`` buckets of ``[lo, hi]`` (held in memory),
        oldest first; whole buckets ending at or before its newest reading are kept."""
        first = ceil_to(lo, interval)
        end = floor_to(hi + 1, interval)
        if stream.last_ns is not None:
            end = min(end, floor_to(stream.last_ns + 1, interval))
        if first >= end:
            return _span_grouped(stream, lo, hi, interval, tiers)
        out = _span_grouped(stream, lo, first - 1, interval, tiers)
        kept = stream.memo.get(interval)
        labels = range(first, end, interval)
        # map/compress keep the per-bucket work in C: a 30-day chart reads 360 buckets.
        if kept is None or not all(map(kept.__contains__, labels)):
            grouped = _span_grouped(stream, first, end - 1, interval, tiers)
            if len(labels) > SERIES_MEMO_LABELS:
                out.extend(grouped)
                out.extend(_span_grouped(stream, end, hi, interval, tiers))
                return out
            if self._memo_labels + len(labels) > SERIES_MEMO_LABELS:
                for held in self._streams.values():
                    held.memo = {}
                self._memo_labels = 0
            kept = stream.memo.setdefault(interval, {})
            before = len(kept)
            kept.update(dict.fromkeys(labels))
            kept.update(grouped)
            self._memo_labels += len(kept) - before
        aggs = list(map(kept.__getitem__, labels))  # None: an empty bucket
        present: Iterable[tuple[int, Aggregate]] = compress(
            zip(labels, aggs, strict=True), aggs)  # type: ignore[arg-type]  # Nones dropped
        out.extend(present)
        out.extend(_span_grouped(stream, end, hi, interval, tiers))
        return out

    def streams(self) -> list[str]:
        """Every stream held (answerable or not)."""
        with self._lock:
            return list(self._streams)

    def unloaded(self) -> list[str]:
        """Streams held from appends only, which the loader has not begun."""
        with self._lock:
            return [name for name, s in self._streams.items()
                    if s.complete_from is None and s.load_point is None]

    def status(self) -> HotStatus:
        """Figures for /health."""
        with self._lock:
            streams = list(self._streams.values())
            oldest = min((s.times[0] for s in streams if s.times), default=None)
            return HotStatus(
                streams=len(streams),
                ready=sum(1 for s in streams if s.complete_from is not None),
                loading=sum(1 for s in streams if s.load_point is not None),
                bytes=self._bytes, max_bytes=self.max_bytes, window_s=self.window_ns / 1e9,
                oldest_ns=oldest)


def _piece_aggregate(stream: _Stream, piece: Piece) -> Aggregate | None:
    if isinstance(piece, Raw):
        return stream.raw(piece.lo, piece.hi)
    assert isinstance(piece, Buckets)
    return stream.tiers[piece.width].aggregate(piece.start, piece.end)


def _span_grouped(stream: _Stream, lo: int, hi: int, interval: int, tiers: Sequence[int]
                  ) -> list[tuple[int, Aggregate]]:
    """``stream``'s non-empty ``interval`` buckets of ``[lo, hi]``, from its tiers and raw
    readings (memory holds every reading there), oldest first."""
    if lo > hi:
        return []
    merged: dict[int, list[Aggregate]] = {}
    for piece in plan(lo, hi, EVERYWHERE, tiers):
        for label, agg in _piece_grouped(stream, piece, interval):
            merged.setdefault(label, []).append(agg)
    out: list[tuple[int, Aggregate]] = []
    for label in sorted(merged):
        parts = merged[label]
        total = parts[0] if len(parts) == 1 else combine(parts)
        if total is not None:
            out.append((label, total))
    return out


def _piece_grouped(stream: _Stream, piece: Piece, interval: int) -> list[tuple[int, Aggregate]]:
    if isinstance(piece, Raw):
        return stream.raw_grouped(piece.lo, piece.hi, interval)
    assert isinstance(piece, Buckets)
    return stream.tiers[piece.width].grouped(piece.start, piece.end, interval)
