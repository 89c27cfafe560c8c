"""Readings on JetStream: published once acknowledged, consumed by writers, pushed live."""

from __future__ import annotations

import queue
from collections.abc import Iterator, Sequence

import pytest

from tests.support.nats import NatsCluster
from tests.support.wait import wait_until
from tps.cluster.jetstream import ensure_readings_stream
from tps.cluster.link import NatsLink
from tps.cluster.names import (
    READINGS_STREAM,
    partition_of,
    readings_subject,
    stream_of_subject,
    writers_consumer,
)
from tps.cluster.readings import (
    MSG_ID,
    FetchedBatch,
    LiveFeed,
    ReadingsConsumer,
    ReadingsPublisher,
    messages_for,
)
from tps.errors import ClusterUnavailable
from tps.model import Reading
from tps.store.lineprotocol import encode_readings

T0 = 1_700_000_000_000_000_000


def batch(n: int, streams: Sequence[str] = ("a", "b"), start: int = 0) -> list[Reading]:
    return [Reading(streams[i % len(streams)], T0 + start + i, 20.0 + i / 8)
            for i in range(n)]


@pytest.fixture
def link(nats_server: NatsCluster) -> Iterator[NatsLink]:
    link = NatsLink(nats_server.urls, "test").start()
    assert link.wait_connected(10)
    yield link
    link.stop()


def stream_messages(link: NatsLink) -> int:
    async def count() -> int:
        info = await link.js.stream_info(READINGS_STREAM)
        return int(info.state.messages)
    return link.call(count, 5)


def test_one_message_per_stream_whose_payload_is_the_influx_line_protocol() -> None:
    readings = batch(6, ("a", "sat.1:x"))
    messages = messages_for(readings)
    assert [subject for subject, _, _ in messages] == [readings_subject("a"),
                                                        "tps.readings.2.sat/1=x"]
    assert messages[0][1] == encode_readings([r for r in readings if r.stream == "a"])
    assert messages[0][2] == f"a:{T0}:{T0 + 4}:3"
    assert [stream_of_subject(subject) for subject, _, _ in messages] == ["a", "sat.1:x"]
    assert stream_of_subject("tps.readings.sat") is None
    assert stream_of_subject("tps.other.2.a") is None


def test_a_published_batch_is_on_jetstream_and_a_retry_is_stored_once(
        link: NatsLink) -> None:
    publisher = ReadingsPublisher(link)
    publisher.ensure_ready()
    readings = batch(10)
    publisher.write(readings)
    assert stream_messages(link) == 2

    async def first() -> tuple[str, bytes, str]:
        msg = await link.js.get_msg(READINGS_STREAM, seq=1)
        assert msg.headers is not None and msg.subject and msg.data
        return msg.subject, msg.data, str(msg.headers[MSG_ID])

    subject, data, msg_id = link.call(first, 5)
    assert subject == f"tps.readings.{partition_of('a')}.a"
    assert data == encode_readings([r for r in readings if r.stream == "a"])
    assert msg_id == f"a:{T0}:{T0 + 8}:5"
    publisher.write(readings)  # the writer retrying after an ambiguous failure
    assert stream_messages(link) == 2


def test_publishing_without_nats_raises_cluster_unavailable(nats_server: NatsCluster) -> None:
    link = NatsLink(nats_server.urls, "test").start()
    try:
        assert link.wait_connected(10)
        publisher = ReadingsPublisher(link, timeout=1.0)
        publisher.ensure_ready()
        nats_server.kill(0)
        wait_until(lambda: not link.status().connected, 10, "the link to notice")
        with pytest.raises(ClusterUnavailable):
            publisher.write(batch(4))
        nats_server.start_node(0)
        wait_until(lambda: link.status().connected, 15, "the reconnect")
        wait_until(lambda: _writes(publisher, batch(4)), 15, "a write to succeed again")
    finally:
        link.stop()


def _writes(publisher: ReadingsPublisher, readings: list[Reading]) -> bool:
    try:
        publisher.write(readings)
    except ClusterUnavailable:
        return False
    return True


SAME_PARTITION = ("a", "f", "h")  # streams of one partition (partition_of: 4)


