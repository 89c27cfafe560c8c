"""Kept raw blocks (tps/history/kept_raw.py): the raw edges of windows in an ``api``
process answered from raw readings of final spans kept in memory.

Every answer must still equal a raw scan - random windows, bucket and block edges,
empty windows, windows ending in the newest (not final) readings, uncovered raw-only
history, all streams at once - while a block is read from the store once, kept only
when it can no longer change, and the byte budget holds.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.history import (
    assert_same_series,
    assert_same_statistics,
    irregular,
    write_like_the_writer,
)
from tests.support.influxdb import InfluxServer
from tests.support.service import TpsProcess
from tests.support.wait import wait_until
from tps.history.answers import History
from tps.history.buckets import HOUR, MINUTE, SECOND, floor_to
from tps.history.kept_raw import BLOCK_NS, KeptRaw
from tps.history.planner import Coverage, is_final
from tps.history.rollup import RollupState
from tps.model import Reading, Statistics, ns_to_datetime
from tps.store import InfluxStore, SqliteStore, Store

T0 = 1_690_549_200_000_000_000  # 2023-07-28T13:00:00Z
RAW_ONLY = (T0 - 5 * HOUR, T0 - 2 * HOUR)  # the original service: no rollups, no coverage
WRITTEN = (T0, T0 + 4 * HOUR)  # a TPS writer, with a gap of 25 minutes
GAP = (T0 + 2 * HOUR + 3 * MINUTE, T0 + 2 * HOUR + 28 * MINUTE)


class CountingStore:
    """A store whose history reads are counted (everything else passes through)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        if name in ("aggregate", "series", "readings_arrays"):
            self.calls[name] = self.calls.get(name, 0) + 1
        return getattr(self.store, name)


def _fill(store: Store, rng: random.Random) -> list[Reading]:
    old = irregular("s", *RAW_ONLY, rng)
    store.write(old)
    written = [r for r in irregular("s", *WRITTEN, rng) if not GAP[0] <= r.time_ns < GAP[1]]
    other = irregular("t", *WRITTEN, rng, max_step=40 * SECOND)
    write_like_the_writer(store, RollupState(),
                          sorted(written + other, key=lambda r: (r.time_ns, r.stream)))
    return old + written + other


def _history(max_bytes: int = 64 << 20) -> History:
    history = History(None, kept_raw=KeptRaw(max_bytes))
    history.board.settle = 0.0  # nothing is being written: what is covered is final
    return history


def _statistics(history: History, store: Any, after: int, before: int,
                stream: str | None) -> Statistics:
    return history.statistics_finish(store, history.statistics_plan(after, before, stream))


def _windows(rng: random.Random, count: int) -> list[tuple[int, int, str | None]]:
    lo, hi = RAW_ONLY[0] - MINUTE, WRITTEN[1] + MINUTE
    edges = [floor_to(rng.randrange(lo, hi), width) + shift
             for width in (MINUTE, BLOCK_NS, HOUR) for shift in (-1, 0, 1) for _ in range(3)]
    out: list[tuple[int, int, str | None]] = []
    for _ in range(count):
        after = rng.choice(edges) if rng.random() < 0.3 else rng.randrange(lo, hi)
        length = rng.choice((0, 1, SECOND, 90 * SECOND, 70 * MINUTE, rng.randrange(2 * HOUR)))
        before = rng.choice(edges) if rng.random() < 0.2 else after + length
        out.append((after, before, rng.choice(("s", "s", "t", None))))
    out += [(GAP[0] + MINUTE, GAP[1] - MINUTE, "s"),  # empty: inside the gap
            (WRITTEN[1] - 3 * MINUTE, WRITTEN[1] + HOUR, "s"),  # the newest readings
            (WRITTEN[1] - 20 * MINUTE, WRITTEN[1] - 12 * MINUTE, "s")]  # near them
    return out


