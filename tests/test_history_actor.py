"""The history actor loads the hot tier and backfills rollups in the background."""

from __future__ import annotations

import random
from pathlib import Path

from tests.support.history import assert_same_statistics, irregular
from tests.support.influxdb import InfluxServer
from tests.support.wait import wait_until
from tps.actors.history import HistoryActor
from tps.history.answers import History
from tps.history.backfill import BackfillProgress
from tps.history.buckets import DAY, HOUR, MINUTE, SECOND
from tps.history.hot import HotTier
from tps.model import Reading
from tps.store import InfluxStore, SqliteStore, Store

T0 = 1_690_549_200_000_000_000  # 2023-07-28T13:00:00Z


def _prefill(store: Store) -> list[Reading]:
    rng = random.Random(4)
    readings = sorted(irregular("a", T0 - 2 * DAY, T0, rng, max_step=30 * SECOND)
                      + irregular("b", T0 - DAY, T0 - 3 * HOUR, rng, max_step=30 * SECOND),
                      key=lambda r: r.time_ns)
    store.write(readings)
    return readings


def _run(store: Store, opened: list[Store]) -> None:
    readings = _prefill(store)
    hot = HotTier(5000 * DAY, 1 << 30)
    progress = BackfillProgress()

    def factory() -> Store:
        opened.append(type(store)(*_args(store)))
        return opened[-1]

    actor = HistoryActor.start(factory, hot, progress, ["a", "b"])
    try:
        wait_until(lambda: progress.status().state == "done", 30, "the backfill to finish")
        wait_until(lambda: hot.horizon(["a", "b"]) is not None and not hot.status().loading,
                   30, "the hot tier to load")
        assert progress.status().hours_done == 47 + 20  # up to each stream's newest hour
        history = History(hot)
        history.board.fresh(store)
        rng = random.Random(8)
        for _ in range(30):
            after = rng.randint(T0 - 2 * DAY - HOUR, T0 + HOUR)
            before = after + rng.choice((0, MINUTE, HOUR, DAY))
            stream = rng.choice(("a", "b", None))
            question = history.statistics_plan(after, before, stream)
            got = history.statistics_now(question)
            assert got is not None, "memory holds everything"
            assert_same_statistics(got, store.statistics(after, before, stream))
            history.board.invalidate()
            stored = History(None).statistics_finish(store, History(None).statistics_plan(
                after, before, stream))
            assert_same_statistics(stored, got)
        assert hot.status().bytes >= 16 * len(readings)
    finally:
        actor.stop()


def _args(store: Store) -> tuple[object, ...]:
    if isinstance(store, InfluxStore):
        return (store.url, store.db)
    assert isinstance(store, SqliteStore)
    return (store.path,)


def test_the_actor_loads_and_backfills_a_sqlite_store(tmp_path: Path) -> None:
    opened: list[Store] = []
    store = SqliteStore(tmp_path / "tps.sqlite3")
    store.ensure_ready()
    _run(store, opened)
    assert len(opened) == 1  # its own connection, opened once


def test_the_actor_loads_and_backfills_an_influxdb(influx: InfluxServer, influx_db: str) -> None:
    opened: list[Store] = []
    store = InfluxStore(influx.url, influx_db)
    store.ensure_ready()
    _run(store, opened)
