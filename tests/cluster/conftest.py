"""NATS fixtures: a JetStream server per test module, a three-node cluster per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.nats import NatsCluster


def _started(size: int) -> NatsCluster:
    try:
        return NatsCluster(size).start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def nats_server() -> Iterator[NatsCluster]:
    """A single JetStream server of this test's own (fails with the install command)."""
    server = _started(1)
    yield server
    server.close()


@pytest.fixture
def nats_cluster() -> Iterator[NatsCluster]:
    """A three-node JetStream cluster of this test's own, which the test may break."""
    cluster = _started(3)
    yield cluster
    cluster.close()
