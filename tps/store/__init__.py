"""Storage of readings: the :class:`Store` interface and its two implementations."""

from __future__ import annotations

import logging

from tps.config.settings import Settings
from tps.store.base import Store, StoreFactory
from tps.store.influx import InfluxStore
from tps.store.sqlite import SqliteStore

logger = logging.getLogger(__name__)

__all__ = ["InfluxStore", "SqliteStore", "Store", "StoreFactory", "open_store", "sqlite_path"]


def sqlite_path(settings: Settings) -> str:
    """Where the embedded store lives: ``<TPS_DATA_DIR>/tps.sqlite3``."""
    return str(settings.data_dir / "tps.sqlite3")


def open_store(settings: Settings) -> Store:
    """A new store connection: InfluxDB when ``TPS_INFLUX_URL`` is set, else SQLite.

    Opening is cheap and does no I/O; call ``ensure_ready()`` before the first use
    that must not fail for a missing database or table.
    """
    if settings.influx_url:
        return InfluxStore(
            settings.influx_url,
            settings.influx_db,
            token=settings.influx_token,
            username=settings.influx_username,
            password=settings.influx_password,
            timeout=settings.influx_timeout,
        )
    return SqliteStore(sqlite_path(settings))
