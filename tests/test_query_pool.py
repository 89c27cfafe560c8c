"""The query pool: least-busy dispatch, results by callback, never a blocking wait."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.wait import wait_until
from tps.actors.query import STUCK_AFTER, QueryPool
from tps.errors import StoreUnavailable
from tps.model import Reading
from tps.store.base import Store
from tps.store.sqlite import SqliteStore


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    path = str(tmp_path / "pool.sqlite3")
    store = SqliteStore(path)
    store.ensure_ready()
    store.write([Reading("a", i, float(i)) for i in range(1, 11)])
    store.close()
    return path


def _collect() -> tuple[list[Any], threading.Event, Any]:
    results: list[Any] = []
    done = threading.Event()

    def callback(outcome: Any) -> None:
        results.append(outcome)
        done.set()

    return results, done, callback


def test_submit_runs_the_function_on_an_actor_store_and_calls_back(store_path: str) -> None:
    pool = QueryPool(lambda: SqliteStore(store_path), 2)
    pool.start()
    try:
        results, done, callback = _collect()
        pool.submit(lambda store: store.count(), callback)
        assert done.wait(5)
        assert results == [10]
    finally:
        pool.stop()


def test_an_exception_in_the_function_goes_to_the_callback_and_the_actor_survives(
    store_path: str,
) -> None:
    pool = QueryPool(lambda: SqliteStore(store_path), 1)
    pool.start()
    try:
        results, done, callback = _collect()

        def boom(_store: Store) -> int:
            raise StoreUnavailable("test")

        pool.submit(boom, callback)
        assert done.wait(5)
        assert isinstance(results[0], StoreUnavailable)
        results2, done2, callback2 = _collect()
        pool.submit(lambda store: store.count("a"), callback2)
        assert done2.wait(5) and results2 == [10]
    finally:
        pool.stop()


def test_a_blocked_actor_is_skipped_so_other_queries_are_not_delayed(store_path: str) -> None:
    pool = QueryPool(lambda: SqliteStore(store_path), 3)
    pool.start()
    gate = threading.Event()
    try:
        blocked, blocked_done, blocked_cb = _collect()

        def stall(store: Store) -> int:
            gate.wait(10)
            return store.count()

        pool.submit(stall, blocked_cb)
        assert sum(pool.in_flight()) == 1
        time.sleep(STUCK_AFTER + 0.01)  # the stuck actor is now older than the threshold
        for _ in range(30):
            results, done, callback = _collect()
            started = time.perf_counter()
            pool.submit(lambda store: store.current("a"), callback)
            assert done.wait(1), "a query waited behind the stalled one"
            assert time.perf_counter() - started < 0.5
            assert results[0].value == 10.0
        assert not blocked
    finally:
        gate.set()
        assert blocked_done.wait(5)
        pool.stop()


def test_run_awaits_on_the_loop_without_blocking_it(store_path: str) -> None:
    pool = QueryPool(lambda: SqliteStore(store_path), 2)
    pool.start()

    async def main() -> tuple[int, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())

        def slow(store: Store) -> int:
            time.sleep(0.2)
            return store.count()

        value = await pool.run(slow)
        task.cancel()
        return value, ticks

    try:
        value, ticks = asyncio.run(main())
        assert value == 10
        assert ticks >= 10, "the loop was blocked while the query ran"
    finally:
        pool.stop()


def test_run_times_out_with_store_unavailable(store_path: str) -> None:
    pool = QueryPool(lambda: SqliteStore(store_path), 1, timeout=0.2)
    pool.start()
    gate = threading.Event()

    async def main() -> None:
        def hang(_store: Store) -> int:
            gate.wait(5)
            return 0

        with pytest.raises(StoreUnavailable, match="no answer within"):
            await pool.run(hang)

    try:
        asyncio.run(main())
    finally:
        gate.set()
        pool.stop()


def test_restart_replaces_an_actor_and_a_stopped_pool_answers_unavailable(
    store_path: str,
) -> None:
    opened: list[int] = []

    def factory() -> SqliteStore:
        opened.append(1)
        return SqliteStore(store_path)

    pool = QueryPool(factory, 2)
    pool.start()
    pool.restart(0)
    assert len(opened) == 3
    results, done, callback = _collect()
    pool.submit(lambda store: store.count(), callback)
    assert done.wait(5) and results == [10]
    pool.stop()
    results, done, callback = _collect()
    pool.submit(lambda store: store.count(), callback)
    assert done.wait(5) and isinstance(results[0], StoreUnavailable)


def test_a_store_that_cannot_open_reports_the_actor_failure(tmp_path: Path) -> None:
    failures: list[tuple[int, BaseException]] = []

    def factory() -> Store:
        raise OSError("cannot open")

    pool = QueryPool(factory, 1)
    pool.start(on_failure=lambda index, exc: failures.append((index, exc)))
    try:
        wait_until(lambda: failures, 5, what="the failure report")
        assert failures and failures[0][0] == 0
    finally:
        pool.stop()


def test_an_identical_question_reuses_the_answer_for_the_ttl_and_never_an_error(
    store_path: str,
) -> None:
    pool = QueryPool(lambda: SqliteStore(store_path), 2, answer_ttl=0.3)
    pool.start()
    calls: list[int] = []

    def count(store: Store) -> int:
        calls.append(1)
        return store.count()

    def fail(store: Store) -> int:
        calls.append(1)
        raise StoreUnavailable("test")

    async def scenario() -> None:
        assert await pool.run(count, key=("count",)) == 10
        assert await pool.run(count, key=("count",)) == 10
        assert len(calls) == 1  # the second answer came from the cache
        assert await pool.run(count) == 10
        assert len(calls) == 2  # unkeyed questions are never cached
        await asyncio.sleep(0.35)
        assert await pool.run(count, key=("count",)) == 10
        assert len(calls) == 3  # expired: asked the store again
        for _ in range(2):
            with pytest.raises(StoreUnavailable):
                await pool.run(fail, key=("fail",))
        assert len(calls) == 5  # errors are not reused

    try:
        asyncio.run(scenario())
    finally:
        pool.stop()


def test_with_no_ttl_every_question_goes_to_the_store(store_path: str) -> None:
    pool = QueryPool(lambda: SqliteStore(store_path), 1)
    pool.start()
    calls: list[int] = []

    def count(store: Store) -> int:
        calls.append(1)
        return store.count()

    async def scenario() -> None:
        for _ in range(3):
            assert await pool.run(count, key=("count",)) == 10

    try:
        asyncio.run(scenario())
    finally:
        pool.stop()
    assert len(calls) == 3


def test_a_ping_is_answered_while_every_query_actor_is_busy(store_path: str) -> None:
    """/ready's ping has its own actor and connection: heavy answers on every query
    actor (longer than the ping's timeout) never make the process look unready."""
    pool = QueryPool(lambda: SqliteStore(store_path), 2)
    pool.start()
    gate = threading.Event()
    try:
        for _ in range(4):  # two per actor: every actor busy, more queued
            pool.submit(lambda _store: gate.wait(10), lambda _outcome: None)
        wait_until(lambda: sum(pool.in_flight()) == 4, 5, "every actor busy")

        async def ping() -> tuple[bool, float]:
            start = time.monotonic()
            return await pool.ping(timeout=1.0), time.monotonic() - start

        ok, took = asyncio.run(ping())
        assert ok and took < 0.5, took
        # ... and through the pool it would have waited behind the gate.
        with pytest.raises(StoreUnavailable):
            asyncio.run(pool.run(lambda store: store.ping(), timeout=0.3))
    finally:
        gate.set()
        pool.stop()


def test_a_stopped_pool_answers_a_ping_with_store_unavailable(store_path: str) -> None:
    pool = QueryPool(lambda: SqliteStore(store_path), 1)
    pool.start()
    pool.stop()
    with pytest.raises(StoreUnavailable):
        asyncio.run(pool.ping(timeout=1.0))
