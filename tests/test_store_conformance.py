"""One conformance suite for both stores: InfluxDB (real server) and SQLite.

Every test runs against each store, so the two cannot drift apart: the same data
must give the same answers, orderings and edge cases (base.py defines them).
"""

from __future__ import annotations

import random
import sqlite3
import statistics as pystats
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.influxdb import InfluxServer
from tps.errors import StoreError, StoreUnavailable
from tps.model import Reading
from tps.store import InfluxStore, SqliteStore, Store

T0 = 1_690_587_027_046_286_592  # an instant from the seed README
SECOND = 1_000_000_000

HOSTILE_NAMES = [
    "'; DROP DATABASE tps",
    "it's",
    'say "hi"',
    "back\\slash",
    "back\\'quote",
    ".*",
    "^a|b$",
    "(x)[y]{z}+?",
    "température-☃-温度",
    "with space",
    "comma,equals=",
    "tab\there",
    "/slash/",
    "a\\ b",
]


@pytest.fixture(params=["influx", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty, ready store of each kind."""
    opened: Store
    if request.param == "influx":
        influx: InfluxServer = request.getfixturevalue("influx")
        db: str = request.getfixturevalue("influx_db")
        opened = InfluxStore(influx.url, db, timeout=10.0)
    else:
        opened = SqliteStore(tmp_path / "store" / "tps.sqlite3")
    opened.ensure_ready()
    yield opened
    opened.close()


def series(stream: str, values: list[float], start: int = T0, step: int = SECOND) -> list[Reading]:
    """Readings of one stream at ``start``, ``start + step``, ..."""
    return [Reading(stream, start + i * step, v) for i, v in enumerate(values)]


# --- readiness ----------------------------------------------------------------------


def test_a_ready_store_pings_and_is_empty(store: Store) -> None:
    assert store.ping() is True
    assert store.count() == 0
    assert store.stream_names() == []


def test_ensure_ready_twice_keeps_the_data(store: Store) -> None:
    store.write(series("a", [1.0, 2.0]))
    store.ensure_ready()
    assert store.count("a") == 2


def test_writing_an_empty_batch_is_a_no_op(store: Store) -> None:
    store.write([])
    assert store.count() == 0


# --- current ------------------------------------------------------------------------


def test_current_is_none_when_nothing_is_stored(store: Store) -> None:
    assert store.current() is None
    assert store.current("a") is None


def test_current_of_a_stream_is_its_newest_reading(store: Store) -> None:
    store.write(series("a", [1.0, 2.0, 3.5]) + series("b", [9.0], start=T0 + 10 * SECOND))
    assert store.current("a") == Reading("a", T0 + 2 * SECOND, 3.5)
    assert store.current("missing") is None


def test_current_without_stream_is_the_newest_across_streams(store: Store) -> None:
    store.write(series("a", [1.0, 2.0, 3.0]) + series("b", [7.0], start=T0 + SECOND))
    assert store.current() == Reading("a", T0 + 2 * SECOND, 3.0)
    store.write([Reading("b", T0 + 5 * SECOND, -4.25)])
    assert store.current() == Reading("b", T0 + 5 * SECOND, -4.25)


def test_current_tie_across_streams_goes_to_the_name_that_sorts_last(store: Store) -> None:
    store.write([Reading("b", T0, 2.0), Reading("c", T0, 3.0), Reading("a", T0, 1.0)])
    assert store.current() == Reading("c", T0, 3.0)


def test_values_round_trip_exactly(store: Store) -> None:
    values = [21.3, -0.1, 1e-7, 1e16, 123456.789012345, 0.0, -273.15, 2.0**-30]
    store.write(series("a", values))
    got = store.measurements(None, None, "a")
    assert [r.value for r in got] == values
    assert all(isinstance(r.value, float) for r in got)


# --- statistics ---------------------------------------------------------------------


def test_statistics_match_values_computed_in_python(store: Store) -> None:
    rng = random.Random(7)
    values = [round(rng.uniform(-50, 50), 3) for _ in range(500)]
    store.write(series("a", values))
    stats = store.statistics(None, None, "a")
    assert stats.count == 500
    assert stats.min == min(values)
    assert stats.max == max(values)
    assert stats.mean == pytest.approx(pystats.fmean(values), rel=1e-12)


def test_statistics_of_an_empty_window_are_count_zero_and_none(store: Store) -> None:
    store.write(series("a", [1.0, 2.0]))
    for stats in (
        store.statistics(T0 + 100 * SECOND, T0 + 200 * SECOND, "a"),
        store.statistics(None, None, "missing"),
        store.statistics(T0 + SECOND, T0, None),  # after > before
    ):
        assert (stats.count, stats.min, stats.max, stats.mean) == (0, None, None, None)


def test_statistics_bounds_are_inclusive(store: Store) -> None:
    store.write(series("a", [1.0, 2.0, 3.0, 4.0, 5.0]))
    stats = store.statistics(T0 + SECOND, T0 + 3 * SECOND, "a")
    assert (stats.count, stats.min, stats.max, stats.mean) == (3, 2.0, 4.0, 3.0)
    one = store.statistics(T0 + 4 * SECOND, T0 + 4 * SECOND, "a")
    assert (one.count, one.min, one.max, one.mean) == (1, 5.0, 5.0, 5.0)


def test_statistics_with_open_bounds(store: Store) -> None:
    store.write(series("a", [1.0, 2.0, 3.0, 4.0, 5.0]))
    assert store.statistics(T0 + 3 * SECOND, None, "a").count == 2
    assert store.statistics(None, T0 + SECOND, "a").count == 2
    assert store.statistics(None, None, "a").count == 5


def test_statistics_accept_bounds_far_beyond_64_bit_nanoseconds(store: Store) -> None:
    store.write(series("a", [1.0, 2.0]))
    year_9999 = 253_402_300_799 * SECOND
    assert store.statistics(-year_9999, year_9999, "a").count == 2
    assert store.statistics(year_9999, None, "a").count == 0
    assert store.measurements(-(2**70), 2**70, "a") == series("a", [1.0, 2.0])


def test_statistics_without_stream_cover_all_streams(store: Store) -> None:
    store.write(series("a", [1.0, 2.0]) + series("b", [10.0, 20.0, 30.0]))
    stats = store.statistics(None, None)
    assert (stats.count, stats.min, stats.max, stats.mean) == (5, 1.0, 30.0, 12.6)
    assert store.statistics(None, None, "b").mean == 20.0


# --- measurements -------------------------------------------------------------------


def test_measurements_of_a_window_oldest_first(store: Store) -> None:
    readings = series("a", [1.0, 2.0, 3.0, 4.0, 5.0])
    store.write(list(reversed(readings)))
    assert store.measurements(T0 + SECOND, T0 + 3 * SECOND, "a") == readings[1:4]
    assert store.measurements(None, None, "a") == readings
    assert store.measurements(T0 + 10 * SECOND, None, "a") == []


def test_measurements_across_streams_order_ties_by_stream_name(store: Store) -> None:
    store.write([Reading("b", T0, 2.0), Reading("a", T0 + 1, 1.5), Reading("c", T0, 3.0),
                 Reading("a", T0, 1.0)])
    assert store.measurements(None, None) == [
        Reading("a", T0, 1.0), Reading("b", T0, 2.0), Reading("c", T0, 3.0),
        Reading("a", T0 + 1, 1.5)]


def test_measurements_limit_keeps_the_oldest(store: Store) -> None:
    readings = series("a", [float(i) for i in range(20)])
    store.write(readings)
    assert store.measurements(None, None, "a", limit=5) == readings[:5]


def test_measurements_last_keeps_the_newest_oldest_first(store: Store) -> None:
    readings = series("a", [float(i) for i in range(20)])
    store.write(readings)
    assert store.measurements(None, None, "a", last=3) == readings[-3:]
    assert store.measurements(None, T0 + 9 * SECOND, "a", last=3) == readings[7:10]
    assert store.measurements(None, None, "a", last=100) == readings


def test_measurements_last_is_capped_by_limit(store: Store) -> None:
    readings = series("a", [float(i) for i in range(20)])
    store.write(readings)
    assert store.measurements(None, None, "a", last=10, limit=4) == readings[-4:]


def test_measurements_last_across_streams_cuts_ties_like_time_then_name_order(
    store: Store,
) -> None:
    store.write([Reading(s, T0, 1.0) for s in "abcd"] + [Reading("a", T0 + 1, 2.0)])
    assert store.measurements(None, None, last=3) == [
        Reading("c", T0, 1.0), Reading("d", T0, 1.0), Reading("a", T0 + 1, 2.0)]


def test_measurements_last_and_limit_cut_many_ties_in_name_order(store: Store) -> None:
    names = [f"s{i:02d}" for i in range(30)]
    rng = random.Random(5)
    shuffled = names[:]
    rng.shuffle(shuffled)
    store.write([Reading(name, T0 + t, float(i)) for t in range(3)
                 for i, name in enumerate(shuffled)])
    everything = sorted(store.measurements(None, None), key=lambda r: (r.time_ns, r.stream))
    assert store.measurements(None, None) == everything
    for k in (1, 7, 31, 59):
        assert store.measurements(None, None, last=k) == everything[-k:], k
        assert store.measurements(None, None, limit=k) == everything[:k], k
        assert store.average(k) == pytest.approx(
            pystats.fmean(r.value for r in everything[-k:])), k


def test_measurements_with_zero_limit_or_last_are_empty(store: Store) -> None:
    store.write(series("a", [1.0, 2.0]))
    assert store.measurements(None, None, "a", limit=0) == []
    assert store.measurements(None, None, "a", last=0) == []
    assert store.measurements(T0 + SECOND, T0, "a") == []


# --- rolling average ----------------------------------------------------------------


def test_average_is_the_mean_of_the_newest_readings(store: Store) -> None:
    store.write(series("a", [100.0, 1.0, 2.0, 3.0, 6.0]))
    assert store.average(4, "a") == 3.0
    assert store.average(1, "a") == 6.0
    assert store.average(1000, "a") == pytest.approx(22.4)


def test_average_across_streams_uses_the_newest_of_all(store: Store) -> None:
    store.write(series("a", [100.0, 2.0], step=2) + series("b", [4.0], start=T0 + 3))
    assert store.average(2, None) == 3.0
    assert store.average(3, None) == pytest.approx(106 / 3)


def test_average_cuts_ties_like_measurements_last(store: Store) -> None:
    store.write([Reading(s, T0, v) for s, v in zip("abcd", (1.0, 2.0, 3.0, 4.0), strict=True)]
                + [Reading("a", T0 + 1, 10.0)])
    newest = store.measurements(None, None, last=3)
    assert [r.value for r in newest] == [3.0, 4.0, 10.0]
    assert store.average(3) == pytest.approx(17 / 3)


def test_average_is_none_without_readings(store: Store) -> None:
    assert store.average(10, None) is None
    store.write(series("a", [1.0]))
    assert store.average(10, "b") is None
    assert store.average(0, "a") is None


# --- many streams, same timestamps, idempotence ------------------------------------


def test_many_streams_are_kept_apart(store: Store) -> None:
    names = [f"sat-{i:03d}" for i in range(200)]
    store.write([Reading(name, T0 + j, float(i * 10 + j))
                 for i, name in enumerate(names) for j in range(5)])
    assert store.stream_names() == names
    assert store.count() == 1000
    assert store.count("sat-042") == 5
    assert store.current("sat-042") == Reading("sat-042", T0 + 4, 424.0)
    assert store.statistics(None, None, "sat-199").mean == 1992.0


def test_same_timestamp_in_different_streams_keeps_every_reading(store: Store) -> None:
    store.write([Reading(s, T0, v) for s, v in (("a", 1.0), ("b", 2.0), ("c", 3.0))])
    assert store.count() == 3
    assert store.statistics(T0, T0).count == 3


def test_writing_the_same_point_twice_keeps_one_with_the_last_value(store: Store) -> None:
    store.write([Reading("a", T0, 1.0), Reading("a", T0 + 1, 5.0)])
    store.write([Reading("a", T0, 2.0)])
    assert store.count("a") == 2
    assert store.measurements(None, None, "a")[0] == Reading("a", T0, 2.0)


def test_a_repeated_point_within_one_batch_keeps_the_last_value(store: Store) -> None:
    store.write([Reading("a", T0, 1.0), Reading("a", T0, 3.0)])
    assert store.measurements(None, None, "a") == [Reading("a", T0, 3.0)]


def test_a_retried_batch_does_not_duplicate(store: Store) -> None:
    batch = series("a", [float(i) for i in range(100)], step=1)
    store.write(batch)
    store.write(batch)
    assert store.count("a") == 100


def test_a_large_batch_is_written_in_one_call(store: Store) -> None:
    rng = random.Random(3)
    batch = [Reading(f"s{i % 3}", T0 + i, round(rng.uniform(-100, 100), 4))
             for i in range(50_000)]
    store.write(batch)
    assert store.count() == 50_000
    stats = store.statistics(None, None, "s1")
    values = [r.value for r in batch if r.stream == "s1"]
    assert (stats.count, stats.min, stats.max) == (len(values), min(values), max(values))
    assert store.measurements(None, None, "s2", last=2) == [
        r for r in batch if r.stream == "s2"][-2:]


def test_a_non_finite_value_rejects_the_batch_and_writes_nothing(store: Store) -> None:
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(StoreError, match="finite"):
            store.write([Reading("a", T0, 1.0), Reading("a", T0 + 1, bad)])
    assert store.count() == 0


# --- hostile names ------------------------------------------------------------------


def test_hostile_stream_names_are_stored_and_queried_back_intact(store: Store) -> None:
    store.write([Reading("plain", T0, 100.0)])
    store.write([Reading(name, T0 + i, float(i)) for i, name in enumerate(HOSTILE_NAMES)])
    assert store.stream_names() == sorted([*HOSTILE_NAMES, "plain"])
    for i, name in enumerate(HOSTILE_NAMES):
        assert store.current(name) == Reading(name, T0 + i, float(i)), name
        assert store.count(name) == 1, name
        stats = store.statistics(None, None, name)
        assert (stats.count, stats.mean) == (1, float(i)), name
        assert store.measurements(None, None, name) == [Reading(name, T0 + i, float(i))]
        assert store.average(5, name) == float(i)
    # Nothing was dropped or matched as a pattern: "plain" is still there, on its own.
    assert store.count() == len(HOSTILE_NAMES) + 1
    assert store.current("plain") == Reading("plain", T0, 100.0)
    assert store.count("p.*") == 0


# --- embedded store specifics -------------------------------------------------------


def test_sqlite_store_creates_its_folder_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "tps.sqlite3"
    store = SqliteStore(path)
    store.ensure_ready()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    store.close()
    store.close()


def test_sqlite_connections_see_each_others_committed_writes(tmp_path: Path) -> None:
    writer, reader = SqliteStore(tmp_path / "tps.sqlite3"), SqliteStore(tmp_path / "tps.sqlite3")
    writer.ensure_ready()
    reader.ensure_ready()
    assert reader.current() is None
    writer.write(series("a", [1.0, 2.0]))
    assert reader.current() == Reading("a", T0 + SECOND, 2.0)
    writer.close()
    reader.close()


def test_sqlite_write_lock_held_elsewhere_is_store_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "tps.sqlite3", busy_timeout=0.1)
    store.ensure_ready()
    blocker = sqlite3.connect(tmp_path / "tps.sqlite3", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            store.write(series("a", [1.0]))
        assert store.count() == 0  # reads still work under WAL
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.write(series("a", [1.0]))
    assert store.count() == 1
    store.close()


def test_sqlite_store_in_an_unusable_place_is_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    store = SqliteStore(tmp_path / "file" / "tps.sqlite3")
    with pytest.raises(StoreUnavailable, match="cannot open"):
        store.ensure_ready()
    assert store.ping() is False