def test_random_windows_equal_a_raw_scan_and_reuse_the_blocks(store: Store) -> None:
    rng = random.Random(7)
    _fill(store, rng)
    history = _history()
    windows = _windows(rng, 150)
    for after, before, stream in windows:
        assert_same_statistics(_statistics(history, store, after, before, stream),
                               store.statistics(after, before, stream), (after, before, stream))
    kept = history.kept_raw
    assert kept.fetches > 0 and len(kept) > 0, "raw edges inside coverage were kept"
    fetches = kept.fetches
    counting = CountingStore(store)
    for after, before, stream in windows:
        assert_same_statistics(_statistics(history, counting, after, before, stream),
                               store.statistics(after, before, stream), (after, before, stream))
    assert kept.fetches == fetches, "every final block was read once"
    # Windows with both ends in final blocks of one stream, and their minutes in kept
    # rollup chunks (covered hours: a window shorter than an hour), need no store read.
    interior = [(a, a + rng.randrange(55 * MINUTE), "s")
                for a in (rng.randrange(T0, T0 + 2 * HOUR) for _ in range(40))]
    for after, before, stream in interior:
        _statistics(history, store, after, before, stream)  # warm
    counting = CountingStore(store)
    for after, before, stream in interior:
        assert_same_statistics(_statistics(history, counting, after, before, stream),
                               store.statistics(after, before, stream), (after, before, stream))
    assert counting.calls.get("aggregate", 0) == 0, counting.calls
    assert counting.calls.get("readings_arrays", 0) == 0, counting.calls


def test_a_server_reads_missing_blocks_on_a_thread_of_its_own(store: Store) -> None:
    """With a store factory (a server), a miss never waits for a block: the asking
    actor's pieces go to the store and the fetcher thread reads the block; once it is
    kept, the same windows need no store read."""
    rng = random.Random(13)
    _fill(store, rng)
    opened: list[Store] = []

    def factory() -> Store:
        own: Store = (InfluxStore(store.url, store.db) if isinstance(store, InfluxStore)
                      else SqliteStore(store.path))  # type: ignore[attr-defined]
        opened.append(own)
        return own

    kept = KeptRaw(64 << 20, store_factory=factory)
    history = History(None, kept_raw=kept)
    history.board.settle = 0.0
    windows = [(a, a + rng.randrange(55 * MINUTE), "s")
               for a in (rng.randrange(T0, T0 + 2 * HOUR) for _ in range(30))]
    try:
        counting = CountingStore(store)
        for after, before, stream in windows:
            assert_same_statistics(_statistics(history, counting, after, before, stream),
                                   store.statistics(after, before, stream), (after, before))
        assert counting.calls.get("readings_arrays", 0) == 0, "the askers never fetch"
        wait_until(lambda: not kept.status()["wanted"] and kept.fetches > 0, timeout=30)
        for after, before, stream in windows:
            _statistics(history, store, after, before, stream)  # any late wish
        wait_until(lambda: not kept.status()["wanted"], timeout=30)
        counting = CountingStore(store)
        for after, before, stream in windows:
            assert_same_statistics(_statistics(history, counting, after, before, stream),
                                   store.statistics(after, before, stream), (after, before))
        assert counting.calls.get("aggregate", 0) == 0, counting.calls
        assert counting.calls.get("readings_arrays", 0) == 0, counting.calls
    finally:
        kept.close()
    assert len(opened) == 1, "one connection for the fetcher"
    assert kept._fetcher is not None and not kept._fetcher.is_alive()


