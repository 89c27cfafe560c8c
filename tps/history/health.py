"""What ``/health`` shows about history: rollups on or off, backfill progress, hot tier.

A read-only object built by the service and handed to the health module; every part
it reads is thread-safe (the hot tier's lock, the backfill progress's lock).
"""

from __future__ import annotations

import logging
from typing import Any

from tps.history.backfill import BackfillProgress
from tps.history.hot import HotTier
from tps.model import ns_to_datetime

logger = logging.getLogger(__name__)


class HistoryHealth:
    """``as_dict()`` is the ``history`` section of ``/health``."""

    def __init__(self, rollups: bool, hot: HotTier | None,
                 progress: BackfillProgress | None) -> None:
        self.rollups = rollups
        self.hot = hot
        self.progress = progress

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        body: dict[str, Any] = {"rollups": self.rollups, "backfill": None, "hot": None}
        if self.progress is not None:
            body["backfill"] = self.progress.status().as_dict()
        if self.hot is not None:
            status = self.hot.status()
            body["hot"] = {
                "streams": status.streams, "ready": status.ready, "loading": status.loading,
                "bytes": status.bytes, "max_bytes": status.max_bytes,
                "window_s": status.window_s,
                "oldest": None if status.oldest_ns is None
                else ns_to_datetime(status.oldest_ns).isoformat(),
            }
        return body
