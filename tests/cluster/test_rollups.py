"""The cluster writer's fold: in-order readings as in single-node mode, late ones exact.

Run against the real SQLite store (the store conformance suite holds InfluxDB to the
same answers); the end-to-end proof with killed writers is in test_partitions.py.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.rollup_checks import check_random_windows, rollup_mismatches, uncovered
from tps.cluster.rollups import ClusterFold, fold_batch, sorted_runs
from tps.history.buckets import HOUR, SECOND
from tps.history.rollup import RollupState
from tps.model import Reading
from tps.store.sqlite import SqliteStore

T0 = 1_700_000_000 * SECOND // HOUR * HOUR + HOUR - 90 * SECOND  # 90 s before an hour


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "tps.sqlite3")
    store.ensure_ready()
    yield store
    store.close()


def readings(stream: str, first: int, count: int, step: int = 2 * SECOND) -> list[Reading]:
    return [Reading(stream, T0 + (first + k) * step, round(20 + ((first + k) * 7) % 13 / 3, 3))
            for k in range(count)]


def write(store: SqliteStore, state: RollupState, batch: Sequence[Reading],
          uncertain: Sequence[str] = ()) -> ClusterFold:
    """What the cluster writer does with one batch: fold, write together, commit on ack."""
    fold = fold_batch(store, state, batch, uncertain)
    store.write(fold.readings, fold.rollups)
    if fold.pending is not None:
        state.commit(fold.pending)
    state.forget(fold.recomputed)
    return fold


def test_a_batch_is_sorted_and_deduplicated_per_stream() -> None:
    a = readings("a", 0, 4)
    runs = sorted_runs([a[2], a[0], readings("b", 0, 1)[0], a[2], a[1], a[3]])
    assert runs == {"a": a, "b": readings("b", 0, 1)}


def test_in_order_batches_fold_like_the_single_node_writer(store: SqliteStore) -> None:
    state = RollupState()
    for k in range(0, 120, 10):  # 4 minutes across an hour boundary
        fold = write(store, state, readings("a", k, 10) + readings("b", k, 10))
        assert not fold.recomputed and fold.replays == 0
    assert rollup_mismatches(store, ["a", "b"], T0, T0 + 240 * SECOND) == []
    assert uncovered(store, ["a", "b"], T0, T0 + 238 * SECOND) == []


def test_late_readings_new_to_the_store_are_folded_by_recomputing_their_hours(
        store: SqliteStore) -> None:
    state = RollupState()
    write(store, state, readings("a", 0, 20))
    # A writer died holding readings 20..39; its successor wrote 40..79 first.
    successor = RollupState()
    write(store, successor, readings("a", 40, 40))
    fold = write(store, successor, readings("a", 20, 20), uncertain=["a"])
    assert fold.recomputed == {"a"} and fold.replays == 0
    assert store.count("a") == 80
    assert rollup_mismatches(store, ["a"], T0, T0 + 200 * SECOND) == []
    # Adopted again from the store: later batches continue exactly.
    write(store, successor, readings("a", 80, 30))
    assert rollup_mismatches(store, ["a"], T0, T0 + 300 * SECOND) == []
    assert uncovered(store, ["a"], T0, T0 + 218 * SECOND) == []
    check_random_windows(store, ["a"], T0, T0 + 220 * SECOND, random.Random(7))


def test_late_readings_the_store_holds_are_replays_and_cost_no_write(
        store: SqliteStore) -> None:
    state = RollupState()
    write(store, state, readings("a", 0, 30))
    fold = write(store, state, readings("a", 10, 10) + readings("a", 30, 5))
    assert fold.replays == 10 and not fold.recomputed
    assert fold.readings == readings("a", 30, 5)
    assert rollup_mismatches(store, ["a"], T0, T0 + 100 * SECOND) == []


def test_redelivered_replays_recompute_their_hours_in_case_only_raw_was_stored(
        store: SqliteStore) -> None:
    state = RollupState()
    write(store, state, readings("a", 0, 20))
    # The first writer's request with the readings went through, the one with the
    # rollups did not (an InfluxDB batch larger than one request), then it died.
    store.write(readings("a", 20, 20))
    successor = RollupState()
    write(store, successor, readings("a", 40, 10))
    fold = write(store, successor, readings("a", 20, 20), uncertain=["a"])
    assert fold.replays == 20 and fold.recomputed == {"a"} and fold.readings == []
    assert rollup_mismatches(store, ["a"], T0, T0 + 100 * SECOND) == []


def test_late_and_in_order_streams_in_one_batch(store: SqliteStore) -> None:
    state = RollupState()
    write(store, state, readings("a", 0, 10) + readings("b", 0, 10))
    write(store, state, readings("a", 20, 10) + readings("b", 20, 10))
    fold = write(store, state, readings("a", 10, 10) + readings("b", 30, 10) +
                 readings("a", 30, 5), uncertain=["a"])
    assert fold.recomputed == {"a"}
    assert [r.stream for r in fold.in_order] == ["b"] * 10
    write(store, state, readings("a", 35, 40) + readings("b", 40, 40))
    assert rollup_mismatches(store, ["a", "b"], T0, T0 + 200 * SECOND) == []
    assert uncovered(store, ["a", "b"], T0, T0 + 148 * SECOND) == []


def test_without_rollups_nothing_is_asked_of_the_store() -> None:
    a = readings("a", 0, 3)
    fold = fold_batch(None, None, [a[1], a[0], a[2], a[1]])
    assert fold.readings == a and fold.rollups is None and fold.pending is None


def test_the_single_node_fold_would_miss_late_readings(store: SqliteStore) -> None:
    """The control: what the late-reading path exists for."""
    state = RollupState()
    write(store, state, readings("a", 0, 20))
    successor = RollupState()
    write(store, successor, readings("a", 40, 40))
    late = readings("a", 20, 20)
    pending = successor.prepare(late)  # takes them for replays
    store.write(late, pending.write)
    assert rollup_mismatches(store, ["a"], T0, T0 + 200 * SECOND) != []


def test_the_hour_boundary_is_where_a_late_reading_lands(store: SqliteStore) -> None:
    state = RollupState()
    write(store, state, readings("a", 0, 30, step=5 * SECOND))  # across the hour
    successor = RollupState()
    write(store, successor, readings("a", 40, 20, step=5 * SECOND))
    write(store, successor, readings("a", 30, 10, step=5 * SECOND), uncertain=["a"])
    assert rollup_mismatches(store, ["a"], T0, T0 + 2 * HOUR) == []
    next_hour = T0 // HOUR * HOUR + HOUR
    assert store.rollups(HOUR, T0 - HOUR, T0 + 2 * HOUR, ["a"])["a"][-1] == (
        next_hour, store.raw_aggregates(next_hour, next_hour + HOUR - 1, HOUR, ["a"])["a"][0][1])
