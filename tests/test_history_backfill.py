"""Backfill and rebuild of rollups from stored raw readings, in both stores."""

from __future__ import annotations

import random

from tests.support.history import assert_same_statistics, irregular, write_like_the_writer
from tps.history.answers import History
from tps.history.backfill import Backfill, BackfillProgress
from tps.history.buckets import HOUR, MINUTE, SECOND, Aggregate, floor_to, fold_sorted
from tps.history.planner import Buckets, Coverage, Raw, plan
from tps.history.rollup import RollupState
from tps.history.types import RollupPoint, RollupWrite
from tps.model import Reading
from tps.store import Store

T0 = 1_690_549_200_000_000_000  # 2023-07-28T13:00:00Z


def _assert_rollups_exact(store: Store, readings: list[Reading], stream: str,
                          lo: int, hi: int) -> None:
    """Every stored rollup of ``stream`` starting in [lo, hi) equals its raw aggregate."""
    run = [r for r in readings if r.stream == stream]
    times, values = [r.time_ns for r in run], [r.value for r in run]
    for width in (MINUTE, HOUR):
        want = [(s, a) for s, a in fold_sorted(times, values, width) if lo <= s < hi]
        got = store.rollups(width, lo, hi - 1, [stream]).get(stream, [])
        assert [s for s, _ in got] == [s for s, _ in want], (stream, width)
        for (start, g), (_, w) in zip(got, want, strict=True):
            assert (g.min, g.max, g.count) == (w.min, w.max, w.count), (stream, width, start)
            assert abs(g.sum - w.sum) <= 1e-9 * max(1.0, abs(w.sum))


def _check_answers(store: Store, readings: list[Reading], rng: random.Random,
                   lo: int, hi: int) -> None:
    history = History(None)
    history.board.invalidate()
    for _ in range(40):
        after = rng.randint(lo, hi)
        before = after + rng.choice((0, MINUTE, HOUR, 5 * HOUR, rng.randint(0, hi - lo)))
        stream = rng.choice(("a", "b", "c", None))
        got = history.statistics_finish(store, history.statistics_plan(after, before, stream))
        assert_same_statistics(got, store.statistics(after, before, stream),
                               (after, before, stream))


def test_backfill_of_a_prefilled_store_completes_and_then_answers_exactly(
        store: Store) -> None:
    rng = random.Random(1)
    readings = sorted(
        irregular("a", T0 - 30 * HOUR, T0 + 17 * MINUTE, rng, max_step=60 * SECOND)
        + irregular("b", T0 - 10 * HOUR + 5 * MINUTE, T0 - 2 * HOUR, rng, max_step=60 * SECOND)
        + irregular("c", T0 - 3 * HOUR, T0 - 3 * HOUR + 10 * SECOND, rng),
        key=lambda r: r.time_ns)
    store.write(readings)  # raw points only, as the original service left them
    progress = BackfillProgress()
    status = Backfill(store, progress).run()
    assert status.state == "done"
    assert status.hours_total == status.hours_done == 30 + 7
    coverage = store.coverage()
    assert {s: [(lo, until) for _, lo, until in ranges] for s, ranges in coverage.items()} == {
        "a": [(T0 - 30 * HOUR, T0 - 1)],
        "b": [(T0 - 10 * HOUR, T0 - 3 * HOUR - 1)],
    }  # c lies within its newest hour, which the writer (or raw scans) will cover
    _assert_rollups_exact(store, readings, "a", T0 - 30 * HOUR, T0)
    _assert_rollups_exact(store, readings, "b", T0 - 10 * HOUR, T0 - 3 * HOUR)
    _check_answers(store, readings, rng, T0 - 31 * HOUR, T0 + HOUR)
    # A long window is now mostly whole hours of rollups.
    pieces = plan(T0 - 30 * HOUR + 7, T0 - 5, Coverage((lo, until + 1) for _, lo, until
                                                        in coverage["a"]))
    assert sum(isinstance(p, Raw) for p in pieces) == 2
    assert any(isinstance(p, Buckets) and p.width == HOUR for p in pieces)
    # A writer adopting the streams continues where the backfill stopped: one range.
    more = irregular("a", T0 + 17 * MINUTE + SECOND, T0 + 2 * HOUR, rng)
    write_like_the_writer(store, RollupState(), more)
    ranges = store.coverage(["a"])["a"]
    assert Coverage((lo, until + 1) for _, lo, until in ranges).ranges == (
        (T0 - 30 * HOUR, more[-1].time_ns + 1),)
    _check_answers(store, readings + more, rng, T0 - 31 * HOUR, T0 + 2 * HOUR)
    assert Backfill(store).run().hours_total == 0  # nothing left to do


def test_backfill_fills_the_gap_a_raw_only_run_left_between_covered_ranges(
        store: Store) -> None:
    rng = random.Random(2)
    first = irregular("a", T0 - 6 * HOUR, T0 - 4 * HOUR - 20 * MINUTE, rng)
    gap = irregular("a", T0 - 4 * HOUR - 20 * MINUTE, T0 - HOUR + 10 * MINUTE, rng)
    last = irregular("a", T0 - HOUR + 10 * MINUTE, T0, rng)
    write_like_the_writer(store, RollupState(), first)
    store.write(gap)  # e.g. a run with rollups switched off
    write_like_the_writer(store, RollupState(), last)
    before = Coverage((lo, u + 1) for _, lo, u in store.coverage(["a"])["a"])
    assert before.ranges == ((T0 - 6 * HOUR, first[-1].time_ns + 1),
                             (T0 - HOUR, last[-1].time_ns + 1))
    Backfill(store).run()
    after = Coverage((lo, u + 1) for _, lo, u in store.coverage(["a"])["a"])
    assert after.ranges == ((T0 - 6 * HOUR, last[-1].time_ns + 1),)
    everything = first + gap + last
    _assert_rollups_exact(store, everything, "a", T0 - 6 * HOUR, T0)
    _check_answers(store, everything, rng, T0 - 7 * HOUR, T0 + HOUR)


def test_a_rebuild_recomputes_buckets_that_went_wrong(store: Store) -> None:
    rng = random.Random(3)
    readings = irregular("a", T0 - 5 * HOUR, T0 + 5 * MINUTE, rng)
    store.write(readings)
    Backfill(store).run()
    wrong = Aggregate(-999.0, 999.0, 0.0, 1)
    store.write_rollups(RollupWrite((
        RollupPoint("a", MINUTE, T0 - 2 * HOUR + 7 * MINUTE, wrong),
        RollupPoint("a", HOUR, T0 - 2 * HOUR, wrong))))
    status = Backfill(store, force=(T0 - 2 * HOUR + 30 * MINUTE, T0 - 2 * HOUR + 40 * MINUTE)
                      ).run()
    assert status.hours_total == 1
    _assert_rollups_exact(store, readings, "a", T0 - 5 * HOUR, floor_to(T0, HOUR))
    _check_answers(store, readings, rng, T0 - 6 * HOUR, T0 + HOUR)
