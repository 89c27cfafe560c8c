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
hour - the stored minute rollups when the stored coverage ends exactly at that reading,
else computed from the raw readings - so the open buckets start from exactly what the
store holds, whatever a previous process did. The hour's buckets are rewritten with the
next batch, and the stream's live coverage continues the stored one when that ends
exactly at the newest stored reading (the previous process wrote rollups up to its last
write), else starts at that hour.

Not thread-safe: the writer actor owns it.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tps.history.buckets import HOUR, MINUTE, Aggregate, combine, floor_to, fold_sorted
from tps.history.types import CoverageMark, RollupPoint, RollupWrite
from tps.model import Reading

if TYPE_CHECKING:
    from tps.store.base import Store

logger = logging.getLogger(__name__)

ADOPT_GROUP = 25
"""Streams whose newest hour is read raw in one query at adoption."""


@dataclass(frozen=True, slots=True)
class _Stream:
    """What is folded for one stream: the newest reading and the open buckets."""

    last_ns: int | None
    live_from: int | None
    minute: tuple[int, Aggregate] | None
    hour: tuple[int, Aggregate] | None
    unwritten: tuple[RollupPoint, ...] = ()
    """Buckets loaded at adoption, written with the stream's next batch."""


@dataclass(frozen=True, slots=True)
class PendingFold:
    """A batch folded into the state but not yet acknowledged: what to write with it and
    the state to install when the store accepts it."""

    write: RollupWrite
    streams: dict[str, _Stream]


class RollupState:
    """Open 1 m and 1 h buckets of every stream the writer writes."""

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}

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
            (hour_start, hour) if hour is not None else None, tuple(unwritten))

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
        """Buckets loaded at adoption and not yet written with a batch."""
        return self._streams[stream].unwritten

    def prepare(self, readings: Sequence[Reading]) -> PendingFold:
        """The rollup points and coverage marks to write with ``readings``.

        Every stream of the batch must have been adopted. Does not change the state.
        """
        runs: dict[str, tuple[list[int], list[float]]] = {}
        for reading in readings:
            run = runs.get(reading.stream)
            if run is None:
                run = runs[reading.stream] = ([], [])
            run[0].append(reading.time_ns)
            run[1].append(reading.value)
        points: list[RollupPoint] = []
        marks: list[CoverageMark] = []
        new_states: dict[str, _Stream] = {}
        for stream, (times, values) in runs.items():
            state = self._streams[stream]
            if state.last_ns is not None:
                skip = bisect_right(times, state.last_ns)
                if skip:
                    times, values = times[skip:], values[skip:]
            written: dict[tuple[int, int], RollupPoint] = {
                (p.width, p.start): p for p in state.unwritten}
            if not times:
                if written and state.last_ns is not None and state.live_from is not None:
                    points.extend(written.values())
                    marks.append(CoverageMark(stream, state.live_from, until=state.last_ns))
                    new_states[stream] = _Stream(state.last_ns, state.live_from,
                                                 state.minute, state.hour)
                continue
            minute = _fold(state.minute, fold_sorted(times, values, MINUTE), stream, MINUTE,
                           written)
            hour = _fold(state.hour, fold_sorted(times, values, HOUR), stream, HOUR, written)
            live_from = state.live_from if state.live_from is not None \
                else floor_to(times[0], HOUR)
            points.extend(written.values())
            marks.append(CoverageMark(stream, live_from, until=times[-1]))
            new_states[stream] = _Stream(times[-1], live_from, minute, hour)
        return PendingFold(RollupWrite(tuple(points), tuple(marks)), new_states)

    def commit(self, pending: PendingFold) -> None:
        """The store accepted the batch ``pending`` was prepared for: fold it in."""
        self._streams.update(pending.streams)


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
        continuing = {stream: at for stream in names for at, _, until
                      in coverage.get(stream, ()) if until == newest[stream]}
        # Where the stored coverage ends at the newest reading, the stored minute points
        # of its hour are exact (written with the readings): 60 points, not the raw hour.
        last = hour_start + HOUR - 1
        fresh = [stream for stream in names if stream not in continuing]
        minutes: dict[str, list[tuple[int, Aggregate]]] = {}
        for start in range(0, len(fresh), ADOPT_GROUP):
            # In groups: 200 raw-only 10 Hz streams are 7 million readings in that hour,
            # more than one query answers within the store's timeout.
            group = fresh[start:start + ADOPT_GROUP]
            minutes.update(store.raw_aggregates(hour_start, last, MINUTE, group))
        if continuing:
            minutes.update(store.rollups(MINUTE, hour_start, last, list(continuing)))
        for stream in names:
            state.adopt(stream, newest[stream], minutes.get(stream, []), continuing.get(stream))
    logger.info("Rollups: adopted %d stream(s) from the store (%d newest hour(s) read)",
                len(streams), len(by_hour))
