"""Statistics and series for any window: from memory where it holds the readings, from
the store's rollups plus raw edges elsewhere, always equal to a raw scan.

A question is answered in two steps so that the IO loop never waits on the store:

1. :meth:`History.statistics_plan` / :meth:`History.series_plan` (IO loop, no I/O):
   validate, answer the part of the window the hot tier holds, and say which older
   part (if any) the store must add;
2. :meth:`History.statistics_finish` / :meth:`History.series_finish` (a query actor,
   only when the store is needed): plan that part against the stored rollup coverage,
   ask the store in one round trip, combine.

Coverage and the list of streams come from :class:`CoverageBoard`, a snapshot of what
the store says, refreshed by whichever query actor first finds it older than
``COVERAGE_TTL`` - so an ``api`` process, which has no writer, learns where rollups are
exact from the store itself.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from tps.history.buckets import (
    Aggregate,
    check_window_length,
    combine,
    series_interval,
)
from tps.history.hot import HotTier
from tps.history.kept_raw import HeldRaw, KeptRaw
from tps.history.planner import FOREVER, NOTHING, Coverage, plan, usable_tiers
from tps.history.stored import StoredRollups
from tps.model import Statistics, ns_to_datetime
from tps.store.base import Store

logger = logging.getLogger(__name__)

_MAX_LABELS = 50_000
_MAX_BUCKETS = 20_000
COVERAGE_TTL = 1.0
"""Seconds a coverage snapshot is used before a query actor reads it again."""
SETTLE_S = 1.0
"""Seconds a coverage snapshot must have been read before what it covers is kept in
memory (:meth:`CoverageBoard.settled`)."""

OPEN_AFTER = -FOREVER
OPEN_BEFORE = FOREVER - 1


@dataclass(frozen=True, slots=True)
class CoverageSnapshot:
    """Where the stored rollups are exact, per stream, and which streams exist."""

    coverage: dict[str, Coverage]
    streams: tuple[str, ...]
    taken_at: float

    def for_stream(self, stream: str | None) -> Coverage:
        """The coverage of one stream, or where every stream is covered (None)."""
        if stream is not None:
            return self.coverage.get(stream, NOTHING)
        if not self.streams:
            return NOTHING
        common: Coverage | None = None
        for name in self.streams:
            own = self.coverage.get(name, NOTHING)
            common = own if common is None else common.intersect(own)
            if not common:
                return NOTHING
        return common or NOTHING


def read_coverage(store: Store) -> CoverageSnapshot:
    """A fresh snapshot from the store (two small queries)."""
    marks = store.coverage()
    streams = tuple(store.stream_names())
    coverage = {name: Coverage((lo, until + 1) for _, lo, until in ranges)
                for name, ranges in marks.items()}
    return CoverageSnapshot(coverage, streams, time.monotonic())


class CoverageBoard:
    """The newest :class:`CoverageSnapshot`, shared by the IO loop and the query actors.

    One lock guards the references; the store is read outside it, by one thread at a
    time (others keep using the older snapshot meanwhile).

    Answers use the newest snapshot; what is *kept* in memory (rollup chunks, raw
    blocks) is judged against a settled one, read at least ``settle`` seconds ago:
    InfluxDB applies the points of one ``/write`` to their shards in parallel, so a
    coverage mark may for a moment be visible before the readings and rollups written
    with it. A snapshot read a second after that write finished sees them all.
    """

    def __init__(self, ttl: float = COVERAGE_TTL, settle: float = SETTLE_S) -> None:
        self.ttl = ttl
        self.settle = settle
        self._lock = threading.Lock()
        self._snapshot: CoverageSnapshot | None = None
        self._pending: CoverageSnapshot | None = None
        """The oldest snapshot read since ``_settled``, until it is ``settle`` old."""
        self._settled: CoverageSnapshot | None = None
        self._refreshing = False
        self.refresh_task: object | None = None
        """The IO loop's pending refresh request (touched by the IO loop only)."""

    def current(self) -> CoverageSnapshot | None:
        """The newest snapshot, however old (None before the first read)."""
        with self._lock:
            return self._snapshot

    def fresh(self, store: Store) -> CoverageSnapshot:
        """A snapshot at most ``ttl`` old, reading the store when this thread is the one
        to refresh it (blocking: call from a query actor)."""
        with self._lock:
            snapshot = self._snapshot
            stale = snapshot is None or time.monotonic() - snapshot.taken_at > self.ttl
            refresh = stale and (snapshot is None or not self._refreshing)
            if refresh:
                self._refreshing = True
        if not refresh:
            assert snapshot is not None
            return snapshot
        try:
            snapshot = read_coverage(store)
        finally:
            with self._lock:
                self._refreshing = False
        with self._lock:
            self._snapshot = snapshot
            self._promote_locked(snapshot.taken_at)
            if self._pending is None:
                self._pending = snapshot
        return snapshot

    def settled(self, stream: str | None) -> Coverage:
        """The coverage of ``stream`` in the newest snapshot read at least ``settle``
        seconds ago (NOTHING before there is one): what may be kept in memory. Coverage
        only grows, so it is inside the newest snapshot's."""
        with self._lock:
            self._promote_locked(time.monotonic())
            settled = self._settled
        return NOTHING if settled is None else settled.for_stream(stream)

    def _promote_locked(self, now: float) -> None:
        if self._pending is not None and self._pending.taken_at <= now - self.settle:
            self._settled, self._pending = self._pending, None

    def stale(self) -> bool:
        """True when no snapshot is younger than ``ttl`` (a caller on the IO loop then
        asks a query actor to :meth:`fresh` it, since memory answers never do)."""
        with self._lock:
            snapshot = self._snapshot
            return snapshot is None or (time.monotonic() - snapshot.taken_at > self.ttl
                                        and not self._refreshing)

    def invalidate(self) -> None:
        """Make the next :meth:`fresh` read the store (after a rebuild, in tests); keep
        nothing new until a snapshot read from now on has settled."""
        with self._lock:
            self._pending = self._settled = None
            if self._snapshot is not None:
                self._snapshot = CoverageSnapshot(self._snapshot.coverage,
                                                  self._snapshot.streams, -1e9)


