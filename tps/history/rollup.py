"""The writer's rollup state: open buckets per stream, folded only on acknowledgement.

The writer asks :meth:`RollupState.prepare` for the rollup points of a batch ("state +
batch"), writes them **in the same store write** as the batch (one InfluxDB ``/write``
request, one SQLite transaction) and calls :meth:`RollupState.commit` only when the
store acknowledged it. So raw readings and rollups never disagree in the store: a
crash, a failed or retried write leaves either both or neither.

Replays are folded once. Readings of a stream reach the writer in time order (the
readers make timestamps strictly increasing per stream and the writer writes in spool
order), so a reading at or before the newest one already folded is a replay of a
stored reading and is skipped.

Before the first batch of a stream, the writer *adopts* it (:func:`adopt`): it reads
the newest stored reading of the stream and the per-minute aggregates of that reading's
hour - the stored minute rollups wholly inside a stored coverage range that reaches
into that hour, and the raw readings' from that range's end on (all of the hour when no
range reaches it) - so the open buckets start from exactly what the store holds,
whatever a previous process did. The hour's buckets are rewritten with the next batch,
and the stream's live coverage continues the range that reached into the hour (every
bucket before the hour was inside it, every bucket of the hour is rewritten), else
starts at that hour.

Open buckets are written at most every ``write_every`` seconds per stream
(``TPS_ROLLUP_WRITE_INTERVAL``; 0: with every batch), and always in the batch that
closes them. Between two writes a stream's new readings are only *held* (folded when
the stream is written next), so a flush of 200 slow streams costs a few list appends
per stream instead of two folds, three points and a coverage mark. This never makes
coverage claim an unwritten bucket: a stream's coverage mark is written only together
with every bucket it touched since its last write, and says ``until`` = the newest
reading folded into those. Readings held since then lie after that mark, in the open
minute (a batch reaching the end of the open minute is written at once), so every
bucket wholly inside the stored coverage is exact at every moment. The coverage the
store advertises lags the newest readings by up to ``write_every``; the readings after
it are read raw. The final flush (shutdown) writes every stream.

Not thread-safe: the writer actor owns it.
"""

from __future__ import annotations

import logging
import math
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tps.history.buckets import (
    HOUR,
    MINUTE,
    Aggregate,
    Runs,
    combine,
    floor_to,
    fold_run,
    runs_by_stream,
)
from tps.history.types import CoverageMark, RollupPoint, RollupWrite
from tps.model import Reading

if TYPE_CHECKING:
    from tps.store.base import Store

logger = logging.getLogger(__name__)

ADOPT_GROUP = 25
"""Streams whose newest hour is read raw in one query at adoption."""
HOLD_AT_MOST = 4096
"""Readings of one stream held unfolded at most: beyond, they are folded (not written),
which bounds the memory a fast stream holds between two writes."""

_Run = tuple[list[int], list[float]]


@dataclass(frozen=True, slots=True)
class _Stream:
    """What is folded for one stream: the newest reading and the open buckets."""

    last_ns: int | None
    """The newest reading taken (folded or held)."""
    live_from: int | None
    minute: tuple[int, Aggregate] | None
    hour: tuple[int, Aggregate] | None
    unwritten: tuple[RollupPoint, ...] = ()
    """Buckets folded but not written yet (adopted ones, or folded while held)."""
    held: tuple[_Run, ...] = ()
    """Readings taken but not folded yet, oldest first, all in ``last_ns``'s minute."""
    held_count: int = 0
    due: float | None = None
    """When (the state's clock) what is unwritten or held must be written; None:
    nothing is."""


@dataclass(frozen=True, slots=True)
class PendingFold:
    """A batch folded into the state but not yet acknowledged: what to write with it and
    the state to install when the store accepts it."""

    write: RollupWrite
    streams: dict[str, _Stream]
    now: float = 0.0
    """The state's clock when it was prepared."""


