"""Writers take readings from JetStream into InfluxDB and acknowledge only what it took."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence

import pytest

from tests.support.influxdb import InfluxServer
from tests.support.nats import NatsCluster
from tests.support.wait import wait_until
from tps.actors.stats import WriterStats
from tps.cluster.link import NatsLink
from tps.cluster.names import PARTITIONS, READINGS_STREAM, writers_consumer
from tps.cluster.readings import ReadingsPublisher
from tps.cluster.writer import ClusterWriterService
from tps.model import Reading
from tps.store.influx import InfluxStore

T0 = 1_700_000_000_000_000_000


def readings(n: int, start: int = 0, streams: Sequence[str] = ("a", "b", "c")) -> list[Reading]:
    return [Reading(streams[i % len(streams)], T0 + start + i, i / 4) for i in range(n)]


@pytest.fixture
def link(nats_server: NatsCluster) -> Iterator[NatsLink]:
    link = NatsLink(nats_server.urls, "test").start()
    assert link.wait_connected(10)
    yield link
    link.stop()


def unacknowledged(link: NatsLink) -> int:
    async def count() -> int:
        total = 0
        for partition in range(PARTITIONS):
            info = await link.js.consumer_info(READINGS_STREAM, writers_consumer(partition))
            total += int(info.num_ack_pending) + int(info.num_pending)
        return total
    return link.call(count, 5)


def writer(link: NatsLink, url: str, db: str, *, timeout: float = 10.0) -> ClusterWriterService:
    """A lone writer consuming every partition (no leases)."""
    service = ClusterWriterService(link, lambda: InfluxStore(url, db, timeout=timeout),
                                   WriterStats(), batch_size=500, flush_interval=0.05)
    service.start()
    service.own_all()
    return service


def test_published_readings_reach_influxdb_once_and_are_acknowledged(
        link: NatsLink, influx: InfluxServer, influx_db: str) -> None:
    publisher = ReadingsPublisher(link)
    publisher.ensure_ready()
    service = writer(link, influx.url, influx_db)
    try:
        for k in range(5):
            publisher.write(readings(300, start=k * 1000))
        wait_until(lambda: influx.count(influx_db) == 1500, 15, "1,500 readings in InfluxDB")
        wait_until(lambda: unacknowledged(link) == 0, 5, "every message acknowledged")
        assert service.stats.points_written == 1500
    finally:
        service.stop(5)


def test_two_writers_share_the_work_and_store_everything_once(
        link: NatsLink, nats_server: NatsCluster, influx: InfluxServer, influx_db: str) -> None:
    other = NatsLink(nats_server.urls, "other").start()
    publisher = ReadingsPublisher(link)
    publisher.ensure_ready()
    services = [writer(link, influx.url, influx_db), writer(other, influx.url, influx_db)]
    try:
        for k in range(40):
            publisher.write(readings(50, start=k * 100))
        wait_until(lambda: influx.count(influx_db) == 2000, 15, "2,000 readings")
        wait_until(lambda: unacknowledged(link) == 0, 5, "every message acknowledged")
        assert sum(s.stats.points_written for s in services) == 2000
    finally:
        for service in services:
            service.stop(5)
        other.stop()


def test_a_store_outage_holds_the_batch_unacknowledged_and_loses_nothing(
        link: NatsLink, private_influx: InfluxServer) -> None:
    publisher = ReadingsPublisher(link)
    publisher.ensure_ready()
    service = writer(link, private_influx.url, "outage", timeout=1.0)
    try:
        publisher.write(readings(100))
        wait_until(lambda: private_influx.count("outage") == 100, 15, "the first readings")
        private_influx.stop()
        publisher.write(readings(100, start=1000))
        wait_until(lambda: service.stats.write_failures >= 2, 10, "failed writes")
        assert unacknowledged(link) > 0
        private_influx.start()
        wait_until(lambda: private_influx.count("outage") == 200, 20, "the held readings")
        wait_until(lambda: unacknowledged(link) == 0, 5, "every message acknowledged")
    finally:
        service.stop(5)


# A writer process whose store write never returns: it is killed in the middle of a batch.
DOOMED_WRITER = """
import sys, threading
from tps.actors.stats import WriterStats
from tps.cluster.link import NatsLink
from tps.cluster.writer import ClusterWriterService
from tps.store.influx import InfluxStore

class HangingStore(InfluxStore):
    def write(self, readings, rollups=None):
        print("hanging", len(readings), flush=True)
        threading.Event().wait()

link = NatsLink(sys.argv[1].split(","), "doomed").start()
service = ClusterWriterService(link, lambda: HangingStore(sys.argv[2], sys.argv[3]),
                               WriterStats(), batch_size=500, flush_interval=0.05)
service.start()
service.own_all()
print("started", flush=True)
threading.Event().wait()
"""


@pytest.mark.slow
def test_a_writer_killed_mid_batch_loses_nothing(
        link: NatsLink, nats_server: NatsCluster, influx: InfluxServer, influx_db: str) -> None:
    publisher = ReadingsPublisher(link)
    publisher.ensure_ready()
    doomed = subprocess.Popen([sys.executable, "-c", DOOMED_WRITER, nats_server.url,
                               influx.url, influx_db], stdout=subprocess.PIPE, text=True)
    try:
        assert doomed.stdout is not None
        assert doomed.stdout.readline().startswith("started")
        publisher.write(readings(300))
        assert doomed.stdout.readline().startswith("hanging")
        doomed.kill()  # kill -9 with the batch fetched and unacknowledged
        doomed.wait(10)
        survivor = writer(link, influx.url, influx_db)
        publisher.write(readings(300, start=1000))
        wait_until(lambda: influx.count(influx_db) == 600, 30,
                   "the dead writer's batch to be redelivered and written")
        wait_until(lambda: unacknowledged(link) == 0, 5, "every message acknowledged")
        assert survivor.consumer_stats.redelivered >= 1
        survivor.stop(5)
    finally:
        doomed.kill()
        doomed.wait(10)