@dataclass(frozen=True, slots=True)
class StatisticsPlan:
    """A statistics question after step 1: the part answered from memory and the window
    (inclusive) the store must add, if any."""

    stream: str | None
    memory: Aggregate | None
    store_window: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class SeriesBucket:
    """One bucket of a series: its start and the aggregate of its readings."""

    time_ns: int
    min: float
    max: float
    mean: float
    count: int
    time_iso: str = ""
    """``time_ns`` as the API prints it (``ns_to_datetime(...).isoformat()``)."""


@dataclass(frozen=True, slots=True)
class Series:
    """A downsampled series: the interval (ns) and the non-empty buckets, oldest first."""

    interval_ns: int
    buckets: list[SeriesBucket]


@dataclass(frozen=True, slots=True)
class SeriesPlan:
    """A series question after step 1 (see :class:`StatisticsPlan`)."""

    stream: str | None
    interval_ns: int
    memory: dict[int, Aggregate]
    store_window: tuple[int, int] | None


def to_statistics(agg: Aggregate | None) -> Statistics:
    """The API's statistics of an aggregate (nulls when nothing was found)."""
    if agg is None or not agg.count:
        return Statistics(count=0, min=None, max=None, mean=None)
    return Statistics(count=agg.count, min=agg.min, max=agg.max, mean=agg.sum / agg.count)


