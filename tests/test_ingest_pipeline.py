"""The writer's batching policy (tps/ingest/pipeline.py) as plain code: no actor, no
store - feed threads adding, a loop taking batches, and the disk in between."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tps.actors.stats import WriterStats
from tps.config.settings import Settings
from tps.ingest.pipeline import Pipeline
from tps.model import Reading

T0 = 1_700_000_000_000_000_000


def make(tmp_path: Path, **overrides: object) -> tuple[Pipeline, WriterStats]:
    base = Settings(data_dir=tmp_path, batch_size=20, buffer_limit=50, spool=True)
    stats = WriterStats()
    return Pipeline(replace(base, **overrides), stats), stats  # type: ignore[arg-type]


def test_the_policy_module_imports_no_actor_code() -> None:
    code = ("import sys, tps.ingest.pipeline; "
            "print(sorted(m for m in sys.modules if m.startswith(('pykka', 'tps.actors'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_concurrent_feeds_come_out_once_each_in_order_through_memory_and_spool(
    tmp_path: Path,
) -> None:
    """Four feed threads overflow a 50-reading memory into the spool while batches are
    taken and acknowledged: every reading comes out once, each feed's in its order,
    and checkpoints only move forward (memory is a prefix of the unwritten spool)."""
    pipeline, stats = make(tmp_path)
    feeds, per_feed = 4, 300
    out: list[Reading] = []
    positions: list[int] = []
    deadline = time.monotonic() + 30

    def feed(n: int) -> None:
        for i in range(per_feed):
            pipeline.add((Reading(f"f{n}", T0 + i, float(i)),))

    def write() -> None:  # what the writer actor does, minus the store
        while len(out) < feeds * per_feed and time.monotonic() < deadline:
            batch = pipeline.next_batch(20)
            if batch.readings:
                out.extend(batch.readings)
                if batch.position is not None:
                    positions.append(batch.position)
                pipeline.ack(batch)

    threads = [threading.Thread(target=feed, args=(n,)) for n in range(feeds)]
    writer = threading.Thread(target=write)
    writer.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.join()
    assert len(out) == feeds * per_feed
    for n in range(feeds):
        mine = [r.value for r in out if r.stream == f"f{n}"]
        assert mine == [float(i) for i in range(per_feed)], f"feed f{n}"
    assert positions == sorted(positions)
    assert stats.spool_replayed > 0 and stats.dropped == 0
    pipeline.close()


def test_a_feed_thread_does_not_wait_for_a_slow_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline, _ = make(tmp_path, buffer_limit=10_000)
    pipeline.add([Reading("s", T0, 1.0)])
    real_write = os.write
    writing, release = threading.Event(), threading.Event()

    def slow_write(fd: int, data: bytes | memoryview) -> int:
        writing.set()
        release.wait(10)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", slow_write)
    syncer = threading.Thread(target=pipeline.sync_spool)
    syncer.start()
    try:
        assert writing.wait(5)
        added = threading.Event()

        def add() -> None:
            for i in range(1, 100):
                pipeline.add([Reading("s", T0 + i, 1.0)])
            added.set()

        threading.Thread(target=add).start()
        assert added.wait(5), "a feed thread waited for the disk"
        assert pipeline.waiting() == 100
    finally:
        release.set()
        syncer.join(10)
    monkeypatch.undo()
    pipeline.close()


def test_readings_the_store_refused_are_counted_as_dropped(tmp_path: Path) -> None:
    pipeline, stats = make(tmp_path, spool=False)
    pipeline.add([Reading("s", T0 + i, 1.0) for i in range(5)])
    batch = pipeline.next_batch(20)
    pipeline.ack(batch, refused=2)
    assert (stats.dropped, stats.points_written, stats.buffered) == (2, 5, 0)


def test_after_close_readings_are_refused_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline, stats = make(tmp_path, spool=False)
    pipeline.close()
    for _ in range(3):
        assert pipeline.add([Reading("s", T0, 1.0)]) is False
    assert stats.dropped == 3
    assert caplog.text.count("Writer is stopped") == 1, "warned once, not per call"
