"""The hot tier: memory answers equal the store, through appends, loads and eviction."""

from __future__ import annotations

import random
from array import array

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.history import assert_same_statistics, irregular
from tps.history.answers import History, to_statistics
from tps.history.buckets import DAY, HOUR, MINUTE, SECOND, Aggregate, fold_sorted
from tps.history.hot import READING_BYTES, HotTier
from tps.history.loader import HotLoader
from tps.model import Reading, Statistics
from tps.store import Store

T0 = 1_690_549_200_000_000_000  # 2023-07-28T13:00:00Z


def _reference(readings: list[Reading], after: int, before: int,
               stream: str | None) -> Statistics:
    values = [r.value for r in readings
              if after <= r.time_ns <= before and (stream is None or r.stream == stream)]
    if not values:
        return Statistics(0, None, None, None)
    return Statistics(len(values), min(values), max(values), sum(values) / len(values))


def _reference_series(readings: list[Reading], after: int, before: int, interval: int,
                      stream: str | None) -> dict[int, Aggregate]:
    picked = [r for r in readings
              if after <= r.time_ns <= before and (stream is None or r.stream == stream)]
    picked.sort(key=lambda r: r.time_ns)
    return dict(fold_sorted([r.time_ns for r in picked], [r.value for r in picked], interval))


def _hot(window: int = 5000 * DAY, max_bytes: int = 1 << 30) -> HotTier:
    # The window is counted back from now; the test data is from 2023.
    return HotTier(window, max_bytes)


# --- memory only --------------------------------------------------------------------

_rng = random.Random(3)
_ONLY = sorted(irregular("a", T0 - 2 * HOUR, T0 + HOUR, _rng, max_step=5 * SECOND)
               + irregular("b", T0 - HOUR, T0 + 2 * HOUR, _rng, max_step=9 * SECOND),
               key=lambda r: r.time_ns)


@pytest.fixture(scope="module")
def appended() -> HotTier:
    """A hot tier fed by appends only, for streams with nothing stored before."""
    hot = _hot()
    hot.begin_load({}, ["a", "b"])
    for start in range(0, len(_ONLY), 97):
        hot.append(_ONLY[max(0, start - 5):start + 97])  # with replays
    return hot


_instant = st.integers(T0 - 2 * HOUR - MINUTE, T0 + 2 * HOUR + MINUTE)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(after=_instant, length=st.integers(0, 4 * HOUR), stream=st.sampled_from(("a", "b")))
def test_memory_statistics_equal_the_readings(appended: HotTier, after: int, length: int,
                                              stream: str) -> None:
    held = appended.aggregate([stream], after, after + length)
    assert held is not None
    agg, horizon = held
    assert horizon < T0 - 2 * HOUR
    assert_same_statistics(to_statistics(agg), _reference(_ONLY, after, after + length, stream))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(after=_instant, length=st.integers(0, 4 * HOUR), points=st.integers(1, 600))
def test_memory_series_equal_the_readings_for_both_streams(
        appended: HotTier, after: int, length: int, points: int) -> None:
    history = History(appended)
    history.board._snapshot = None  # no store: streams are named explicitly below
    from tps.history.buckets import series_interval
    interval = series_interval(after, after + length, points)
    held = appended.series(["a", "b"], after, after + length, interval)
    assert held is not None
    got, _ = held
    want = _reference_series(_ONLY, after, after + length, interval, None)
    assert got.keys() == want.keys()
    for label, agg in got.items():
        assert (agg.min, agg.max, agg.count) == (want[label].min, want[label].max,
                                                 want[label].count)
        assert abs(agg.sum - want[label].sum) <= 1e-9 * max(1.0, abs(want[label].sum))


def test_a_stream_is_not_answered_from_memory_before_its_load() -> None:
    hot = _hot()
    hot.append([Reading("a", T0, 1.0)])
    assert hot.aggregate(["a"], T0, T0) is None
    assert hot.horizon(["a"]) is None


# --- loading from a store ----------------------------------------------------------


def _check_against_store(history: History, store: Store, readings: list[Reading],
                         rng: random.Random, lo: int, hi: int) -> None:
    for _ in range(60):
        after = rng.randint(lo, hi)
        before = after + rng.choice((0, SECOND, MINUTE, HOUR, 3 * HOUR, rng.randint(0, DAY)))
        stream = rng.choice(("a", "b", None))
        question = history.statistics_plan(after, before, stream)
        got = history.statistics_now(question) or history.statistics_finish(store, question)
        assert_same_statistics(got, _reference(readings, after, before, stream),
                               (after, before, stream))


def test_a_load_joins_stored_history_with_appended_replays_and_new_readings(
        store: Store) -> None:
    rng = random.Random(7)
    old = sorted(irregular("a", T0 - 5 * HOUR, T0, rng) + irregular("b", T0 - 3 * HOUR, T0, rng),
                 key=lambda r: r.time_ns)
    store.write(old)
    hot = _hot()
    loader = HotLoader(hot, store, target_rows=500)
    # The writer replays the last stored readings and adds new ones before the load.
    new = irregular("a", T0, T0 + 10 * MINUTE, rng)
    hot.append(old[-30:] + new[:20])
    store.write(new[:20])
    report = loader.load(["a", "b"])
    assert report.stopped_by == "window" and report.readings == len(old) + 20
    assert report.queries < 20
    hot.append(new[20:])
    store.write(new[20:])
    everything = old + new
    assert hot.horizon(["a", "b"]) is not None
    history = History(hot)
    history.board.fresh(store)
    _check_against_store(history, store, everything, rng, T0 - 6 * HOUR, T0 + HOUR)
    # Every answer inside the horizon came from memory alone.
    horizon = hot.horizon(["a", "b"])
    assert horizon is not None and horizon <= T0 - 5 * HOUR
    question = history.statistics_plan(T0 - 5 * HOUR, T0 + HOUR, None)
    assert history.statistics_now(question) is not None