class History:
    """Answers statistics and series (see the module docstring).

    ``hot`` is the hot tier of a process that writes (``all`` role, ``tps demo``), or
    None (``api`` role: the store answers everything). ``kept_raw`` keeps raw readings
    of final spans (by default: none; the service gives the ``api`` role a budget).
    """

    def __init__(self, hot: HotTier | None, board: CoverageBoard | None = None,
                 stored: StoredRollups | None = None, kept_raw: KeptRaw | None = None
                 ) -> None:
        self.hot = hot
        self.board = board or CoverageBoard()
        self.stored = stored if stored is not None else StoredRollups()
        """Closed rollup buckets read from the store (not answers: see its module)."""
        self.kept_raw = kept_raw if kept_raw is not None else KeptRaw(0)
        """Raw readings of final spans read from the store (not answers either)."""
        # Bucket starts recur in every answer (epoch-aligned): their text is kept, since
        # formatting 500 datetimes was a third of a series answer's cost. Bounded; a
        # race between threads only formats a label twice.
        self._labels: dict[int, str] = {}
        # The hot tier returns the same Aggregate object for a whole closed series bucket
        # every time (tps.history.hot): its SeriesBucket is kept by that identity (the
        # aggregate is held too, so its id is not reused). Bounded; one lock, held for
        # one answer's loop (the IO loop, heavy-request threads and query actors answer).
        self._buckets: dict[int, tuple[Aggregate, SeriesBucket]] = {}
        self._buckets_lock = threading.Lock()

    def _label(self, time_ns: int) -> str:
        text = self._labels.get(time_ns)
        if text is None:
            if len(self._labels) >= _MAX_LABELS:
                self._labels = {}
            text = self._labels[time_ns] = ns_to_datetime(time_ns).isoformat()
        return text

    def _memory_streams(self, stream: str | None) -> list[str] | None:
        """The streams memory must hold to answer, or None when it cannot know them.

        For all streams: every stream the store listed at the last snapshot and every
        stream memory holds (one this process started writing since)."""
        if stream is not None:
            return [stream]
        snapshot = self.board.current()
        if snapshot is None or self.hot is None:
            return None
        names = list(dict.fromkeys([*snapshot.streams, *self.hot.streams()]))
        return names or None

    # --- statistics -------------------------------------------------------------------

    def statistics_plan(self, after_ns: int | None, before_ns: int | None,
                        stream: str | None) -> StatisticsPlan:
        """Step 1 (no I/O). Raises InvalidArgument for a window that is too long."""
        if after_ns is not None and before_ns is not None:
            check_window_length(after_ns, before_ns)
        lo = OPEN_AFTER if after_ns is None else after_ns
        hi = OPEN_BEFORE if before_ns is None else before_ns
        if lo > hi:
            return StatisticsPlan(stream, None, None)
        streams = self._memory_streams(stream) if self.hot is not None else None
        if self.hot is not None and streams is not None:
            held = self.hot.aggregate(streams, lo, hi)
            if held is not None:
                memory, horizon = held
                rest = (lo, min(hi, horizon - 1)) if lo < horizon else None
                return StatisticsPlan(stream, memory, rest)
        return StatisticsPlan(stream, None, (lo, hi))

    def statistics_finish(self, store: Store, question: StatisticsPlan) -> Statistics:
        """Step 2 (blocking; a query actor): add the store's part."""
        if question.store_window is None:
            return to_statistics(question.memory)
        lo, hi = question.store_window
        coverage = self.board.fresh(store).for_stream(question.stream)
        final = self.board.settled(question.stream)
        held, rest = self.stored.take(store, question.stream, plan(lo, hi, coverage), final)
        raw, rest = self.kept_raw.take(store, question.stream, rest, final)
        stored = store.aggregate(rest, question.stream) if rest else None
        return to_statistics(combine((
            question.memory, stored, *(p.chunk.aggregate(p.start, p.end) for p in held),
            *(p.block.aggregate(p.lo, p.hi) for p in raw))))

    def statistics_now(self, question: StatisticsPlan) -> Statistics | None:
        """The answer when memory held the whole window (no store round trip), else None."""
        return to_statistics(question.memory) if question.store_window is None else None

    # --- series -----------------------------------------------------------------------

    def series_plan(self, after_ns: int, before_ns: int, points: int,
                    stream: str | None) -> SeriesPlan:
        """Step 1 (no I/O). InvalidArgument for ``points`` or a too long window.

        The caller checks ``after <= before``."""
        interval = series_interval(after_ns, before_ns, points)
        streams = self._memory_streams(stream) if self.hot is not None else None
        if self.hot is not None and streams is not None:
            held = self.hot.series(streams, after_ns, before_ns, interval)
            if held is not None:
                memory, horizon = held
                rest = (after_ns, min(before_ns, horizon - 1)) if after_ns < horizon else None
                return SeriesPlan(stream, interval, memory, rest)
        return SeriesPlan(stream, interval, {}, (after_ns, before_ns))

    def series_finish(self, store: Store, question: SeriesPlan) -> Series:
        """Step 2 (blocking; a query actor): add the store's part."""
        if question.store_window is None:
            return self.series_now(question) or Series(question.interval_ns, [])
        lo, hi = question.store_window
        coverage = self.board.fresh(store).for_stream(question.stream)
        final = self.board.settled(question.stream)
        interval = question.interval_ns
        pieces = plan(lo, hi, coverage, usable_tiers(interval))
        held, rest = self.stored.take(store, question.stream, pieces, final)
        raw, rest = self.kept_raw.take(store, question.stream, rest, final)
        merged = dict(store.series(rest, interval, question.stream)) if rest else {}
        for part in held:
            for label, agg in part.chunk.grouped(part.start, part.end, interval):
                earlier = merged.get(label)
                merged[label] = agg if earlier is None else earlier.merge(agg)
        for label, agg in _raw_grouped(raw, interval):
            earlier = merged.get(label)
            merged[label] = agg if earlier is None else earlier.merge(agg)
        for label, agg in question.memory.items():
            earlier = merged.get(label)
            merged[label] = agg if earlier is None else earlier.merge(agg)
        return self._series(interval, merged)

    def series_now(self, question: SeriesPlan) -> Series | None:
        """The answer when memory held the whole window, else None."""
        if question.store_window is not None:
            return None
        return self._series(question.interval_ns, question.memory)

    def _series(self, interval: int, buckets: dict[int, Aggregate]) -> Series:
        if not buckets:
            return Series(interval, [])
        starts, aggs = zip(*sorted(buckets.items()), strict=True)
        with self._buckets_lock:
            kept = self._buckets
            if len(kept) >= _MAX_BUCKETS:
                kept = self._buckets = {}
            # An entry holds its aggregate, so no other object has that id while it is
            # kept. Looked up with map (in C): a 30-day chart has 360 buckets.
            found: list[tuple[Aggregate, SeriesBucket] | None] = list(
                map(kept.get, map(id, aggs)))
            for index in [i for i, known in enumerate(found) if known is None]:
                agg = aggs[index]
                if not agg.count:
                    continue  # stays None: left out
                start = starts[index]
                entry = (agg, SeriesBucket(start, agg.min, agg.max, agg.sum / agg.count,
                                           agg.count, self._label(start)))
                kept[id(agg)] = found[index] = entry
        return Series(interval, [known[1] for known in found if known is not None])


def _raw_grouped(parts: list[HeldRaw], interval: int) -> list[tuple[int, Aggregate]]:
    """Kept raw parts per ``interval`` bucket (a bucket may span several blocks)."""
    out: list[tuple[int, Aggregate]] = []
    for part in parts:
        for label, agg in part.block.grouped(part.lo, part.hi, interval):
            if out and out[-1][0] == label:
                out[-1] = (label, out[-1][1].merge(agg))
            else:
                out.append((label, agg))
    return out
