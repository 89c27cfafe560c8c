"""The batching writer: batching, retry without blocking, bounds, flush, crash safety.

Unit tests use a small in-test store that records writes and can be told to fail (the
retry *policy* is what is under test); the zero-loss claims are proven against the real
InfluxDB at the end of this file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.influxdb import InfluxServer
from tests.support.wait import wait_until
from tps.actors.stats import WriterStats
from tps.actors.writer import WriterHandle
from tps.config.settings import Settings
from tps.errors import PartialWrite, StoreError, StoreUnavailable
from tps.ingest.backoff import Backoff
from tps.model import Reading
from tps.store.base import Store
from tps.store.influx import InfluxStore

T0 = 1_700_000_000_000_000_000


class RecordingStore:
    """Remembers points like a store (idempotent by stream+time); fails on request."""

    def __init__(self) -> None:
        self.points: dict[tuple[str, int], float] = {}
        self.writes: list[int] = []
        self.fail: StoreError | None = None
        self.fail_ready = False
        self.lock = threading.Lock()

    def factory(self) -> Store:
        return self  # type: ignore[return-value]

    def ensure_ready(self) -> None:
        if self.fail_ready:
            raise StoreUnavailable("store is down (test)")

    def write(self, readings: Sequence[Reading], rollups: object = None) -> None:
        if self.fail is not None:
            raise self.fail
        with self.lock:
            for r in readings:
                self.points[(r.stream, r.time_ns)] = r.value
            self.writes.append(len(readings))

    def close(self) -> None:
        pass

    def count(self) -> int:
        with self.lock:
            return len(self.points)


def readings(n: int, start: int = 0, stream: str = "s1") -> list[Reading]:
    return [Reading(stream, T0 + start + i, float(start + i)) for i in range(n)]


MakeWriter = Callable[..., tuple[WriterHandle, WriterStats]]


@pytest.fixture
def make_writer(tmp_path: Path) -> Iterator[MakeWriter]:
    handles: list[WriterHandle] = []

    def make(store: RecordingStore | Callable[[], Store],
             backoff: Callable[[], Backoff] | None = None, **overrides: object
             ) -> tuple[WriterHandle, WriterStats]:
        # The fake store keeps raw points only: rollups are tested on real stores
        # (tests/test_history_*.py).
        base = Settings(data_dir=tmp_path, batch_size=10, flush_interval=60.0,
                        buffer_limit=1000, spool=False, spool_sync_interval=0.02,
                        rollups=False)
        settings = replace(base, **overrides)  # type: ignore[arg-type]
        stats = WriterStats()
        factory = store.factory if isinstance(store, RecordingStore) else store
        handle = WriterHandle(settings, factory, stats, backoff=backoff)
        handle.start()
        handles.append(handle)
        return handle, stats

    yield make
    for handle in handles:
        handle.stop(0.5)


def test_a_full_batch_is_written_without_waiting_for_the_interval(
    make_writer: MakeWriter,
) -> None:
    store = RecordingStore()
    handle, stats = make_writer(store, batch_size=10)
    assert handle.answers_within(2)  # started: its first drain has happened
    for r in readings(25):
        handle.submit([r])
    wait_until(lambda: store.count() == 20, 5, what="two full batches")
    assert handle.answers_within(2)  # every doorbell before this call is handled
    assert store.writes == [10, 10]  # the partial batch waits for the interval
    assert stats.buffered == 5 and stats.batches_written == 2


def test_a_partial_batch_is_written_at_the_flush_interval(make_writer: MakeWriter) -> None:
    store = RecordingStore()
    handle, stats = make_writer(store, batch_size=1000, flush_interval=0.1)
    handle.submit(readings(5))
    wait_until(lambda: store.count() == 5, 3, what="the partial batch")
    assert stats.points_written == 5 and stats.oldest_unwritten_ns is None


def test_failing_store_is_retried_with_backoff_while_the_mailbox_stays_responsive(
    make_writer: MakeWriter, caplog: pytest.LogCaptureFixture
) -> None:
    store = RecordingStore()
    store.fail = StoreUnavailable("connection refused (test)")
    handle, stats = make_writer(store, flush_interval=0.05)
    handle.submit(readings(30))
    wait_until(lambda: stats.write_failures >= 2, 5, what="two failed writes")
    # The next retry is ~1 s away: an actor that slept through its backoff could not
    # answer within half a second.
    assert handle.answers_within(0.5)
    assert not stats.store_reachable and stats.buffered == 30
    assert "Store unreachable while writing" in caplog.text
    store.fail = None
    assert handle.flush(10)
    assert store.count() == 30 and stats.store_reachable and stats.write_retries >= 2
    assert "reachable again" in caplog.text


def test_a_flush_request_does_not_wait_out_a_long_backoff(make_writer: MakeWriter) -> None:
    store = RecordingStore()
    store.fail = StoreUnavailable("down (test)")
    handle, stats = make_writer(store, flush_interval=0.05,
                                backoff=lambda: Backoff(initial=60, cap=60))
    handle.submit(readings(6))
    wait_until(lambda: stats.write_failures >= 1, 10, what="a failed write")
    store.fail = None
    assert handle.flush(1.5), "the flush waited for the 60 s backoff"
    assert store.count() == 6


def test_memory_only_full_buffer_drops_the_oldest_and_counts_them(
    make_writer: MakeWriter, caplog: pytest.LogCaptureFixture
) -> None:
    store = RecordingStore()
    store.fail = StoreUnavailable("down (test)")
    handle, stats = make_writer(store, buffer_limit=10, spool=False)
    for i in range(5):
        handle.submit(readings(5, i * 5))
    assert stats.dropped == 15 and stats.buffered == 10
    assert "dropped the oldest" in caplog.text
    store.fail = None
    assert handle.flush(10)
    assert sorted(t - T0 for _, t in store.points) == list(range(15, 25))


def test_stop_flushes_everything_buffered(make_writer: MakeWriter) -> None:
    store = RecordingStore()
    handle, _ = make_writer(store, batch_size=1000)
    handle.submit(readings(7))
    assert handle.stop(5) is True
    assert store.count() == 7


def test_stop_reports_readings_it_could_not_write(make_writer: MakeWriter) -> None:
    store = RecordingStore()
    store.fail = StoreUnavailable("down (test)")
    handle, _ = make_writer(store)
    handle.submit(readings(3))
    assert handle.stop(0.3) is False


@pytest.mark.parametrize("spool", [False, True], ids=["memory-only", "spool"])
def test_crash_and_restart_of_the_writer_actor_loses_nothing(
    make_writer: MakeWriter, spool: bool
) -> None:
    store = RecordingStore()
    store.fail = StoreUnavailable("down (test)")
    failures: list[BaseException] = []
    handle, _ = make_writer(store, spool=spool)
    handle.submit(readings(33))
    handle.inject_failure("boom (test)")
    wait_until(lambda: not handle.is_alive(), 3, what="the actor to die")
    handle.submit(readings(4, 100))  # arrives while no actor runs
    store.fail = None
    handle.start(on_failure=failures.append)
    assert handle.flush(10)
    assert store.count() == 37


def test_injected_failure_reaches_the_on_failure_callback(make_writer: MakeWriter) -> None:
    store = RecordingStore()
    handle, _ = make_writer(store)
    failures: list[BaseException] = []
    seen = threading.Event()

    def on_failure(exc: BaseException) -> None:
        failures.append(exc)
        seen.set()

    handle.inject_failure("first (test)")  # the fixture's actor had no callback
    wait_until(lambda: not handle.is_alive(), 3, what="the actor to die")
    handle.start(on_failure=on_failure)
    handle.inject_failure("injected (test)")
    assert seen.wait(3)
    assert isinstance(failures[0], RuntimeError) and "injected (test)" in str(failures[0])


def test_a_failure_while_starting_reaches_the_on_failure_callback(
    make_writer: MakeWriter
) -> None:
    """pykka does not call on_failure when on_start raises: a writer that crashed while
    draining the spool at start (issue 14: values that overflowed the rollup sums) was
    dead without the supervisor knowing, and nothing was written again."""
    store = RecordingStore()
    broken = threading.Event()

    def factory() -> Store:
        if broken.is_set():
            raise RuntimeError("a bug while starting (test)")
        return store.factory()

    handle, _ = make_writer(factory)
    failures: list[BaseException] = []
    seen = threading.Event()

    def on_failure(exc: BaseException) -> None:
        failures.append(exc)
        seen.set()

    handle.inject_failure("first (test)")
    wait_until(lambda: not handle.is_alive(), 3, what="the actor to die")
    broken.set()
    handle.start(on_failure=on_failure)
    assert seen.wait(3)
    assert "a bug while starting (test)" in str(failures[0])


def test_store_down_at_start_is_retried_not_a_crash(make_writer: MakeWriter) -> None:
    store = RecordingStore()
    store.fail_ready = True
    handle, stats = make_writer(store)
    handle.submit(readings(5))
    wait_until(lambda: not stats.store_reachable, 3, what="the store marked down")
    assert handle.is_alive()
    store.fail_ready = False
    assert handle.flush(10)
    assert store.count() == 5


def test_a_refused_write_is_retried_never_dropped(
    make_writer: MakeWriter, caplog: pytest.LogCaptureFixture
) -> None:
    store = RecordingStore()
    store.fail = StoreError("InfluxDB refused write (HTTP 401): authorization failed (test)")
    handle, stats = make_writer(store, flush_interval=0.05)
    handle.submit(readings(4))
    wait_until(lambda: stats.write_failures >= 3, 10, what="three refused writes")
    assert stats.dropped == 0 and stats.buffered == 4
    assert "check the InfluxDB credentials" in caplog.text
    store.fail = None
    assert handle.flush(5)
    assert store.count() == 4


def test_a_partial_write_counts_what_influxdb_refused_and_moves_on(
    make_writer: MakeWriter,
) -> None:
    store = RecordingStore()
    store.fail = PartialWrite("points beyond retention policy (test)", dropped=3)
    handle, stats = make_writer(store, flush_interval=0.05)
    handle.submit(readings(4))
    wait_until(lambda: stats.dropped == 3, 5, what="the refused readings counted")
    store.fail = None
    handle.submit(readings(2, 10))
    assert handle.flush(5)
    assert store.count() == 2 and stats.buffered == 0


def test_with_the_spool_a_full_memory_buffer_drops_nothing(make_writer: MakeWriter) -> None:
    store = RecordingStore()
    store.fail = StoreUnavailable("down (test)")
    handle, stats = make_writer(store, spool=True, buffer_limit=20, batch_size=8)
    for i in range(40):
        handle.submit(readings(5, i * 5))
    assert stats.dropped == 0
    assert stats.buffered <= 20
    store.fail = None
    assert handle.flush(10)
    assert store.count() == 200
    assert stats.spool_replayed >= 180


def test_spooled_readings_are_replayed_by_the_next_start(
    tmp_path: Path, make_writer: MakeWriter
) -> None:
    down = RecordingStore()
    down.fail = StoreUnavailable("down (test)")
    first, _ = make_writer(down, spool=True)
    first.submit(readings(50))
    assert first.stop(0.3) is False
    up = RecordingStore()
    second, stats = make_writer(up, spool=True)
    assert second.flush(10)
    assert up.count() == 50 and stats.spool_replayed == 50
    assert list((tmp_path / "spool").glob("*.seg"))  # only the active segment is left


# --- against the real InfluxDB ---------------------------------------------------------


def feed(handle: WriterHandle, stop: threading.Event, rate: float, sent: list[Reading],
         stream: str) -> None:
    i = 0
    while not stop.is_set():
        r = Reading(stream, T0 + i * 1000, float(i))
        handle.submit([r])
        sent.append(r)
        i += 1
        time.sleep(1 / rate)


def test_influxdb_stopped_for_10_s_mid_stream_then_restarted_loses_nothing(
    private_influx: InfluxServer, tmp_path: Path
) -> None:
    db = "tps_outage"
    settings = Settings(influx_url=private_influx.url, influx_db=db, influx_timeout=2.0,
                        data_dir=tmp_path, batch_size=500, flush_interval=0.2,
                        spool=True, spool_sync_interval=0.05)
    stats = WriterStats()
    handle = WriterHandle(
        settings, lambda: InfluxStore(private_influx.url, db, timeout=2.0), stats)
    handle.start()
    stop = threading.Event()
    sent: list[Reading] = []
    thread = threading.Thread(target=feed, args=(handle, stop, 200, sent, "outage-1"))
    thread.start()
    try:
        time.sleep(1.5)  # feeding with the store up
        private_influx.stop()
        down_at = time.monotonic()
        wait_until(lambda: not stats.store_reachable, 10, what="the outage noticed")
        time.sleep(max(0.0, 10 - (time.monotonic() - down_at)))  # a 10 s outage
        private_influx.start()
        time.sleep(1.5)  # feeding with the store back
    finally:
        stop.set()
        thread.join(5)
    assert handle.flush(40), f"still buffered: {stats.buffered}"
    handle.stop(5)
    assert stats.dropped == 0 and stats.write_failures > 0
    assert private_influx.count(db, "outage-1") == len(sent) > 2000
    rows = private_influx.query('SELECT LAST("value") FROM "temperature"', db)
    assert rows[0]["values"][0][1] == sent[-1].value  # type: ignore[index]
