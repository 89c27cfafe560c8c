"""Shared fixtures: a real InfluxDB per test session and a fresh database per test."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import pytest

from tests.support.influxdb import InfluxServer, from_environment

_db_names = itertools.count()


@pytest.fixture(scope="session")
def influx() -> Iterator[InfluxServer]:
    """A running InfluxDB 1.x (fails with install instructions when there is none)."""
    server = from_environment()
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.close()


@pytest.fixture
def influx_db(influx: InfluxServer) -> Iterator[str]:
    """A database name unique to this test; dropped afterwards."""
    name = f"tps_test_{next(_db_names)}"
    yield name
    with contextlib.suppress(Exception):  # the test may have stopped the server
        influx.drop_database(name)
