"""Counters shared between an actor and its observers.

The API, /health and /metrics read these from any thread without messaging anyone, so
a busy actor never delays a status request. Reading needs no lock because of two rules:

- every field has one writer at a time (below: who), and a single attribute write is
  atomic under the GIL;
- a container field (``rejected_by_reason``, ``restarts``, ``failed``) is never changed
  in place: its writer builds a new one and swaps it in (copy-on-write), so a reader
  may iterate whatever container it got without it changing size underneath.

Who writes what:

- :class:`StreamStats`: the stream's reader while it runs - its actor thread, or the
  shared ``FeedPoller`` thread while the actor has lent it the connection (a hand-off
  through ``FeedPoller.register``/``unregister``, so there is still one writer at a
  time: the poller counts ``received``/``rejected`` and marks ``subscribed``, the actor
  does everything else). The supervisor writes ``state``, ``last_error`` and
  ``restarts`` only while no reader runs for the stream (before it starts one, after
  one stopped or crashed).
- :class:`WriterStats`: the ingest pipeline's fields (``buffered``,
  ``oldest_unwritten_ns``, ``points_written``, ``batches_written``, ``dropped``, the
  spool figures) only under the pipeline's lock (``tps/ingest/pipeline.py``); the
  store's fields (``write_failures``, ``write_retries``, ``store_reachable``,
  ``last_error``) only by the writer actor.
- :class:`SupervisorStats`: the supervisor actor, through its methods.
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
    # Cluster mode: the state of a stream this instance does not read.
    REMOTE = "remote"  # read by another instance (its ``owner``)
    UNASSIGNED = "unassigned"  # running, but no live instance holds it yet
    REFUSED = "refused"
    """The feed's destination is not allowed (``last_error`` says why): kept, not
    connected; the check is repeated now and then, since DNS answers may change."""


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
    """Replaced on every change, never mutated: iterate the one you got."""
    last_value: float | None = None
    last_time_ns: int | None = None
    reconnects: int = 0
    restarts: int = 0
    last_error: str | None = None
    owner: str | None = None
    """Cluster mode: the instance reading the stream (set by the cluster control plane)."""

    def reject(self, reason: str) -> None:
        """Count one rejected frame under ``reason``."""
        counts = dict(self.rejected_by_reason)
        counts[reason] = counts.get(reason, 0) + 1
        self.rejected_by_reason = counts
        self.rejected += 1


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
    """Counters of the supervisor (written only through the methods below, which
    replace the containers instead of changing them)."""

    restarts: dict[str, int] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)

    def count_restart(self, key: str) -> int:
        """Count one restart of child ``key``; returns its restarts so far."""
        counts = dict(self.restarts)
        counts[key] = counts.get(key, 0) + 1
        self.restarts = counts
        return counts[key]

    def mark_failed(self, key: str) -> None:
        """Record that the supervisor gave up restarting ``key``."""
        if key not in self.failed:
            self.failed = {*self.failed, key}

    def clear_failed(self, key: str) -> None:
        """``key`` runs again (or is gone)."""
        if key in self.failed:
            self.failed = self.failed - {key}
