"""What ``/health`` shows about history: rollups on or off, backfill progress, hot tier,
kept raw blocks.

A read-only object built by the service and handed to the health module; every part
it reads is thread-safe (the hot tier's lock, the backfill progress's lock).
"""

from __future__ import annotations

import logging
from typing import Any

from tps.history.backfill import BackfillProgress
from tps.history.hot import HotTier
from tps.history.kept_raw import KeptRaw
from tps.model import ns_to_datetime

logger = logging.getLogger(__name__)


class HistoryHealth:
    """``as_dict()`` is the ``history`` section of ``/health``."""

    def __init__(self, rollups: bool, hot: HotTier | None,
                 progress: BackfillProgress | None, kept_raw: KeptRaw | None = None) -> None:
        self.rollups = rollups
        self.hot = hot
        self.progress = progress
        self.kept_raw = kept_raw

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
        if self.kept_raw is not None:
            body["kept_raw"] = self.kept_raw.status()
        return body