class RollupState:
    """Open 1 m and 1 h buckets of every stream the writer writes.

    ``write_every``: seconds a stream's open buckets may stay unwritten (0: write them
    with every batch); ``clock``: monotonic seconds (tests pass their own).
    """

    def __init__(self, write_every: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.write_every = write_every
        self._clock = clock
        self._streams: dict[str, _Stream] = {}
        # (due, stream) in due order: streams holding unwritten buckets or readings, so
        # one that falls silent is still written on time. An entry is stale when the
        # stream's ``due`` differs (it was written, forgotten or adopted since).
        self._due: deque[tuple[float, str]] = deque()

    def __contains__(self, stream: str) -> bool:
        return stream in self._streams

    def unadopted(self, readings: Iterable[Reading]) -> list[str]:
        """Streams of ``readings`` that must be adopted before they can be folded."""
        seen: set[str] = set()
        out: list[str] = []
        streams = self._streams
        for reading in readings:
            name = reading.stream
            if name not in seen:
                seen.add(name)
                if name not in streams:
                    out.append(name)
        return out

    def adopt(self, stream: str, newest_ns: int | None,
              minutes: Sequence[tuple[int, Aggregate]], live_from: int | None) -> None:
        """Start ``stream`` from the store: its newest stored reading, the raw minute
        aggregates of that reading's hour, and where its live coverage begins."""
        if newest_ns is None:
            self._streams[stream] = _Stream(None, None, None, None)
            return
        hour_start = floor_to(newest_ns, HOUR)
        minutes = [(start, agg) for start, agg in minutes if floor_to(start, HOUR) == hour_start]
        hour = combine(agg for _, agg in minutes)
        unwritten = [RollupPoint(stream, MINUTE, start, agg) for start, agg in minutes]
        if hour is not None:
            unwritten.append(RollupPoint(stream, HOUR, hour_start, hour))
        minute_now = minutes[-1] if minutes and minutes[-1][0] == floor_to(newest_ns, MINUTE) \
            else None
        self._streams[stream] = _Stream(
            newest_ns, hour_start if live_from is None else live_from, minute_now,
            (hour_start, hour) if hour is not None else None, tuple(unwritten),
            due=-math.inf if unwritten else None)

    def forget(self, streams: Iterable[str]) -> None:
        """Adopt these streams again before their next batch (after a partial write)."""
        for stream in streams:
            self._streams.pop(stream, None)

    def streams(self) -> list[str]:
        """Every adopted stream."""
        return list(self._streams)

    def newest(self, stream: str) -> int | None:
        """The newest folded (or adopted) reading of an adopted stream, None if none."""
        return self._streams[stream].last_ns

    def live_from(self, stream: str) -> int | None:
        """Where the live coverage of an adopted stream begins (its range's key)."""
        return self._streams[stream].live_from

    def unwritten(self, stream: str) -> tuple[RollupPoint, ...]:
        """Buckets folded or adopted and not yet written, held readings folded in: what
        must be written before a coverage mark may reach ``newest(stream)``."""
        state = self._streams[stream]
        written = {(p.width, p.start): p for p in state.unwritten}
        if state.held:
            _fold_both(state, _joined(state.held), stream, written)
        return tuple(written.values())

    def due(self) -> bool:
        """True when some stream's open buckets are due to be written (or adopted
        buckets wait), so a flush without readings should :meth:`prepare` anyway."""
        return bool(self._due) and self._due[0][0] <= self._clock()

    def prepare(self, readings: Sequence[Reading], *, everything: bool = False,
                runs: Runs | None = None) -> PendingFold:
        """The rollup points and coverage marks to write with ``readings``: those of the
        streams that close a bucket or are due (see the module docstring), of every
        stream holding something when ``everything``.

        Every stream of the batch must have been adopted. ``runs``: the batch already
        split per stream (:func:`~tps.history.buckets.runs_by_stream`; not changed).
        Does not change the state.
        """
        now = self._clock()
        if runs is None:
            runs = runs_by_stream(readings)
        points: list[RollupPoint] = []
        marks: list[CoverageMark] = []
        new_states: dict[str, _Stream] = {}
        streams = self._streams
        every = self.write_every <= 0
        for stream, (times, values) in runs.items():
            state = streams[stream]
            if state.last_ns is not None:
                skip = bisect_right(times, state.last_ns)
                if skip:
                    times, values = times[skip:], values[skip:]
            due = state.due
            if not times:
                if due is not None and (everything or every or due <= now):
                    new_states[stream] = _write(stream, state, None, points, marks)
                continue
            # The batch closes the open minute (or completes it: a reading at its last
            # instant) when it reaches the minute's last instant.
            ref = times[0] if state.last_ns is None else state.last_ns
            closes = times[-1] >= ref - ref % MINUTE + MINUTE - 1
            if every or everything or closes or (due is not None and due <= now):
                new_states[stream] = _write(stream, state, (times, values), points, marks)
            else:
                new_states[stream] = _hold(stream, state, times, values,
                                           now + self.write_every if due is None else due)
        for due, stream in self._due:
            if not everything and due > now:
                break
            waiting = streams.get(stream)
            if stream not in new_states and stream not in runs and waiting is not None \
                    and waiting.due == due:
                new_states[stream] = _write(stream, waiting, None, points, marks)
        return PendingFold(RollupWrite(tuple(points), tuple(marks)), new_states, now)

    def commit(self, pending: PendingFold) -> None:
        """The store accepted the batch ``pending`` was prepared for: fold it in."""
        streams = self._streams
        queue = self._due
        for stream, state in pending.streams.items():
            before = streams.get(stream)
            streams[stream] = state
            if state.due is not None and state.due != math.inf and state.due != -math.inf \
                    and (before is None or before.due != state.due):
                queue.append((state.due, stream))
        while queue and (queue[0][0] <= pending.now
                         or (streams.get(queue[0][1]) or _GONE).due != queue[0][0]):
            queue.popleft()


_GONE = _Stream(None, None, None, None)


def _joined(held: tuple[_Run, ...]) -> _Run:
    """Held runs as one run."""
    if len(held) == 1:
        return held[0]
    times: list[int] = []
    values: list[float] = []
    for run_times, run_values in held:
        times.extend(run_times)
        values.extend(run_values)
    return times, values


def _write(stream: str, state: _Stream, run: _Run | None, points: list[RollupPoint],
           marks: list[CoverageMark]) -> _Stream:
    """Fold what ``stream`` holds and ``run``, add every bucket it touched since its last
    write and its coverage mark to ``points`` and ``marks``; the state after."""
    held = (*state.held, run) if run is not None else state.held
    written: dict[tuple[int, int], RollupPoint] = {(p.width, p.start): p for p in state.unwritten}
    minute, hour, last, live_from = state.minute, state.hour, state.last_ns, state.live_from
    if held:
        times, values = _joined(held)
        minute, hour = _fold_both(state, (times, values), stream, written)
        last = times[-1]
        if live_from is None:
            live_from = floor_to(times[0], HOUR)
    if written and last is not None and live_from is not None:
        points.extend(written.values())
        marks.append(CoverageMark(stream, live_from, until=last))
    return _Stream(last, live_from, minute, hour)


def _hold(stream: str, state: _Stream, times: list[int], values: list[float], due: float
          ) -> _Stream:
    """Take ``times``/``values`` without writing: held, or folded when many are held."""
    live_from = state.live_from if state.live_from is not None else floor_to(times[0], HOUR)
    count = state.held_count + len(times)
    if count <= HOLD_AT_MOST:
        return _Stream(times[-1], live_from, state.minute, state.hour, state.unwritten,
                       (*state.held, (times, values)), count, due)
    written: dict[tuple[int, int], RollupPoint] = {(p.width, p.start): p for p in state.unwritten}
    minute, hour = _fold_both(state, _joined((*state.held, (times, values))), stream, written)
    return _Stream(times[-1], live_from, minute, hour, tuple(written.values()), due=due)


def _fold_both(state: _Stream, run: _Run, stream: str,
               written: dict[tuple[int, int], RollupPoint]
               ) -> tuple[tuple[int, Aggregate] | None, tuple[int, Aggregate] | None]:
    """Fold ``run`` into ``state``'s open minute and hour (see :func:`_fold`)."""
    folded = fold_run(run[0], run[1], (HOUR, MINUTE))
    return (_fold(state.minute, folded[MINUTE], stream, MINUTE, written),
            _fold(state.hour, folded[HOUR], stream, HOUR, written))


def _fold(open_bucket: tuple[int, Aggregate] | None, folded: list[tuple[int, Aggregate]],
          stream: str, width: int, written: dict[tuple[int, int], RollupPoint]
          ) -> tuple[int, Aggregate] | None:
    """Merge a batch's buckets into the open one; record each touched bucket's full
    aggregate in ``written``; return the new open bucket."""
    current = open_bucket
    for start, agg in folded:
        if current is not None and current[0] == start:
            agg = current[1].merge(agg)
        current = (start, agg)
        written[(width, start)] = RollupPoint(stream, width, start, agg)
    return current


def points_from_minutes(stream: str, minutes: Sequence[tuple[int, Aggregate]]
                        ) -> list[RollupPoint]:
    """Minute points and the hour points combined from them (whole hours of minutes)."""
    points = [RollupPoint(stream, MINUTE, start, agg) for start, agg in minutes]
    hours: dict[int, list[Aggregate]] = {}
    for start, agg in minutes:
        hours.setdefault(floor_to(start, HOUR), []).append(agg)
    for start, parts in hours.items():
        total = combine(parts)
        if total is not None:
            points.append(RollupPoint(stream, HOUR, start, total))
    return points


def repair(store: Store, state: RollupState, readings: Sequence[Reading]) -> None:
    """After a partial write - the store kept a batch but dropped some of its readings,
    which the rollups written with it counted - recompute the hours the batch touched
    from the raw readings kept, and adopt its streams again before their next batch.

    Blocking; the writer calls it on its own thread.
    """
    if not readings:
        return
    streams = sorted({r.stream for r in readings})
    lo = floor_to(min(r.time_ns for r in readings), HOUR)
    hi = floor_to(max(r.time_ns for r in readings), HOUR) + HOUR
    minutes = store.raw_aggregates(lo, hi - 1, MINUTE, streams)
    points = [p for stream, aggs in minutes.items() for p in points_from_minutes(stream, aggs)]
    store.write_rollups(RollupWrite(tuple(points)))
    state.forget(streams)
    logger.warning("Rollups: recomputed %d hour(s) of %d stream(s) from raw readings after "
                   "the store dropped part of a batch", (hi - lo) // HOUR, len(streams))


def adopt(store: Store, state: RollupState, streams: Sequence[str]) -> None:
    """Adopt ``streams`` from ``store`` (see the module docstring): one query for the
    newest readings and coverage, and one per distinct newest hour (usually one).

    Blocking; the writer calls it on its own thread before it writes these streams,
    while nothing else writes them.
    """
    if not streams:
        return
    newest = store.newest_times(streams)
    coverage = store.coverage(streams)
    by_hour: dict[int, list[str]] = {}
    for stream in streams:
        newest_ns = newest.get(stream)
        if newest_ns is None:
            state.adopt(stream, None, (), None)
        else:
            by_hour.setdefault(floor_to(newest_ns, HOUR), []).append(stream)
    for hour_start, names in by_hour.items():
        last = hour_start + HOUR - 1
        # A stored range reaching into the newest hour is continued: the stored minute
        # points wholly inside it are exact (60 points, not the raw hour), and only the
        # minutes from its end on are read raw - a few seconds to a minute of readings,
        # since open buckets are written every TPS_ROLLUP_WRITE_INTERVAL.
        continuing: dict[str, tuple[int, int]] = {}  # stream -> (range key, raw from)
        for stream in names:
            reach = [(until, at) for at, lo, until in coverage.get(stream, ())
                     if lo <= hour_start <= until + 1]
            if reach:
                until, at = max(reach)
                continuing[stream] = (at, floor_to(until + 1, MINUTE))
        fresh = [stream for stream in names if stream not in continuing]
        minutes: dict[str, list[tuple[int, Aggregate]]] = {}
        for start in range(0, len(fresh), ADOPT_GROUP):
            # In groups: 200 raw-only 10 Hz streams are 7 million readings in that hour,
            # more than one query answers within the store's timeout.
            group = fresh[start:start + ADOPT_GROUP]
            minutes.update(store.raw_aggregates(hour_start, last, MINUTE, group))
        if continuing:
            minutes.update(_continued_minutes(store, hour_start, newest, continuing))
        for stream in names:
            key = continuing[stream][0] if stream in continuing else None
            state.adopt(stream, newest[stream], minutes.get(stream, []), key)
    logger.info("Rollups: adopted %d stream(s) from the store (%d newest hour(s) read)",
                len(streams), len(by_hour))


def _continued_minutes(store: Store, hour_start: int, newest: dict[str, int],
                       continuing: dict[str, tuple[int, int]]
                       ) -> dict[str, list[tuple[int, Aggregate]]]:
    """The minute aggregates of the newest hour of streams whose stored coverage reaches
    into it: stored points before each stream's raw-from minute, raw ones from it on."""
    last = hour_start + HOUR - 1
    names = list(continuing)
    stored = store.rollups(MINUTE, hour_start, last, names)
    out: dict[str, list[tuple[int, Aggregate]]] = {}
    for start in range(0, len(names), ADOPT_GROUP):
        group = names[start:start + ADOPT_GROUP]
        unread = [stream for stream in group if continuing[stream][1] <= newest[stream]]
        raw = store.raw_aggregates(min(continuing[stream][1] for stream in unread), last,
                                   MINUTE, unread) if unread else {}
        for stream in group:
            cut = continuing[stream][1]
            out[stream] = [(t, agg) for t, agg in stored.get(stream, []) if t < cut] + \
                [(t, agg) for t, agg in raw.get(stream, []) if t >= cut]
    return out
