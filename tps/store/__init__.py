"""Storage of readings: the :class:`Store` interface and its two implementations."""

from __future__ import annotations

from tps.store.base import Store, StoreFactory

__all__ = ["Store", "StoreFactory"]