def test_the_byte_budget_keeps_the_newest_and_the_rest_comes_from_the_store(
        store: Store) -> None:
    rng = random.Random(11)
    old = sorted(irregular("a", T0 - 6 * HOUR, T0, rng, max_step=2 * SECOND)
                 + irregular("b", T0 - 6 * HOUR, T0, rng, max_step=2 * SECOND),
                 key=lambda r: r.time_ns)
    store.write(old)
    budget = len(old) * READING_BYTES // 3
    hot = _hot(max_bytes=budget)
    report = HotLoader(hot, store, target_rows=2_000).load(["a", "b"])
    assert report.stopped_by == "budget"
    assert hot.room() > -3_000 * READING_BYTES  # overshoot by at most about one chunk
    horizon = hot.horizon(["a", "b"])
    assert horizon is not None and T0 - 5 * HOUR < horizon < T0
    new = irregular("a", T0, T0 + 2 * HOUR, rng, max_step=2 * SECOND)
    for start in range(0, len(new), 500):
        hot.append(new[start:start + 500])  # over budget: the oldest go
        store.write(new[start:start + 500])
    assert hot.room() >= 0
    later = hot.horizon(["a", "b"])
    assert later is not None and later > horizon
    history = History(hot)
    history.board.fresh(store)
    _check_against_store(history, store, old + new, rng, T0 - 7 * HOUR, T0 + 2 * HOUR)


def test_readings_older_than_the_window_are_not_loaded(store: Store) -> None:
    rng = random.Random(5)
    now = T0 + 10 * HOUR
    old = irregular("a", T0, now, rng)
    store.write(old)
    hot = HotTier(3 * HOUR, 1 << 30)
    HotLoader(hot, store, clock=lambda: now).load(["a"])
    horizon = hot.horizon(["a"])
    assert horizon == now - 3 * HOUR
    held = hot.aggregate(["a"], T0, now)
    assert held is not None
    assert held[0] == _agg([r for r in old if r.time_ns >= horizon])


def _agg(readings: list[Reading]) -> Aggregate:
    values = [r.value for r in readings]
    from tps.history.buckets import of_values
    return of_values(values)


# --- kept series buckets ---------------------------------------------------------------


def _check_series(hot: HotTier, readings: list[Reading], rng: random.Random,
                  lo: int, hi: int) -> None:
    """Series of stream "k" from memory equal the readings, for windows asked twice."""
    from tps.history.buckets import series_interval
    windows = [(lo, hi), (lo + 17 * SECOND, hi - 3)]
    windows += [(a, a + rng.randrange(HOUR, 3 * HOUR))
                for a in (rng.randrange(lo, hi - HOUR) for _ in range(6))]
    for _ in range(2):  # the second time from the kept buckets
        for after, before in windows:
            for points in (7, 40, 300):
                interval = series_interval(after, before, points)
                held = hot.series(["k"], after, before, interval)
                assert held is not None
                got, horizon = held
                want = _reference_series(readings, max(after, horizon), before, interval, "k")
                assert got.keys() == want.keys()
                for label, agg in got.items():
                    assert (agg.min, agg.max, agg.count) == (
                        want[label].min, want[label].max, want[label].count)
                    assert abs(agg.sum - want[label].sum) <= 1e-9 * max(1.0, abs(want[label].sum))


def test_kept_series_buckets_follow_appends_loads_and_eviction() -> None:
    rng = random.Random(11)
    stored = irregular("k", T0 - 6 * HOUR, T0, rng, max_step=20 * SECOND)
    live = irregular("k", T0 + SECOND, T0 + 3 * HOUR, rng, max_step=20 * SECOND)
    hot = _hot()
    hot.begin_load({"k": stored[-1].time_ns}, ["k"])
    hot.append(live[:300])  # arrives while the loader reads the store
    newest = [r for r in stored if r.time_ns >= T0 - 2 * HOUR]
    times = array("q", [r.time_ns for r in newest])
    values = array("d", [r.value for r in newest])
    assert hot.prepend("k", times, values, T0 - 2 * HOUR)
    held = [*newest, *live[:300]]
    _check_series(hot, held, rng, T0 - 3 * HOUR, live[299].time_ns + 5 * MINUTE)
    # New readings land in the bucket that was open (and after it).
    for start in range(300, len(live), 111):
        hot.append(live[start:start + 111])
        held = [*newest, *live[:start + 111]]
        _check_series(hot, held, rng, T0 - 3 * HOUR, live[min(len(live), start + 111) - 1]
                      .time_ns + MINUTE)
    # An older chunk moves the horizon back: kept buckets must not hide it.
    older = [r for r in stored if r.time_ns < T0 - 2 * HOUR]
    assert hot.prepend("k", array("q", [r.time_ns for r in older]),
                       array("d", [r.value for r in older]), T0 - 6 * HOUR)
    hot.end_load("k", everything=True)
    everything = [*stored, *live]
    _check_series(hot, everything, rng, T0 - 7 * HOUR, T0 + 3 * HOUR)
    # Eviction moves it forward again.
    hot.max_bytes = hot.status().bytes // 2
    extra = irregular("k", T0 + 3 * HOUR + SECOND, T0 + 3 * HOUR + MINUTE, rng,
                      max_step=20 * SECOND)
    hot.append(extra)
    assert hot.horizon(["k"]) is not None and hot.horizon(["k"]) > T0 - 6 * HOUR  # type: ignore[operator]
    _check_series(hot, [*everything, *extra], rng, T0 - 7 * HOUR, T0 + 3 * HOUR + MINUTE)
