"""Pure parts of the history layer: buckets, the series ladder, the planner, the
writer's rollup state. No server, no threads."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.history import assert_buckets_equal_folds
from tps.errors import InvalidArgument
from tps.history.buckets import (
    DAY,
    HOUR,
    MAX_POINTS,
    MINUTE,
    SECOND,
    Aggregate,
    ceil_to,
    combine,
    floor_to,
    fold_sorted,
    of_values,
    series_interval,
)
from tps.history.planner import (
    EVERYTHING,
    NOTHING,
    Buckets,
    Coverage,
    Raw,
    plan,
    usable_tiers,
)
from tps.history.rollup import RollupState
from tps.model import Reading

T0 = 1_690_549_200_000_000_000  # 2023-07-28T13:00:00Z, a whole hour


# --- buckets ------------------------------------------------------------------------


def test_buckets_are_aligned_to_the_epoch_also_before_1970() -> None:
    assert floor_to(T0 + 59 * SECOND, MINUTE) == T0
    assert floor_to(-1, MINUTE) == -MINUTE
    assert ceil_to(T0 + 1, MINUTE) == T0 + MINUTE
    assert ceil_to(T0, MINUTE) == T0
    assert ceil_to(-MINUTE + 1, MINUTE) == 0


def test_fold_sorted_gives_one_aggregate_per_non_empty_bucket() -> None:
    times = [T0, T0 + SECOND, T0 + 3 * MINUTE + 1]
    values = [1.0, 3.0, -2.0]
    assert fold_sorted(times, values, MINUTE) == [
        (T0, Aggregate(1.0, 3.0, 4.0, 2)), (T0 + 3 * MINUTE, Aggregate(-2.0, -2.0, -2.0, 1))]


def test_combine_is_exact_for_min_max_count_and_sums_with_fsum() -> None:
    parts = [of_values([1e100]), of_values([1.0, 1.0]), None, of_values([-1e100])]
    total = combine(parts)
    assert total == Aggregate(-1e100, 1e100, 2.0, 4)  # a naive sum gives 0.0
    assert combine([None]) is None


@pytest.mark.parametrize(("span", "points", "interval"), [
    (0, 500, SECOND),
    (499 * SECOND, 500, SECOND),
    (500 * SECOND, 500, 2 * SECOND),
    (30 * DAY, 500, 2 * HOUR),
    (7 * DAY, 500, 30 * MINUTE),
    (HOUR, 10_000, SECOND),
    (999 * DAY, 1000, DAY),
])
def test_series_interval_is_the_smallest_ladder_step_that_fits(
        span: int, points: int, interval: int) -> None:
    assert series_interval(T0, T0 + span, points) == interval


@pytest.mark.parametrize(("after", "before", "points", "argument"), [
    (T0, T0 + HOUR, 0, "points"),
    (T0, T0 + HOUR, MAX_POINTS + 1, "points"),
    (T0, T0 + 36_525 * DAY, 500, "after"),  # 100 years
    (T0, T0 + 600 * DAY, 500, "points"),  # fits only with more points
])
def test_series_interval_refuses_bad_input_naming_the_argument(
        after: int, before: int, points: int, argument: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        series_interval(after, before, points)
    assert caught.value.argument == argument


# --- planner ------------------------------------------------------------------------


def _pieces_cover_exactly(pieces: list[Raw | Buckets], a: int, b: int) -> None:
    cursor = a
    for piece in pieces:
        if isinstance(piece, Raw):
            assert piece.lo == cursor and piece.lo <= piece.hi
            cursor = piece.hi + 1
        else:
            assert piece.start == cursor and piece.start < piece.end
            assert piece.start % piece.width == 0 and piece.end % piece.width == 0
            cursor = piece.end
    assert cursor == (b + 1 if a <= b else a)


def test_a_covered_window_uses_hours_minutes_and_raw_edges() -> None:
    a, b = T0 - 90 * SECOND, T0 + 3 * HOUR + 61 * SECOND
    assert plan(a, b, EVERYTHING) == [
        Raw(a, T0 - MINUTE - 1),
        Buckets(MINUTE, T0 - MINUTE, T0),
        Buckets(HOUR, T0, T0 + 3 * HOUR),
        Buckets(MINUTE, T0 + 3 * HOUR, T0 + 3 * HOUR + MINUTE),
        Raw(T0 + 3 * HOUR + MINUTE, b),
    ]


def test_an_uncovered_window_is_one_raw_piece() -> None:
    assert plan(T0, T0 + DAY, NOTHING) == [Raw(T0, T0 + DAY)]


def test_rollups_are_used_only_where_covered() -> None:
    coverage = Coverage([(T0 + HOUR + 30 * MINUTE, T0 + 5 * HOUR)])
    pieces = plan(T0, T0 + 6 * HOUR - 1, coverage)
    assert pieces == [
        Raw(T0, T0 + HOUR + 30 * MINUTE - 1),
        Buckets(MINUTE, T0 + HOUR + 30 * MINUTE, T0 + 2 * HOUR),
        Buckets(HOUR, T0 + 2 * HOUR, T0 + 5 * HOUR),
        Raw(T0 + 5 * HOUR, T0 + 6 * HOUR - 1),
    ]


def test_usable_tiers_are_those_dividing_the_interval() -> None:
    assert usable_tiers(2 * HOUR) == (HOUR, MINUTE)
    assert usable_tiers(5 * MINUTE) == (MINUTE,)
    assert usable_tiers(30 * SECOND) == ()


def test_coverage_merges_and_answers_containment() -> None:
    coverage = Coverage([(10, 20), (20, 30), (40, 50), (5, 8)])
    assert coverage.ranges == ((5, 8), (10, 30), (40, 50))
    assert coverage.covers(10, 30) and not coverage.covers(25, 41)
    assert coverage.missing(0, 60) == [(0, 5), (8, 10), (30, 40), (50, 60)]
    assert coverage.intersect(Coverage([(0, 12), (45, 100)])).ranges == ((5, 8), (10, 12),
                                                                          (45, 50))


_times = st.integers(T0 - 3 * HOUR, T0 + 3 * HOUR)


@settings(max_examples=300, deadline=None)
@given(a=_times, length=st.integers(-5, 5 * HOUR),
       ranges=st.lists(st.tuples(_times, st.integers(0, 4 * HOUR)), max_size=4))
def test_pieces_are_disjoint_ordered_and_exactly_the_window(
        a: int, length: int, ranges: list[tuple[int, int]]) -> None:
    coverage = Coverage((lo, lo + size) for lo, size in ranges)
    b = a + length
    pieces = plan(a, b, coverage)
    _pieces_cover_exactly(pieces, a, b)
    for piece in pieces:
        if isinstance(piece, Buckets):
            assert coverage.covers(piece.start, piece.end)


# --- the writer's rollup state --------------------------------------------------------


def _readings(stream: str, start: int, step: int, values: list[float]) -> list[Reading]:
    return [Reading(stream, start + i * step, v) for i, v in enumerate(values)]


def test_a_new_stream_is_rolled_up_from_its_first_reading() -> None:
    state = RollupState()
    batch = _readings("a", T0 + 30 * SECOND, 20 * SECOND, [1.0, 2.0, 3.0, 4.0])
    assert state.unadopted(batch) == ["a"]
    state.adopt("a", None, (), None)
    pending = state.prepare(batch)
    points = {(p.width, p.start): p.agg for p in pending.write.points}
    assert points == {
        (MINUTE, T0): Aggregate(1.0, 2.0, 3.0, 2),
        (MINUTE, T0 + MINUTE): Aggregate(3.0, 4.0, 7.0, 2),
        (HOUR, T0): Aggregate(1.0, 4.0, 10.0, 4),
    }
    mark = pending.write.coverage[0]
    assert (mark.stream, mark.at, mark.lo, mark.until) == ("a", T0, None, batch[-1].time_ns)


def test_state_changes_only_on_commit_and_replays_are_folded_once() -> None:
    state = RollupState()
    state.adopt("a", None, (), None)
    first = _readings("a", T0, SECOND, [1.0, 2.0])
    state.prepare(first)  # not acknowledged: forgotten
    pending = state.prepare(first)
    state.commit(pending)
    replay_and_more = [*first, Reading("a", T0 + 2 * SECOND, 5.0)]
    points = {(p.width, p.start): p.agg for p in state.prepare(replay_and_more).write.points}
    assert points[(MINUTE, T0)] == Aggregate(1.0, 5.0, 8.0, 3)
    assert points[(HOUR, T0)] == Aggregate(1.0, 5.0, 8.0, 3)


def test_an_adopted_stream_continues_its_stored_hour_and_rewrites_it() -> None:
    state = RollupState()
    stored = [(T0, Aggregate(1.0, 2.0, 3.0, 2)), (T0 + 5 * MINUTE, Aggregate(0.0, 0.0, 0.0, 1))]
    newest = T0 + 5 * MINUTE + 10 * SECOND
    state.adopt("a", newest, stored, live_from=T0 - DAY)
    pending = state.prepare([Reading("a", newest, 0.0), Reading("a", newest + SECOND, 9.0)])
    points = {(p.width, p.start): p.agg for p in pending.write.points}
    assert points == {
        (MINUTE, T0): Aggregate(1.0, 2.0, 3.0, 2),
        (MINUTE, T0 + 5 * MINUTE): Aggregate(0.0, 9.0, 9.0, 2),
        (HOUR, T0): Aggregate(0.0, 9.0, 12.0, 4),
    }
    assert pending.write.coverage[0].at == T0 - DAY


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(-100, 100), min_size=1, max_size=200),
       steps=st.lists(st.integers(1, 50 * SECOND), min_size=200, max_size=200),
       cuts=st.lists(st.integers(0, 200), max_size=5))
def test_folding_batch_by_batch_equals_folding_all_at_once(
        values: list[float], steps: list[int], cuts: list[int]) -> None:
    times = [T0 + sum(steps[: i + 1]) for i in range(len(values))]
    readings = [Reading("s", t, v) for t, v in zip(times, values, strict=False)]
    state = RollupState()
    state.adopt("s", None, (), None)
    stored: dict[tuple[int, int], Aggregate] = {}
    bounds = sorted({0, len(readings), *(min(c, len(readings)) for c in cuts)})
    for lo, hi in itertools.pairwise(bounds):
        pending = state.prepare(readings[max(0, lo - 3):hi])  # with some replayed
        for point in pending.write.points:
            stored[(point.width, point.start)] = point.agg
        state.commit(pending)
    assert_buckets_equal_folds(stored, times, values, (MINUTE, HOUR))


# --- settings ---------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "seconds"), [
    ("31d", 31 * 86_400.0), ("12h", 43_200.0), ("90m", 5_400.0), ("3600", 3_600.0),
    ("1.5h", 5_400.0)])
def test_the_hot_window_takes_a_duration(raw: str, seconds: float) -> None:
    from tps.config.settings import load_settings
    assert load_settings({"TPS_HOT_WINDOW": raw}).hot_window == seconds


@pytest.mark.parametrize("raw", ["soon", "-1d", "10", "20y"])
def test_a_bad_hot_window_names_the_setting(raw: str) -> None:
    from tps.config.settings import load_settings
    from tps.errors import ConfigError
    with pytest.raises(ConfigError) as caught:
        load_settings({"TPS_HOT_WINDOW": raw})
    assert caught.value.setting == "TPS_HOT_WINDOW"


def test_history_health_reports_backfill_and_hot_tier() -> None:
    from tps.history.backfill import BackfillProgress
    from tps.history.health import HistoryHealth
    from tps.history.hot import HotTier

    hot = HotTier(DAY, 1 << 20)
    hot.begin_load({}, ["a"])
    hot.append([Reading("a", T0, 1.0)])
    progress = BackfillProgress()
    progress.update(state="running", hours_total=10, hours_done=4)
    body = HistoryHealth(True, hot, progress).as_dict()
    assert body["rollups"] is True
    assert body["backfill"]["state"] == "running" and body["backfill"]["done"] == 0.4
    assert body["hot"]["streams"] == 1 and body["hot"]["ready"] == 1
    assert HistoryHealth(False, None, None).as_dict() == {
        "rollups": False, "backfill": None, "hot": None}
