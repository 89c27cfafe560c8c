"""What any thread may read about the running pipeline without asking an actor.

The supervisor registers every stream's stats here and, after each change it makes to
its children, publishes an immutable :class:`SupervisionView`. ``/health``, ``/ready``
and ``/metrics`` read the board from the HTTP thread: a supervisor busy with a slow
control call can never delay a health check, because nothing here waits on a mailbox.

Ownership: the stats objects are written by their owners (readers, the writer, the
supervisor) and only read here; the board's own stream map is written by the
supervisor under ``_lock``; the view is replaced whole (one attribute assignment), never
changed in place.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import pykka

from tps.actors.stats import StreamStats, SupervisorStats, WriterStats

WRITER = "writer"
READER_PREFIX = "reader:"
QUERY_PREFIX = "query:"


class Liveness(Protocol):
    """Anything that can say, from any thread, whether it runs."""

    def is_alive(self) -> bool:
        """True while it runs."""


@dataclass(frozen=True, slots=True)
class ReaderView:
    """One stream as the supervisor last saw it."""

    running: bool
    """The operator wants it running (it may be restarting or failed meanwhile)."""
    reader: pykka.ActorRef[Any] | None
    """The reader actor serving it, or None while stopped, stopping or restarting."""


@dataclass(frozen=True, slots=True)
class SupervisionView:
    """The supervisor's children as last published (immutable; replaced on each change)."""

    role: str
    running: bool
    """False once the supervisor has shut its children down."""
    supervisor: pykka.ActorRef[Any] | None
    readers: Mapping[str, ReaderView] = field(default_factory=dict)
    writer: Liveness | None = None
    has_queries: bool = False
    failed_queries: frozenset[int] = frozenset()


class StatsBoard:
    """Every stats object and the supervisor's published view, readable from any thread.

    The supervisor creates the stream stats and registers them here; readers update
    them; the HTTP thread reads them without messaging any actor, so a busy actor
    never delays a scrape or a health check.
    """

    def __init__(
        self, writer: WriterStats | None = None, supervisor: SupervisorStats | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._streams: dict[str, StreamStats] = {}
        self._writer = writer
        self._supervisor = supervisor or SupervisorStats()
        self._view: SupervisionView | None = None

    def streams(self) -> list[StreamStats]:
        """Stats of every registered stream, in registration order."""
        with self._lock:
            return list(self._streams.values())

    def writer(self) -> WriterStats | None:
        """The writer's stats (None in a process without a writer)."""
        return self._writer

    def supervisor(self) -> SupervisorStats:
        """The supervisor's restart and failure counters (written by the supervisor only)."""
        return self._supervisor

    def view(self) -> SupervisionView | None:
        """What the supervisor last published (None before it started)."""
        return self._view

    def add_stream(self, stats: StreamStats) -> None:
        """Register a stream's stats (supervisor only)."""
        with self._lock:
            self._streams[stats.name] = stats

    def drop_stream(self, name: str) -> None:
        """Forget a removed stream's stats (supervisor only)."""
        with self._lock:
            self._streams.pop(name, None)

    def publish(self, view: SupervisionView) -> None:
        """Replace the supervision view (supervisor only)."""
        self._view = view


def supervisor_running(view: SupervisionView | None) -> bool:
    """True while the supervisor runs and has not shut its children down."""
    return (
        view is not None
        and view.running
        and view.supervisor is not None
        and view.supervisor.is_alive()
    )


def health_summary(board: StatsBoard) -> dict[str, Any]:
    """Which children are alive, failed or restarting, and every stream's state.

    Built from the board alone (any thread): the ``supervisor`` part of ``/health``.
    """
    view = board.view()
    if view is None:
        return {"alive": False, "error": "supervisor not started"}
    counters = board.supervisor()
    failed = set(counters.failed)
    restarts = dict(counters.restarts)
    actors: dict[str, dict[str, Any]] = {}
    if view.writer is not None:
        actors[WRITER] = {
            "alive": view.writer.is_alive(),
            "failed": WRITER in failed,
            "restarts": restarts.get(WRITER, 0),
        }
    for name, reader in view.readers.items():
        key = READER_PREFIX + name
        actors[key] = {
            "alive": reader.reader is not None and reader.reader.is_alive(),
            "running": reader.running,
            "failed": key in failed,
            "restarts": restarts.get(key, 0),
        }
    if view.has_queries:
        actors["queries"] = {
            "alive": not view.failed_queries,
            "failed": sorted(f"{QUERY_PREFIX}{i}" for i in view.failed_queries),
            "restarts": sum(n for k, n in restarts.items() if k.startswith(QUERY_PREFIX)),
        }
    return {
        "alive": supervisor_running(view),
        "role": view.role,
        "actors": actors,
        "streams": {stats.name: str(stats.state) for stats in board.streams()},
        "failed": sorted(failed),
    }
