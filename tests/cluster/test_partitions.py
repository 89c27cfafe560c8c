"""Writers share the readings partitions by leases; rollups stay exact through hand-overs
and through a writer killed in the middle of a batch (real NATS, real InfluxDB).

The killed-writer test is the acceptance test of the late-reading path: the dead
writer's batches are redelivered to the survivor ten seconds (the ack wait) after it
began writing newer readings of the same streams; at the end every stored 1 m and 1 h
rollup must equal the raw aggregate of its bucket, the coverage must hold every whole
minute, and random windows answered from rollups plus raw edges must equal raw scans.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.influxdb import InfluxServer
from tests.support.nats import NatsCluster
from tests.support.rollup_checks import check_random_windows, rollup_mismatches, uncovered
from tests.support.wait import wait_until
from tps.cluster.assign import assign
from tps.cluster.link import NatsLink
from tps.cluster.names import (
    PARTITIONS,
    READINGS_STREAM,
    WORK_BUCKET,
    partition_lease,
    partition_of,
    writers_consumer,
)
from tps.cluster.node import ClusterNode
from tps.cluster.readings import ReadingsPublisher
from tps.config.settings import Settings
from tps.errors import ClusterUnavailable
from tps.history.buckets import HOUR, SECOND
from tps.model import Reading
from tps.store.influx import InfluxStore

TTL = 3.0
STREAMS = [f"w{i}" for i in range(10)]
STEP = 100_000_000  # 0.1 s between a stream's readings


def test_the_partitions_of_a_few_writers_are_balanced() -> None:
    keys = [partition_lease(p) for p in range(PARTITIONS)]
    for writers in (["a"], ["a", "b"], ["a", "b", "c"]):
        loads = list(assign(keys, writers).values())
        counts = [loads.count(w) for w in writers]
        assert sum(counts) == PARTITIONS and max(counts) - min(counts) <= 1
    assert len({partition_of(s) for s in STREAMS}) >= 5  # the test streams spread out


def settings(nats: NatsCluster, influx: InfluxServer, db: str, name: str, tmp: Path,
             **extra: object) -> Settings:
    return Settings(nats_url=tuple(nats.urls), role="writer", instance=name,
                    data_dir=tmp / name, influx_url=influx.url, influx_db=db, lease_ttl=TTL,
                    batch_size=500, flush_interval=0.05, **extra)  # type: ignore[arg-type]


def writer_node(nats: NatsCluster, influx: InfluxServer, db: str, name: str,
                tmp: Path) -> ClusterNode:
    conf = settings(nats, influx, db, name, tmp)
    node = ClusterNode(conf, store_factory=lambda: InfluxStore(influx.url, db))
    node.start()
    return node


class Publisher:
    """Publishes one reading per stream every 20 ms (times 0.1 s apart, so buckets
    fill like a 10 Hz feed's), from its own thread, as an ingest process would."""

    def __init__(self, link: NatsLink, start_ns: int) -> None:
        self._publisher = ReadingsPublisher(link)
        # (A fresh three-node cluster may take a while to create the stream and the
        # partitions' consumers: the ingest writer retries too.)
        wait_until(self._ready, 30, "the readings stream", step=0.2)
        self._next = start_ns
        self._stop = threading.Event()
        self._rng = random.Random(11)
        self.published = 0
        self.first_ns = start_ns
        self.last_ns = start_ns
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _ready(self) -> bool:
        try:
            self._publisher.ensure_ready()
        except ClusterUnavailable:
            return False
        return True

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            t = self._next
            batch = [Reading(s, t + k, round(self._rng.uniform(-20, 40), 2))
                     for k, s in enumerate(STREAMS)]
            self._publisher.write(batch)
            self.published += len(batch)
            self.last_ns = t + len(STREAMS)
            self._next += STEP
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def pending(link: NatsLink) -> int:
    async def count() -> int:
        total = 0
        for partition in range(PARTITIONS):
            info = await link.js.consumer_info(READINGS_STREAM, writers_consumer(partition))
            total += int(info.num_ack_pending) + int(info.num_pending)
        return total
    return link.call(count, 5)


def holders(link: NatsLink) -> dict[str, str]:
    """partition lease key -> owner, as the bucket holds them now."""
    import json

    async def read() -> dict[str, str]:
        kv = await link.js.key_value(WORK_BUCKET)
        out = {}
        for p in range(PARTITIONS):
            try:
                entry = await kv.get(partition_lease(p))
            except Exception:  # noqa: BLE001 - not held
                continue
            if entry.value:
                out[partition_lease(p)] = json.loads(entry.value)["owner"]
        return out
    return link.call(read, 5)


def verify(influx: InfluxServer, db: str, publisher: Publisher) -> None:
    store = InfluxStore(influx.url, db)
    try:
        assert store.count() == publisher.published
        lo, hi = publisher.first_ns, publisher.last_ns
        assert rollup_mismatches(store, STREAMS, lo, hi) == []
        assert uncovered(store, STREAMS, lo, hi) == []
        check_random_windows(store, STREAMS, lo, hi, random.Random(5), count=40)
    finally:
        store.close()


@pytest.fixture
def link(nats_server: NatsCluster) -> Iterator[NatsLink]:
    link = NatsLink(nats_server.urls, "test").start()
    assert link.wait_connected(10)
    yield link
    link.stop()


def start_ns() -> int:
    """Readings start 20 s before an hour boundary, so rollups cross it."""
    return (time.time_ns() // HOUR - 1) * HOUR + HOUR - 20 * SECOND


def test_writers_split_the_partitions_and_hand_them_over_cleanly(
        nats_server: NatsCluster, link: NatsLink, influx: InfluxServer, influx_db: str,
        tmp_path: Path) -> None:
    first = writer_node(nats_server, influx, influx_db, "writer-a", tmp_path)
    nodes = [first]
    publisher = Publisher(link, start_ns()).start()
    try:
        wait_until(lambda: len(first.writer.partitions()) == PARTITIONS if first.writer
                   else False, 15, "the first writer to hold every partition")
        time.sleep(1)
        second = writer_node(nats_server, influx, influx_db, "writer-b", tmp_path)
        nodes.append(second)
        wait_until(lambda: sorted(holders(link).values()).count("writer-b") == PARTITIONS // 2,
                   15, "the second writer to take half of the partitions")
        assert second.writer is not None and len(second.writer.partitions()) == 4
        time.sleep(1)
        first.hand_back(5)  # a clean stop: its partitions go to the other at once
        first.close()
        nodes.remove(first)
        wait_until(lambda: len(holders(link)) == PARTITIONS and
                   set(holders(link).values()) == {"writer-b"}, 10,
                   "the second writer to hold every partition")
        time.sleep(1)
        publisher.stop()
        wait_until(lambda: pending(link) == 0, 20, "every message written and acknowledged")
        verify(influx, influx_db, publisher)
    finally:
        publisher.stop()
        for node in nodes:
            node.hand_back(2)
            node.close()


# A writer process whose store hangs once it has written a few batches: the batch it
# was writing is in the store but never acknowledged, the others wait in its mailbox
# (fetched, unwritten, unacknowledged) - and then it is killed with SIGKILL.
DOOMED_WRITER = """
import sys, threading
from pathlib import Path
from tps.cluster.node import ClusterNode
from tps.config.settings import Settings
from tps.errors import ClusterUnavailable
from tps.store.influx import InfluxStore

nats, influx, db, ttl, tmp = sys.argv[1].split(","), *sys.argv[2:4], float(sys.argv[4]), sys.argv[5]
writes = 0

class HangingStore(InfluxStore):
    def write(self, readings, rollups=None):
        global writes
        writes += 1
        super().write(readings, rollups)
        if writes >= 15:
            print("hanging", len(readings), flush=True)
            threading.Event().wait()

settings = Settings(nats_url=tuple(nats), role="writer", instance="doomed", data_dir=Path(tmp),
                    influx_url=influx, influx_db=db, lease_ttl=ttl, batch_size=200,
                    flush_interval=0.05)
node = ClusterNode(settings, store_factory=lambda: HangingStore(influx, db))
node.start()
print("started", flush=True)
threading.Event().wait()
"""


@pytest.mark.slow
def test_a_writer_killed_mid_batch_leaves_every_rollup_equal_to_its_raw_bucket(
        nats_cluster: NatsCluster, influx: InfluxServer, influx_db: str,
        tmp_path: Path) -> None:
    link = NatsLink(nats_cluster.urls, "test").start()
    assert link.wait_connected(10)
    doomed = subprocess.Popen(
        [sys.executable, "-c", DOOMED_WRITER, nats_cluster.url, influx.url, influx_db,
         str(TTL), str(tmp_path / "doomed")], stdout=subprocess.PIPE, text=True)
    survivor: ClusterNode | None = None
    publisher: Publisher | None = None
    try:
        assert doomed.stdout is not None
        assert doomed.stdout.readline().startswith("started")
        publisher = Publisher(link, start_ns())
        wait_until(lambda: len(holders(link)) == PARTITIONS, 20,
                   "the doomed writer to hold every partition")
        publisher.start()
        assert doomed.stdout.readline().startswith("hanging")
        time.sleep(0.5)  # more batches pile up in its mailbox, fetched and unacknowledged
        doomed.kill()
        doomed.wait(10)
        survivor = writer_node(nats_cluster, influx, influx_db, "survivor", tmp_path)
        wait_until(lambda: set(holders(link).values()) == {"survivor"} and
                   len(holders(link)) == PARTITIONS, TTL + 10,
                   "the survivor to take every partition")
        assert survivor.writer is not None
        # The dead writer's batches come back after the ack wait (10 s), behind newer ones.
        wait_until(lambda: survivor is not None and survivor.writer is not None and
                   survivor.writer.consumer_stats.redelivered > 0, 20,
                   "the dead writer's batches to be redelivered")
        time.sleep(1)
        publisher.stop()
        wait_until(lambda: pending(link) == 0, 30, "every message written and acknowledged")
        verify(influx, influx_db, publisher)
        counters = survivor.writer.rollup_counters
        assert counters.streams_recomputed > 0, vars(counters)  # the late path ran
    finally:
        doomed.kill()
        doomed.wait(10)
        if publisher is not None:
            publisher.stop()
        if survivor is not None:
            survivor.hand_back(2)
            survivor.close()
        link.stop()
