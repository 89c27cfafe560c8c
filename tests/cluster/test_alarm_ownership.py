"""AlarmOwnership on a real JetStream server: a stream's owner applies limit changes from
the shared registry on the reader-control worker, in order with the stream's adoption."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.nats import NatsCluster
from tests.support.wait import wait_until
from tps.actors.alarms import AlarmParts
from tps.alarms.limits import parse_limits
from tps.cluster.alarms import AlarmOwnership
from tps.cluster.control import SupervisorReaderControl
from tps.cluster.node import ClusterNode
from tps.config.settings import FeedConfig, Settings

WARM = parse_limits({"yellowHigh": 30, "redHigh": 40})
HOT = parse_limits({"yellowHigh": 50, "redHigh": 60, "deadband": 1})


@pytest.fixture
def owner(nats_server: NatsCluster, tmp_path: Path
          ) -> Iterator[tuple[ClusterNode, AlarmParts, AlarmOwnership, SupervisorReaderControl]]:
    control = SupervisorReaderControl()  # no supervisor bound: no reader, alarms only
    node = ClusterNode(Settings(nats_url=tuple(nats_server.urls), role="ingest",
                                instance="ing-1", data_dir=tmp_path,
                                feed_allow=("127.0.0.1",)), control=control)
    assert node.alarm_publisher is not None
    parts = AlarmParts.start_cluster(node.alarm_publisher)
    ownership = node.attach_keeper(parts.keeper)
    node.start()
    assert node.coordinator.wait_ready(10)
    yield node, parts, ownership, control
    parts.stop()
    control.close()
    node.close()


def test_the_owner_s_keeper_follows_limit_changes_made_anywhere(
        owner: tuple[ClusterNode, AlarmParts, AlarmOwnership, SupervisorReaderControl]
        ) -> None:
    node, parts, ownership, control = owner
    node.add_stream(FeedConfig("s1", "ws://127.0.0.1:9/graphql")).result(5)
    node.set_limits("s1", WARM).result(5)
    wait_until(lambda: node.limits_of("s1") == WARM, 2, "the registry view to show them")
    control.run(lambda: ownership.adopt("s1"))  # as the coordinator's start does
    wait_until(lambda: ownership.owns("s1"), 15, "the stream to be adopted")
    checker = parts.table.get("s1")
    assert checker is not None and checker.limits == WARM

    node.set_limits("s1", HOT).result(5)  # (on any instance: the shared registry)
    wait_until(lambda: (c := parts.table.get("s1")) is not None and c.limits == HOT, 5,
               "the owner's keeper to evaluate the new limits")

    node.set_limits("s1", None).result(5)
    wait_until(lambda: parts.table.get("s1") is None, 5, "the limits to be cleared")
    assert parts.keeper.sync().get(timeout=5)
    assert parts.board.view.limits.get("s1") is None