def test_actors_asking_at_once_get_exact_answers(store: Store) -> None:
    """Query actors share the blocks: four threads asking random windows at once (one
    fetching, the others skipping, a block fetched while another looked) all answer
    exactly."""
    rng = random.Random(12)
    _fill(store, rng)
    history = _history()
    windows = _windows(rng, 120)
    want = {w: store.statistics(*w) for w in windows}
    errors: list[BaseException] = []

    def ask(seed: int) -> None:
        # One store object per thread, as each query actor has its own connection.
        own: Store = (InfluxStore(store.url, store.db) if isinstance(store, InfluxStore)
                      else SqliteStore(store.path))  # type: ignore[attr-defined]
        mine = random.Random(seed).sample(windows, len(windows))
        try:
            for after, before, stream in mine:
                assert_same_statistics(_statistics(history, own, after, before, stream),
                                       want[(after, before, stream)], (after, before, stream))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=ask, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors[0]
    assert history.kept_raw.fetches > 0


def test_only_blocks_that_can_no_longer_change_are_kept(store: Store) -> None:
    rng = random.Random(8)
    old = irregular("s", *RAW_ONLY, rng)
    store.write(old)
    state = RollupState()
    first = irregular("s", T0, T0 + 2 * HOUR + 4 * MINUTE + 7 * SECOND, rng)
    write_like_the_writer(store, state, first)
    history = _history()
    history.board.ttl = 0.0  # read coverage for every question: it grows below
    until = first[-1].time_ns
    for after in range(RAW_ONLY[0] + 17 * SECOND, until, 7 * MINUTE + 3 * SECOND):
        for before in (after + 30 * SECOND, until + MINUTE):
            assert_same_statistics(_statistics(history, store, after, before, "s"),
                                   store.statistics(after, before, "s"), (after, before))
    coverage = Coverage((lo, hi + 1) for _, lo, hi in store.coverage(["s"])["s"])
    held = history.kept_raw.held("s")
    assert held, "the covered hours' edges were kept"
    for start in held:
        assert is_final(coverage, start, start + BLOCK_NS), ns_to_datetime(start)
    assert max(held) + BLOCK_NS <= until - 5 * MINUTE, "the newest minutes are not kept"
    assert min(held) >= coverage.ranges[0][0], "uncovered raw-only history is not kept"
    # The newest blocks fill up: answers follow, nothing kept went stale.
    more = irregular("s", until + 1, until + 40 * MINUTE, rng)
    write_like_the_writer(store, state, more)
    for after in range(until - 20 * MINUTE, until + 40 * MINUTE, 4 * MINUTE + 1):
        for before in (after + 30 * SECOND, after + 9 * MINUTE):
            assert_same_statistics(_statistics(history, store, after, before, "s"),
                                   store.statistics(after, before, "s"), (after, before))


def test_a_coverage_read_just_now_keeps_nothing() -> None:
    history = History(None, kept_raw=KeptRaw())
    assert history.board.settle > 0
    assert history.board.settled("s") == Coverage()


def test_kept_blocks_stay_within_their_byte_budget(store: Store) -> None:
    rng = random.Random(9)
    _fill(store, rng)
    budget = 4_000  # about three blocks of this stream (a reading every ~10 s)
    history = _history(budget)
    kept = history.kept_raw
    for k in range(30):
        after = T0 + k * 7 * MINUTE + 13 * SECOND
        assert_same_statistics(_statistics(history, store, after, after + 50 * SECOND, "s"),
                               store.statistics(after, after + 50 * SECOND, "s"), after)
        assert kept.nbytes <= budget
    assert kept.evicted > 0 and 0 < len(kept) <= 4
    fetches = kept.fetches
    _statistics(history, store, T0 + 13 * SECOND, T0 + 50 * SECOND, "s")
    assert kept.fetches == fetches + 1, "an evicted block is read again"
    off = _history(0)
    _statistics(off, store, T0 + 13 * SECOND, T0 + 50 * SECOND, "s")
    assert off.kept_raw.fetches == 0 and len(off.kept_raw) == 0


def _reference_series(readings: list[Reading], after: int, before: int, interval: int,
                      stream: str | None) -> list[tuple[int, float, float, float, int]]:
    groups: dict[int, list[float]] = {}
    for r in readings:
        if after <= r.time_ns <= before and (stream is None or r.stream == stream):
            groups.setdefault(floor_to(r.time_ns, interval), []).append(r.value)
    return [(t, min(v), max(v), sum(v) / len(v), len(v)) for t, v in sorted(groups.items())]


