"""ClusterNode: the control plane on any instance, live readings from other instances."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.nats import NatsCluster
from tests.support.wait import wait_until
from tps.cluster.node import ClusterNode
from tps.cluster.readings import ReadingsPublisher
from tps.config.settings import FeedConfig, Settings
from tps.errors import ClusterUnavailable, InvalidArgument, StreamExists, UnknownStream
from tps.live import LiveHub
from tps.model import Reading


@pytest.fixture
def api(nats_server: NatsCluster, tmp_path: Path) -> Iterator[tuple[ClusterNode, LiveHub]]:
    hub = LiveHub()
    settings = Settings(nats_url=tuple(nats_server.urls), role="api", instance="api-1",
                        data_dir=tmp_path, feed_allow=("127.0.0.1",))
    node = ClusterNode(settings, live=hub.publish)
    node.start()
    assert node.coordinator.wait_ready(10)
    yield node, hub
    node.hand_back(5)
    node.close()


def test_control_calls_on_an_api_instance_change_the_shared_registry(
        api: tuple[ClusterNode, LiveHub]) -> None:
    node, _ = api
    feed = FeedConfig("sat-9", "ws://127.0.0.1:4000/graphql")
    entry = node.add_stream(feed).result(5)
    assert entry.feed == feed and entry.running and entry.by == "api-1"
    wait_until(lambda: "sat-9" in node.streams(), 1, "the watch to show the new stream")
    with pytest.raises(StreamExists):
        node.add_stream(feed).result(5)
    assert not node.set_running("sat-9", False).result(5).running
    assert [e.running for e in node.set_all(True).result(5)] == [True]
    node.remove_stream("sat-9").result(5)
    with pytest.raises(UnknownStream):
        node.remove_stream("sat-9").result(5)
    # An address TPS_FEED_ALLOW does not name is refused at once. (A host name is not:
    # it might resolve to an allowed address, so the reader checks it at each connect.)
    with pytest.raises(InvalidArgument):
        node.add_stream(FeedConfig("x", "ws://192.0.2.7:4000/graphql"))


def test_control_calls_fail_fast_with_cluster_unavailable_without_nats(
        api: tuple[ClusterNode, LiveHub], nats_server: NatsCluster) -> None:
    node, _ = api
    nats_server.kill(0)
    wait_until(lambda: not node.link.status().connected, 10, "the link to notice")
    with pytest.raises(ClusterUnavailable):
        node.add_stream(FeedConfig("y", "ws://127.0.0.1:4000/graphql")).result(5)
    assert node.health()["nats"]["state"] == "reconnecting"
    assert not node.ready()


def test_an_api_instance_hub_receives_readings_published_by_others(
        api: tuple[ClusterNode, LiveHub]) -> None:
    node, hub = api
    wait_until(lambda: node.live is not None and node.live._sub is not None, 5, "subscribed")
    other = ClusterNode(Settings(nats_url=node.settings.nats_url, role="ingest",
                                 instance="ingest-1"))
    other.link.start()
    try:
        assert other.link.wait_connected(5)
        publisher: ReadingsPublisher = other.publisher()
        publisher.ensure_ready()
        readings = [Reading("far", 1_700_000_000_000_000_000 + i, 20.0 + i) for i in range(5)]
        publisher.write(readings)
        wait_until(lambda: hub.latest("far") == readings[-1], 5, "the reading on the api hub")
        assert hub.recent("far", 10) == readings
    finally:
        other.link.stop()


def test_health_names_the_instance_its_role_and_the_connection(
        api: tuple[ClusterNode, LiveHub]) -> None:
    node, _ = api
    wait_until(node.ready, 5, "ready")
    health = node.health()
    assert health["instance"] == "api-1" and health["role"] == "api"
    assert health["nats"]["state"] == "connected" and health["leases_held"] == []
    wait_until(lambda: "api-1" in node.health()["instances"], 5, "our own heartbeat")
