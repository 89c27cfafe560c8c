"""Counters shared between an actor and its observers.

Actors update these from their own thread; the API, /health and /metrics read them
from any thread without messaging the actor, so a busy actor never delays a status
request. Single int/float attribute writes are atomic under the GIL; the dicts are only
ever mutated by the owning actor.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class StreamState(enum.StrEnum):
    """Lifecycle of a stream reader."""

    CONNECTING = "connecting"
    SUBSCRIBED = "subscribed"
    BACKOFF = "backoff"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass
class StreamStats:
    """Live state and counters of one stream (owned by its StreamReader)."""

    name: str
    url: str
    protocol: str
    query: str
    state: StreamState = StreamState.CONNECTING
    negotiated_protocol: str | None = None
    received: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    last_value: float | None = None
    last_time_ns: int | None = None
    reconnects: int = 0
    restarts: int = 0
    last_error: str | None = None

    def reject(self, reason: str) -> None:
        """Count one rejected frame under ``reason``."""
        self.rejected += 1
        self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + 1


@dataclass
class WriterStats:
    """Counters of the batching writer and its spool."""

    buffered: int = 0
    oldest_unwritten_ns: int | None = None
    points_written: int = 0
    batches_written: int = 0
    write_failures: int = 0
    write_retries: int = 0
    dropped: int = 0
    store_reachable: bool = True
    last_error: str | None = None
    spool_enabled: bool = False
    spool_bytes: int = 0
    spool_segments: int = 0
    spool_replayed: int = 0
    spool_truncated: int = 0
    spool_dropped: int = 0
    spool_errors: int = 0


@dataclass
class SupervisorStats:
    """Counters of the supervisor."""

    restarts: dict[str, int] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
