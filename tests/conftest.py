"""Shared fixtures: a real InfluxDB per test session and a fresh database per test."""

from __future__ import annotations

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
    try:
        influx.drop_database(name)
    except Exception:  # noqa: BLE001 - the server may be stopped by the test itself
        pass
