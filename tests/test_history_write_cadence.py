"""Open rollup buckets written at most every ``TPS_ROLLUP_WRITE_INTERVAL``, never covered
before they are written (tps/history/rollup.py).

Many slow streams made every flush rewrite each stream's open 1 m and 1 h buckets and
its coverage mark. Now a stream's open buckets wait up to the interval (a bucket is
written in the batch that closes it); the coverage mark waits with them, so an
``api``-role answer (store only) equals a raw scan at every moment.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.history import assert_buckets_equal_folds, assert_same_statistics
from tests.support.rollup_checks import rollup_mismatches, same_aggregate
from tests.support.wait import wait_until
from tps.actors.stats import WriterStats
from tps.actors.writer import WriterHandle
from tps.config.settings import Settings
from tps.history.answers import History
from tps.history.buckets import (
    DAY,
    HOUR,
    MINUTE,
    SECOND,
    TIERS,
    Aggregate,
    floor_to,
    fold_run,
    fold_sorted,
)
from tps.history.planner import LATE_NS, Coverage
from tps.history.rollup import RollupState, adopt
from tps.model import Reading
from tps.store.base import Store
from tps.store.sqlite import SqliteStore

T0 = 1_690_549_200_000_000_000  # 2023-07-28T13:00:00Z, an hour boundary


class Clock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _points(state: RollupState, batch: list[Reading], everything: bool = False
            ) -> dict[tuple[int, int], Aggregate]:
    pending = state.prepare(batch, everything=everything)
    state.commit(pending)
    return {(p.width, p.start): p.agg for p in pending.write.points}


def _second(stream: str, second: int, per_second: int = 10) -> list[Reading]:
    """``per_second`` readings of ``stream`` in the second ``T0 + second`` s."""
    step = SECOND // per_second
    return [Reading(stream, T0 + second * SECOND + k * step, float(second * 100 + k))
            for k in range(per_second)]


def test_open_buckets_wait_for_the_interval_and_closing_buckets_do_not() -> None:
    clock = Clock()
    state = RollupState(5.0, clock)
    state.adopt("a", None, (), None)
    written = []
    for second in range(0, 70):  # one batch a second, 10 readings each
        pending = state.prepare(_second("a", second))
        state.commit(pending)
        if pending.write.points:
            written.append(second)
            mark = pending.write.coverage[0]
            assert mark.until == T0 + second * SECOND + 9 * SECOND // 10
        clock.now += 1.0
    # Written 5 s after the first reading held since the last write (six batches at a
    # time); the batch at 60 s closes the first minute and is written at once.
    assert written == [5, 11, 17, 23, 29, 35, 41, 47, 53, 59, 60, 66]
    everything = _points(state, [], everything=True)
    assert everything[(MINUTE, T0 + MINUTE)].count == 100


def test_a_batch_reaching_a_minute_s_last_instant_is_written_at_once() -> None:
    state = RollupState(60.0, Clock())
    state.adopt("a", None, (), None)
    assert _points(state, [Reading("a", T0 + SECOND, 1.0)]) == {}
    last = T0 + MINUTE - 1  # completes the minute: coverage may now hold it
    points = _points(state, [Reading("a", last, 2.0)])
    assert points[(MINUTE, T0)] == Aggregate(1.0, 2.0, 3.0, 2)


def test_a_silent_stream_is_written_when_due_without_new_readings() -> None:
    clock = Clock()
    state = RollupState(5.0, clock)
    state.adopt("a", None, (), None)
    state.adopt("b", None, (), None)
    _points(state, _second("a", 1) + _second("b", 1))
    clock.now += 3.0
    _points(state, _second("b", 4))  # b keeps talking, a falls silent
    assert not state.due()
    clock.now += 2.0
    assert state.due()
    points = _points(state, [])
    assert set(points) == {(MINUTE, T0), (HOUR, T0)}
    assert points[(MINUTE, T0)].count == 20, "both held batches of b, written as one"
    assert not state.due()
    assert _points(state, [], everything=True) == {}, "nothing left unwritten"


def test_replays_of_held_readings_are_folded_once() -> None:
    clock = Clock()
    state = RollupState(5.0, clock)
    state.adopt("a", None, (), None)
    first = _second("a", 1)
    _points(state, first)
    clock.now += 6.0
    points = _points(state, first + _second("a", 2))  # spool replay, then new
    assert points[(MINUTE, T0)].count == 20


def test_unwritten_buckets_include_the_held_readings() -> None:
    state = RollupState(5.0, Clock())
    state.adopt("a", None, (), None)
    _points(state, _second("a", 1))
    got = {(p.width, p.start): p.agg.count for p in state.unwritten("a")}
    assert got == {(MINUTE, T0): 10, (HOUR, T0): 10}


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(-100, 100), min_size=1, max_size=200),
       steps=st.lists(st.integers(1, 20 * SECOND), min_size=200, max_size=200),
       cuts=st.lists(st.integers(0, 200), max_size=12),
       ticks=st.lists(st.floats(0, 4), min_size=14, max_size=14))
def test_folding_with_held_buckets_then_a_final_flush_equals_folding_all_at_once(
        values: list[float], steps: list[int], cuts: list[int], ticks: list[float]) -> None:
    times = [T0 + sum(steps[: i + 1]) for i in range(len(values))]
    readings = [Reading("s", t, v) for t, v in zip(times, values, strict=False)]
    clock = Clock()
    state = RollupState(5.0, clock)
    state.adopt("s", None, (), None)
    stored: dict[tuple[int, int], Aggregate] = {}
    bounds = sorted({0, len(readings), *(min(c, len(readings)) for c in cuts)})
    for (lo, hi), tick in zip(itertools.pairwise(bounds), ticks, strict=False):
        stored |= _points(state, readings[max(0, lo - 3):hi])  # with some replayed
        clock.now += tick
    stored |= _points(state, [], everything=True)
    assert_buckets_equal_folds(stored, times, values, TIERS)


# --- against the stores: coverage never holds an unwritten bucket ---------------------


def _covered_buckets_are_exact(store: Store, streams: list[str], lo: int, hi: int) -> None:
    coverage = {name: Coverage((a, until + 1) for _, a, until in ranges)
                for name, ranges in store.coverage(streams).items()}
    for width in TIERS:
        raw = store.raw_aggregates(lo, hi, width, streams)
        stored = store.rollups(width, lo, hi, streams)
        for stream in streams:
            want = dict(raw.get(stream, []))
            got = dict(stored.get(stream, []))
            own = coverage.get(stream, Coverage())
            for start in range(floor_to(lo, width), hi, width):
                if not own.covers(start, start + width):
                    continue
                context = (stream, width, start)
                assert (start in got) == (start in want), context
                if start in want:
                    assert same_aggregate(got[start], want[start]), (context, got, want)


def test_an_api_answer_right_after_each_flush_equals_a_raw_scan(store: Store) -> None:
    """The ``api`` role answers from the store's rollups within its coverage plus raw
    readings: were a held (unwritten) bucket ever covered, its stale stored value would
    be used and the answer would differ from the raw scan."""
    rng = random.Random(3)
    clock = Clock()
    state = RollupState(5.0, clock)
    history = History(None)
    history.board.ttl = 0.0  # read the coverage for every question
    history.board.settle = 0.0  # keep chunks judged on the newest coverage
    newest = T0 + 58 * MINUTE
    flushes = 0
    # Past LATE_NS after the hour, so its chunk becomes final and is kept.
    while newest < T0 + HOUR + LATE_NS + 3 * MINUTE:
        batch: list[Reading] = []
        for stream in ("a", "b"):
            for _ in range(rng.randint(0, 6)):
                newest += rng.choice((1, SECOND // 3, 2 * SECOND))
                batch.append(Reading(stream, newest, round(rng.uniform(-5, 5), 2)))
        if flushes % 7 == 3:
            # The minute's last instant: that bucket is complete and written at once.
            newest = floor_to(newest, MINUTE) + MINUTE - 1
            batch.append(Reading("a", newest, 99.0))
        adopt(store, state, state.unadopted(batch))
        pending = state.prepare(batch)
        store.write(batch, pending.write)
        state.commit(pending)
        _covered_buckets_are_exact(store, ["a", "b"], T0, newest)
        for after in (T0 + 57 * MINUTE, floor_to(newest, MINUTE), floor_to(newest, HOUR),
                      newest - 10 * SECOND):
            for asked in ("a", "b", None):
                question = history.statistics_plan(after, newest + MINUTE, asked)
                got = history.statistics_finish(store, question)
                assert_same_statistics(got, store.statistics(after, newest + MINUTE, asked),
                                       (flushes, after, asked))
        clock.now += 1.0
        flushes += 1
    assert history.stored.fetches >= 1, "covered hours were answered from stored rollups"


def test_the_writer_writes_due_open_buckets_on_its_tick_without_new_readings(
        tmp_path: Path) -> None:
    settings_ = replace(Settings(), data_dir=tmp_path, spool=False, flush_interval=0.05,
                        rollup_write_interval=0.3)
    path = tmp_path / "tps.sqlite3"
    handle = WriterHandle(settings_, lambda: SqliteStore(path), WriterStats())
    handle.start()
    store = SqliteStore(path)
    try:
        base = floor_to(T0, MINUTE) + 10 * SECOND
        handle.submit([Reading("a", base + k * SECOND, float(k)) for k in range(5)])

        def written() -> bool:
            return [agg for _, agg in store.rollups(MINUTE, T0, T0 + HOUR, ["a"]).get("a", [])
                    ] == [Aggregate(0.0, 4.0, 10.0, 5)]

        wait_until(written, 10, "the open minute written once due")
        assert store.coverage(["a"])["a"][0][2] == base + 4 * SECOND
    finally:
        handle.stop(5.0)
        store.close()


class _RawReads:
    """A store that records the windows of its raw aggregate reads."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.windows: list[tuple[int, int]] = []

    def raw_aggregates(self, after_ns: int, before_ns: int, width: int,
                       streams: Sequence[str] | None = None
                       ) -> dict[str, list[tuple[int, Aggregate]]]:
        self.windows.append((after_ns, before_ns))
        return self.store.raw_aggregates(after_ns, before_ns, width, streams)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_after_a_crash_with_held_readings_adoption_reads_raw_only_after_the_coverage(
        store: Store) -> None:
    clock = Clock()
    state = RollupState(5.0, clock)
    start = T0 + 50 * MINUTE
    for second in range(0, 150):  # 2.5 minutes, the last ones held, then kill -9
        batch = [Reading("a", start + second * SECOND + k * SECOND // 2, float(second % 7 + k))
                 for k in range(2)]
        adopt(store, state, state.unadopted(batch))
        pending = state.prepare(batch)
        store.write(batch, pending.write)
        state.commit(pending)
        clock.now += 1.0
    [(key, _, until)] = store.coverage(["a"])["a"]
    newest = store.newest_times(["a"])["a"]
    assert until < newest, "the newest readings' buckets were held"
    restarted = RollupState(5.0, clock)
    recording = _RawReads(store)
    adopt(cast(Store, recording), restarted, ["a"])
    assert recording.windows and all(lo >= floor_to(until + 1, MINUTE)
                                     for lo, _ in recording.windows), recording.windows
    more = [Reading("a", newest + k * SECOND, float(k)) for k in range(1, 80)]
    for chunk in range(0, len(more), 10):
        pending = restarted.prepare(more[chunk:chunk + 10])
        store.write(more[chunk:chunk + 10], pending.write)
        restarted.commit(pending)
        clock.now += 1.0
    pending = restarted.prepare([], everything=True)
    store.write_rollups(pending.write)
    restarted.commit(pending)
    assert rollup_mismatches(store, ["a"], start, more[-1].time_ns) == []
    assert store.coverage(["a"])["a"] == [(key, key, more[-1].time_ns)], "one range, continued"


@settings(max_examples=200, deadline=None)
@given(start=st.integers(-3 * DAY, 3 * DAY),
       steps=st.lists(st.integers(0, 40 * SECOND), min_size=1, max_size=30),
       values=st.lists(st.floats(-1e6, 1e6), min_size=30, max_size=30))
def test_fold_run_equals_fold_sorted_for_every_width(start: int, steps: list[int],
                                                      values: list[float]) -> None:
    times = list(itertools.accumulate(steps, initial=T0 + start))[1:]
    values = values[:len(times)]
    widths = (DAY, HOUR, MINUTE)
    assert fold_run(times, values, widths) == {w: fold_sorted(times, values, w) for w in widths}