def test_series_from_kept_blocks_equal_a_raw_grouping(store: Store) -> None:
    rng = random.Random(10)
    readings = _fill(store, rng)
    history = _history()
    for _ in range(60):
        after = rng.randrange(RAW_ONLY[0], WRITTEN[1])
        before = after + rng.choice((MINUTE, 7 * MINUTE, 25 * MINUTE, 3 * HOUR))
        points, stream = rng.choice((5, 60, 400)), rng.choice(("s", "t", None))
        for _ in range(2):  # the second time from kept blocks
            question = history.series_plan(after, before, points, stream)
            got = history.series_finish(store, question)
            assert_same_series(got.buckets, _reference_series(
                readings, after, before, question.interval_ns, stream),
                (after, before, points, stream))
    assert history.kept_raw.fetches > 0


STATISTICS = ("query($a: DateTime, $b: DateTime, $s: String) { temperatureStatistics("
              "after: $a, before: $b, stream: $s) { min max mean count } }")


@pytest.fixture
def filled_db(influx: InfluxServer, influx_db: str) -> Iterator[InfluxStore]:
    store = InfluxStore(influx.url, influx_db)
    store.ensure_ready()
    now = floor_to(time.time_ns(), MINUTE)
    rng = random.Random(11)
    write_like_the_writer(store, RollupState(),
                          irregular("e", now - 3 * HOUR, now - HOUR, rng), batch_size=500)
    yield store
    store.close()


def test_an_api_process_answers_edges_from_kept_blocks(
        tmp_path: Path, influx: InfluxServer, influx_db: str, filled_db: InfluxStore) -> None:
    api = TpsProcess(tmp_path, {"TPS_INFLUX_URL": influx.url, "TPS_INFLUX_DB": influx_db,
                                "TPS_QUERY_CACHE_TTL": "0", "TPS_ROLE": "api"}, "tps-api")
    api.start()
    try:
        oldest = filled_db.oldest_times(["e"])["e"]
        rng = random.Random(12)
        windows = [(a // 1000 * 1000, (a + length) // 1000 * 1000) for a, length in
                   ((rng.randrange(oldest, oldest + 100 * MINUTE), rng.randrange(HOUR))
                    for _ in range(30))]

        def ask_all() -> None:
            for after, before in windows:
                answer = api.graphql(STATISTICS, {"a": ns_to_datetime(after).isoformat(),
                                                  "b": ns_to_datetime(before).isoformat(),
                                                  "s": "e"})
                assert "errors" not in answer, answer
                s = answer["data"]["temperatureStatistics"]
                assert_same_statistics(Statistics(s["count"], s["min"], s["max"], s["mean"]),
                                       filled_db.statistics(after, before, "e"), (after, before))

        def kept() -> dict[str, int]:
            with urllib.request.urlopen(api.url + "/health", timeout=10) as resp:
                figures: dict[str, int] = json.load(resp)["history"]["kept_raw"]
            return figures

        assert kept()["max_bytes"] == 96 << 20
        # Blocks are kept once the coverage the process read has settled (1 s).
        def asked_and_kept() -> bool:
            ask_all()
            return kept()["blocks"] > 0

        wait_until(asked_and_kept, 20, "blocks kept")
        ask_all()  # wishes for whatever the first passes missed, read by the fetcher
        wait_until(lambda: kept()["wanted"] == 0, 20, "the fetcher read every wish")
        fetches = kept()["fetches"]
        ask_all()
        wait_until(lambda: kept()["wanted"] == 0, 20, "the fetcher read every wish")
        assert kept()["fetches"] == fetches, "the windows' edges came from kept blocks"
    finally:
        api.close()
