"""Shared fixtures: a real InfluxDB per test session and a fresh database per test."""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.influxdb import InfluxServer, from_environment
from tps.store import InfluxStore, SqliteStore, Store

_db_names = itertools.count()
_store_names = itertools.count()


def _started(server: InfluxServer) -> InfluxServer:
    try:
        return server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def influx() -> Iterator[InfluxServer]:
    """A running InfluxDB 1.x (fails with install instructions when there is none)."""
    server = _started(from_environment())
    yield server
    server.close()


@pytest.fixture
def private_influx() -> Iterator[InfluxServer]:
    """An InfluxDB of this test's own, which the test may stop and restart."""
    server = _started(InfluxServer())
    yield server
    server.close()


@pytest.fixture
def influx_db(influx: InfluxServer) -> Iterator[str]:
    """A database name unique to this test; dropped afterwards."""
    name = f"tps_test_{next(_db_names)}"
    yield name
    with contextlib.suppress(Exception):  # the test may have stopped the server
        influx.drop_database(name)


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """Undo what a test's in-process ``tps`` command did to the root logger.

    ``configure_logging`` installs a handler on the stream that was ``sys.stderr`` then:
    within a test that is pytest's capture, closed when the test ends, and every later
    record logged through it printed "--- Logging error ---" into other tests' output.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(params=["influx", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, ready store of each kind (a new InfluxDB database, dropped after)."""
    opened: Store
    name = f"tps_store_{next(_store_names)}"
    if request.param == "influx":
        influx: InfluxServer = request.getfixturevalue("influx")
        opened = InfluxStore(influx.url, name)
    else:
        opened = SqliteStore(tmp_path / "tps.sqlite3")
    opened.ensure_ready()
    yield opened
    opened.close()
    if request.param == "influx":
        with contextlib.suppress(Exception):
            influx.drop_database(name)
