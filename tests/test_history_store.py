"""History answers from each store equal a raw scan (issue 10's property tests).

Both stores hold the same readings, written in phases that mimic a real deployment:
raw only (the original service, no rollups), a TPS writer with rollups, a restart
(a new writer adopting the streams, replaying readings already stored) and a new
stream. Random windows - empty ones, one-reading ones, windows on bucket edges,
windows spanning the restart and the uncovered raw-only hours - must give exactly the
raw scan's statistics, and ``temperatureSeries`` exactly InfluxQL's ``GROUP BY time()``
on a real influxd holding the same raw readings.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.history import (
    assert_same_series,
    assert_same_statistics,
    influxql_series,
    irregular,
    write_like_the_writer,
)
from tests.support.influxdb import InfluxServer
from tps.history.answers import History
from tps.history.buckets import HOUR, MINUTE, SECOND, Aggregate, fold_sorted
from tps.history.rollup import RollupState
from tps.model import Reading
from tps.store import InfluxStore, SqliteStore, Store

T0 = 1_690_549_200_000_000_000  # 2023-07-28T13:00:00Z
START, END = T0 - 3 * HOUR, T0 + 2 * HOUR
RESTART = T0 + 30 * MINUTE + 17 * SECOND + 500_000_000
STREAMS = ("a", "b", "c")
_names = itertools.count()


@dataclass
class Dataset:
    store: Store
    influx: InfluxServer
    reference_db: str
    readings: list[Reading]


def _build(store: Store, influx: InfluxServer, reference_db: str) -> list[Reading]:
    rng = random.Random(10)
    old = {s: irregular(s, START, T0 - HOUR + 7 * SECOND, rng) for s in ("a", "b")}
    before = {s: irregular(s, T0 - HOUR + 7 * SECOND, RESTART, rng) for s in ("a", "b")}
    after = {s: irregular(s, RESTART, END, rng) for s in ("a", "b")}
    after["c"] = irregular("c", T0 + 10 * MINUTE, END, rng, max_step=3 * SECOND)
    for stream in ("a", "b"):
        store.write(old[stream])  # the original service: raw readings only
    first = RollupState()
    write_like_the_writer(store, first, _interleave(before["a"], before["b"]))
    second = RollupState()  # a restart: adopt, then replay the last readings, then go on
    replayed = _interleave(before["a"][-7:], before["b"][-3:])
    write_like_the_writer(store, second, replayed + _interleave(after["a"], after["b"],
                                                                after["c"]))
    readings = sorted((r for group in (old, before, after) for rs in group.values() for r in rs),
                      key=lambda r: (r.time_ns, r.stream))
    reference = InfluxStore(influx.url, reference_db)
    reference.ensure_ready()
    reference.write(readings)
    reference.close()
    return readings


def _interleave(*runs: list[Reading]) -> list[Reading]:
    """Readings of several streams merged by time, as feeds deliver them."""
    return sorted((r for run in runs for r in run), key=lambda r: r.time_ns)


@pytest.fixture(scope="module", params=["influx", "sqlite"])
def dataset(request: pytest.FixtureRequest, influx: InfluxServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dataset]:
    db = f"tps_history_{next(_names)}"
    reference_db = f"tps_history_ref_{next(_names)}"
    store: Store
    if request.param == "influx":
        store = InfluxStore(influx.url, db)
    else:
        store = SqliteStore(Path(tmp_path_factory.mktemp("history")) / "tps.sqlite3")
    store.ensure_ready()
    readings = _build(store, influx, reference_db)
    yield Dataset(store, influx, reference_db, readings)
    store.close()
    for name in (db, reference_db):
        with contextlib.suppress(Exception):
            influx.drop_database(name)


def _edges() -> st.SearchStrategy[int]:
    edges = [START + k * MINUTE for k in range(-2, (END - START) // MINUTE + 3)]
    return st.builds(lambda edge, shift: edge + shift, st.sampled_from(edges),
                     st.sampled_from((-1, 0, 1)))


_instants = st.one_of(st.integers(START - 2 * MINUTE, END + 2 * MINUTE), _edges())
_streams = st.sampled_from(("a", "b", "c", None))


def _reference_statistics(data: Dataset, after: int, before: int, stream: str | None
                          ) -> tuple[int, float | None, float | None]:
    values = [r.value for r in data.readings
              if after <= r.time_ns <= before and (stream is None or r.stream == stream)]
    return len(values), (min(values) if values else None), (max(values) if values else None)


def test_the_writer_and_the_restart_left_exact_rollups_and_coverage(dataset: Dataset) -> None:
    store = dataset.store
    coverage = store.coverage()
    assert sorted(coverage) == ["a", "b", "c"]
    assert [(at, lo) for at, lo, _ in coverage["a"]] == [(T0 - HOUR, T0 - HOUR)]
    for stream in STREAMS:
        runs = [r for r in dataset.readings if r.stream == stream]
        times, values = [r.time_ns for r in runs], [r.value for r in runs]
        (_, _, until), = coverage[stream]
        assert until == times[-1]
        for width in (MINUTE, HOUR):
            stored = store.rollups(width, START, END, [stream]).get(stream, [])
            expected = [(start, agg) for start, agg in fold_sorted(times, values, width)
                        if start >= coverage[stream][0][1]]
            assert [s for s, _ in stored] == [s for s, _ in expected], (stream, width)
            for (start, got), (_, want) in zip(stored, expected, strict=True):
                assert _close(got, want), (stream, width, start)


def _close(got: Aggregate, want: Aggregate) -> bool:
    return (got.min, got.max, got.count) == (want.min, want.max, want.count) and abs(
        got.sum - want.sum) <= 1e-9 * max(abs(want.sum), 1.0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(after=_instants, length=st.one_of(st.integers(0, 5 * HOUR), st.integers(0, 3 * MINUTE),
                                         st.just(0)), stream=_streams)
def test_statistics_equal_a_raw_scan(dataset: Dataset, after: int, length: int,
                                     stream: str | None) -> None:
    history = History(None)
    before = after + length
    got = history.statistics_finish(dataset.store,
                                    history.statistics_plan(after, before, stream))
    want = dataset.store.statistics(after, before, stream)
    assert_same_statistics(got, want, (after, before, stream))
    assert (got.count, got.min, got.max) == _reference_statistics(dataset, after, before, stream)


@settings(max_examples=30, deadline=None)
@given(index=st.integers(0, 10_000), stream=_streams)
def test_one_reading_windows_and_empty_windows(dataset: Dataset, index: int,
                                               stream: str | None) -> None:
    history = History(None)
    reading = dataset.readings[index % len(dataset.readings)]
    for after, before in ((reading.time_ns, reading.time_ns),
                          (reading.time_ns + 1, reading.time_ns + 1)):
        got = history.statistics_finish(dataset.store,
                                        history.statistics_plan(after, before, stream))
        assert_same_statistics(got, dataset.store.statistics(after, before, stream))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(after=_instants, length=st.integers(0, 5 * HOUR), points=st.integers(1, 400),
       stream=_streams)
def test_series_equal_influxql_group_by_time(dataset: Dataset, after: int, length: int,
                                             points: int, stream: str | None) -> None:
    history = History(None)
    before = after + length
    question = history.series_plan(after, before, points, stream)
    got = history.series_finish(dataset.store, question)
    want = influxql_series(dataset.influx, dataset.reference_db, after, before,
                           question.interval_ns, stream)
    assert_same_series(got.buckets, want, (after, before, points, stream))


_SHARED: dict[str, History] = {}
"""One History per store across examples: its kept rollup chunks (tps/history/stored.py)
answer later windows."""


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(after=_instants, length=st.integers(0, 5 * HOUR), points=st.integers(1, 400),
       stream=_streams)
def test_kept_rollup_chunks_answer_later_windows_exactly(
        dataset: Dataset, after: int, length: int, points: int, stream: str | None) -> None:
    before = after + length
    history = _SHARED.setdefault(type(dataset.store).__name__, History(None))
    got = history.statistics_finish(dataset.store,
                                    history.statistics_plan(after, before, stream))
    assert_same_statistics(got, dataset.store.statistics(after, before, stream),
                           (after, before, stream))
    question = history.series_plan(after, before, points, stream)
    series = history.series_finish(dataset.store, question)
    want = influxql_series(dataset.influx, dataset.reference_db, after, before,
                           question.interval_ns, stream)
    assert_same_series(series.buckets, want, (after, before, points, stream))


def test_covered_hours_are_read_from_the_store_once(dataset: Dataset) -> None:
    history = History(None)
    history.board.settle = 0.0  # no write is in flight: keep what the coverage covers
    for after, before in ((T0 + 7 * MINUTE + 1, T0 + 2 * HOUR - 5),
                          (T0 + 3 * MINUTE, T0 + HOUR + 42 * MINUTE + 1)):
        got = history.statistics_finish(dataset.store,
                                        history.statistics_plan(after, before, "a"))
        assert_same_statistics(got, dataset.store.statistics(after, before, "a"))
    assert history.stored.fetches == 1, "the second window's hour was kept"
    assert len(history.stored) >= 1
