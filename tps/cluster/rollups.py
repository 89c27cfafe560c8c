"""Rollups in the cluster's writers: the single-node fold, plus readings that arrive late.

A readings partition has one writer at a time (a lease), and its consumer delivers
messages in the order they were published - except redeliveries. A writer killed
with messages fetched but not acknowledged has them redelivered to the partition's
next owner only after the ack wait, by which time that owner has already written
newer messages of the same streams. The single-node fold would take those older
readings for replays of stored ones and skip them, so the rollups would miss readings
the raw data has. Some of them *are* replays (the dead writer stored them and died
before its acknowledgement), some are not, and the fold cannot tell which.

So a batch is split per stream against the writer's state (:class:`RollupState`):

* readings *after* the newest folded one are in order: they are folded exactly as in
  single-node mode ("state + batch", rollups in the same store write, folded on ack);
* readings *at or before* it are *late*. The writer asks the store which of their
  times it holds (one query over the late readings' span). Those it holds are not
  written again. If any are new - or if they came in a *redelivered* message, whose
  first writer may have stored the readings but not the rollups (an InfluxDB batch of
  more than 5,000 points takes several requests, the rollups ride in the last) - the
  stream's touched hours are recomputed: the store's raw minute aggregates (read
  before this write) plus every new reading of the batch, written **in the same store
  write** as the readings, so raw data and rollups still never disagree, whatever
  happens next. After the acknowledgement the stream is adopted again from the store
  (and reloaded into the hot tier), since its open buckets changed under the fold.
  Late readings of a message delivered for the first time that the store holds are
  plain replays (a publisher's retry): nothing to do.

A failed write is retried with the same fold (computed once, before the first
attempt): an attempt that stored part of the batch must not turn its late readings
into "replays" for the next one.

A batch may hold the same reading twice (a publisher's retry that grouped
differently): a stream's readings are sorted by time and deduplicated first.

Only the cluster writer uses this; single-node mode keeps :mod:`tps.history.rollup`
alone, where readings can only arrive in order.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from tps.history.buckets import HOUR, MINUTE, Aggregate, floor_to, fold_sorted
from tps.history.rollup import PendingFold, RollupState, adopt, points_from_minutes
from tps.history.types import CoverageMark, RollupPoint, RollupWrite
from tps.model import Reading
from tps.store.base import Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClusterFold:
    """What to write for one batch and what to do once the store accepted it."""

    readings: list[Reading]
    """The batch without the replays the store already holds (per stream, in time order)."""
    rollups: RollupWrite | None
    pending: PendingFold | None
    """The in-order streams' new state, installed on acknowledgement."""
    in_order: list[Reading]
    """The in-order streams' new readings (for the hot tier)."""
    recomputed: frozenset[str]
    """Streams whose touched hours were recomputed: adopt again after the ack."""
    replays: int
    """Readings the store already held (dropped from the write)."""


def sorted_runs(readings: Sequence[Reading]) -> dict[str, list[Reading]]:
    """Each stream's readings in time order, one per time (the last of duplicates)."""
    runs: dict[str, dict[int, Reading]] = {}
    for reading in readings:
        run = runs.get(reading.stream)
        if run is None:
            run = runs[reading.stream] = {}
        run[reading.time_ns] = reading
    return {stream: [run[t] for t in sorted(run)] for stream, run in runs.items()}


def fold_batch(store: Store | None, state: RollupState | None,
               readings: Sequence[Reading], uncertain: Collection[str] = ()) -> ClusterFold:
    """Split, look up and fold one batch (see the module docstring); blocking.

    ``uncertain`` are the streams with readings in redelivered messages. Without
    ``state`` (rollups off) only the in-batch sorting and deduplication apply and
    nothing is asked of the store.
    """
    runs = sorted_runs(readings)
    if state is None or store is None:
        ordered = [r for run in runs.values() for r in run]
        return ClusterFold(ordered, None, None, ordered, frozenset(), 0)
    unadopted = [stream for stream in runs if stream not in state]
    if unadopted:
        adopt(store, state, unadopted)
    in_order: list[Reading] = []
    recompute: dict[str, list[Reading]] = {}
    to_write: list[Reading] = []
    replays = 0
    for stream, run in runs.items():
        newest = state.newest(stream)
        if newest is None or run[0].time_ns > newest:
            in_order.extend(run)
            to_write.extend(run)
            continue
        split = next((i for i, r in enumerate(run) if r.time_ns > newest), len(run))
        late, fresh = run[:split], run[split:]
        held = _stored_times(store, stream, late[0].time_ns, late[-1].time_ns)
        new_late = [r for r in late if r.time_ns not in held]
        replays += len(late) - len(new_late)
        if new_late or stream in uncertain:
            recompute[stream] = late + fresh
            to_write.extend(new_late + fresh)
        else:
            in_order.extend(fresh)
            to_write.extend(fresh)
    pending = state.prepare(in_order) if in_order else None
    points = list(pending.write.points) if pending is not None else []
    marks = list(pending.write.coverage) if pending is not None else []
    for stream, touched in recompute.items():
        stream_points, mark = _recompute(store, state, stream, touched, to_write)
        points.extend(stream_points)
        marks.append(mark)
    if recompute:
        logger.warning("Rollups: late readings of %s (redelivered or published after newer "
                       "ones; %d already stored); recomputed their hours from raw readings in "
                       "the same write", ", ".join(sorted(recompute)), replays)
    rollups = RollupWrite(tuple(points), tuple(marks))
    return ClusterFold(to_write, rollups if rollups else None, pending, in_order,
                       frozenset(recompute), replays)


def _stored_times(store: Store, stream: str, lo: int, hi: int) -> set[int]:
    arrays = store.readings_arrays(lo, hi, [stream]).get(stream)
    return set(arrays[0]) if arrays is not None else set()


def _recompute(store: Store, state: RollupState, stream: str, touched_readings: list[Reading],
               written: list[Reading]) -> tuple[list[RollupPoint], CoverageMark]:
    """The full minute and hour buckets of every hour ``touched_readings`` touch: the
    store's raw aggregates (before this write) plus the stream's readings in
    ``written`` (those the store does not hold yet)."""
    hours = sorted({floor_to(r.time_ns, HOUR) for r in touched_readings})
    stored = store.raw_aggregates(hours[0], hours[-1] + HOUR - 1, MINUTE, [stream])
    touched = set(hours)
    minutes: dict[int, Aggregate] = {start: agg for start, agg in stored.get(stream, [])
                                     if floor_to(start, HOUR) in touched}
    new = [r for r in written if r.stream == stream]
    times = [r.time_ns for r in new]
    values = [r.value for r in new]
    for start, agg in fold_sorted(times, values, MINUTE):
        held = minutes.get(start)
        minutes[start] = agg if held is None else held.merge(agg)
    points = {(p.width, p.start): p for p in state.unwritten(stream)}
    for point in points_from_minutes(stream, sorted(minutes.items())):
        points[(point.width, point.start)] = point
    newest = state.newest(stream)
    until = max([*times[-1:], *([newest] if newest is not None else [])])
    live_from = state.live_from(stream)
    mark = CoverageMark(stream, live_from if live_from is not None else hours[0], until=until)
    return list(points.values()), mark
