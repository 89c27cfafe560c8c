"""NatsLink: one loop thread owns the connection; any thread gets in through one door."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.support.nats import NatsCluster
from tests.support.wait import wait_until
from tps.cluster.link import CLOSED, CONNECTED, NatsLink
from tps.errors import ClusterUnavailable


def test_connects_and_runs_coroutines_on_its_own_thread(nats_server: NatsCluster) -> None:
    link = NatsLink(nats_server.urls, "t").start()
    try:
        assert link.wait_connected(10)
        status = link.status()
        assert status.state == CONNECTED
        assert status.server == nats_server.urls[0].removeprefix("nats://")

        async def where() -> str:
            await link.nc.flush()
            return threading.current_thread().name

        assert link.call(where, 5) == "nats-link"
        assert link.submit(where).result(5) == "nats-link"
    finally:
        link.stop()
    assert link.status().state == CLOSED


def test_a_call_that_does_not_finish_in_time_raises_cluster_unavailable(
        nats_server: NatsCluster) -> None:
    link = NatsLink(nats_server.urls, "t").start()
    try:
        with pytest.raises(ClusterUnavailable):
            link.call(lambda: asyncio.sleep(5), 0.1)
    finally:
        link.stop()


def test_starts_without_nats_and_connects_when_a_server_appears() -> None:
    cluster = NatsCluster(1)
    link = NatsLink(cluster.urls, "t").start()
    try:
        wait_until(lambda: link.status().last_error is not None, 10, "a failed connect")
        assert not link.status().connected
        cluster.start()
        wait_until(lambda: link.status().connected, 15, "the link to connect")
    finally:
        link.stop()
        cluster.close()


def test_moves_to_another_node_when_its_server_is_killed(nats_cluster: NatsCluster) -> None:
    link = NatsLink(nats_cluster.urls, "t").start()
    try:
        assert link.wait_connected(10)
        first = link.status().server
        victim = next(n for n in nats_cluster.nodes if n.url.endswith(str(first)))
        nats_cluster.kill(victim)
        wait_until(lambda: link.status().disconnects == 1, 10, "the disconnect to be noticed")
        wait_until(lambda: link.status().connected, 10, "a reconnect to another node")
        assert link.status().server != first
    finally:
        link.stop()