def test_a_partition_consumer_acks_only_what_the_store_took(link: NatsLink) -> None:
    publisher = ReadingsPublisher(link)
    publisher.ensure_ready()
    got: queue.Queue[FetchedBatch] = queue.Queue()
    partition = partition_of("a")
    assert {partition_of(s) for s in SAME_PARTITION} == {partition}
    consumer = ReadingsConsumer(link, got.put, batch_size=1000, linger=0.05,
                                partition=partition).start()
    try:
        publisher.write(batch(100, SAME_PARTITION))
        first = got.get(timeout=10)
        # Released (the store refused): JetStream delivers the same readings again.
        first.release()
        again = got.get(timeout=10)
        assert sorted(again.readings, key=lambda r: r.time_ns) == sorted(
            first.readings, key=lambda r: r.time_ns)
        assert again.redelivered and again.partition == partition
        again.ack()
        seen = list(again.readings)
        publisher.write(batch(50, SAME_PARTITION, start=1000))
        while len(seen) < 150:
            more = got.get(timeout=10)
            seen.extend(more.readings)
            more.ack()
        assert sorted(r.time_ns for r in seen) == sorted(
            r.time_ns for r in batch(100, SAME_PARTITION) + batch(50, SAME_PARTITION,
                                                                    start=1000))
        wait_until(lambda: consumer.stats.readings == 150, 5, "acks to be counted")
        assert consumer.stats.redelivered >= 1
    finally:
        consumer.stop()

    async def pending() -> int:
        info = await link.js.consumer_info(READINGS_STREAM, writers_consumer(partition))
        return int(info.num_ack_pending) + int(info.num_pending)
    wait_until(lambda: link.call(pending, 5) == 0, 5, "every message to be acknowledged")


def test_two_consumers_never_get_the_same_message(link: NatsLink) -> None:
    ReadingsPublisher(link).ensure_ready()
    got: queue.Queue[FetchedBatch] = queue.Queue()
    consumers = [ReadingsConsumer(link, got.put, batch_size=20, linger=0.01,
                                  max_messages=5, partition=partition_of("a")).start()
                 for _ in range(2)]
    try:
        publisher = ReadingsPublisher(link)
        for k in range(40):
            publisher.write(batch(8, (*SAME_PARTITION, "a"), start=k * 100))
        seen: list[int] = []
        while len(seen) < 320:
            fetched = got.get(timeout=10)
            seen.extend(r.time_ns for r in fetched.readings)
            fetched.ack()
        assert len(seen) == len(set(seen)) == 320
    finally:
        for consumer in consumers:
            consumer.stop()


def test_the_live_feed_pushes_every_reading_once(link: NatsLink) -> None:
    publisher = ReadingsPublisher(link)
    publisher.ensure_ready()
    received: list[Reading] = []
    feed = LiveFeed(link, received.extend).start()

    async def subscribed() -> None:
        await link.nc.flush()
    wait_until(lambda: feed._sub is not None, 5, "the subscription")
    link.call(subscribed, 5)
    readings = batch(20)
    publisher.write(readings)
    publisher.write(readings[:10])  # a repeat after a retry: dropped
    wait_until(lambda: len(received) >= 20, 5, "the live readings")
    link.call(subscribed, 5)
    assert sorted(received, key=lambda r: r.time_ns) == readings
    feed.stop()


def test_stream_setup_is_idempotent_across_instances(link: NatsLink) -> None:
    async def twice() -> int:
        first = await ensure_readings_stream(link.js)
        second = await ensure_readings_stream(link.js)
        assert first.config.num_replicas == second.config.num_replicas == 1
        return int(second.config.num_replicas or 0)
    assert link.call(twice, 10) == 1


def test_three_nodes_give_three_replicas(nats_cluster: NatsCluster) -> None:
    link = NatsLink(nats_cluster.urls, "test").start()
    try:
        assert link.wait_connected(10)

        async def replicas() -> int:
            info = await ensure_readings_stream(link.js)
            return int(info.config.num_replicas or 0)
        assert link.call(replicas, 15) == 3
    finally:
        link.stop()
