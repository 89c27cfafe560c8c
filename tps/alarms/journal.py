"""Alarm events on their way to the store: a small on-disk journal and its shipper.

An alarm event must survive ``kill -9`` from the moment anyone could have seen it. The
alarm actor therefore appends each event to :class:`AlarmJournal` (one JSON line per
event, written to the file before the event is published) and only then tells
subscribers. :class:`AlarmLogShipper` (one thread) moves journal events into the
store's alarm log (:mod:`tps.store.alarm_log`), retrying with backoff while the store
is away, and trims the journal once the store has them. Writes are idempotent per
(alarm id, seq), so an event shipped twice (a crash between the store's answer and the
trim) is harmless.

The journal is normally empty or nearly so; it only grows while the store is down,
bounded by how many alarm transitions happen meanwhile (a few per stream and limit
crossing). On start-up its events are shipped first and also applied on top of the
store's history when the open alarms are rebuilt.

Thread safety: one lock guards the in-memory list and the file; the actor's append and
the shipper's take/trim hold it only for memory operations and a local file write -
the store's network I/O happens outside it. Data written with ``write()`` survives the
death of the process (it is in the kernel's page cache); ``fsync`` (off by default,
like SQLite's ``synchronous=NORMAL``) extends that to a power loss.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from tps.alarms.model import AlarmEvent
from tps.errors import StoreError, StoreUnavailable
from tps.ingest.backoff import Backoff
from tps.store.alarm_log import AlarmLog

logger = logging.getLogger(__name__)

JOURNAL_FILE = "alarm-events.pending"


class AlarmJournal:
    """Events not yet acknowledged by the store, in memory and in ``path``."""

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self._fsync = fsync
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._pending: list[AlarmEvent] = []
        self._fd: int | None = None
        self.appended = 0
        self.damaged_lines = 0

    def open(self) -> list[AlarmEvent]:
        """Load what an earlier run left (skipping a torn last line); those events."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            events: list[AlarmEvent] = []
            with contextlib.suppress(FileNotFoundError):
                for line in self.path.read_bytes().splitlines():
                    if not line.strip():
                        continue
                    try:
                        events.append(AlarmEvent.from_record(json.loads(line)))
                    except (ValueError, KeyError, TypeError) as exc:
                        self.damaged_lines += 1
                        logger.warning("Alarm journal %s: skipping a damaged line (%s)",
                                       self.path, exc)
            self._pending = events
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            if self.damaged_lines:
                self._rewrite()
            if events:
                logger.info("Alarm journal %s: %d event(s) from the last run still to be "
                            "written to the store", self.path, len(events))
            return list(events)

    def append(self, events: Sequence[AlarmEvent]) -> None:
        """Make ``events`` durable (see the module docstring) and hand them to the shipper."""
        if not events:
            return
        data = b"".join(_line(event) for event in events)
        with self._lock:
            if self._fd is None:
                raise RuntimeError("AlarmJournal.open() was not called")
            os.write(self._fd, data)
            if self._fsync:
                os.fsync(self._fd)
            self._pending.extend(events)
            self.appended += len(events)
            self._ready.notify_all()

    def take(self, limit: int, timeout: float | None = None) -> list[AlarmEvent]:
        """Up to ``limit`` of the oldest pending events; waits ``timeout`` s for one."""
        with self._ready:
            if not self._pending and timeout:
                self._ready.wait(timeout)
            return self._pending[:limit]

    def trim(self, count: int) -> None:
        """The store has the oldest ``count`` events: forget them (file included)."""
        with self._lock:
            del self._pending[:count]
            self._rewrite()

    def pending(self) -> int:
        """How many events wait for the store."""
        with self._lock:
            return len(self._pending)

    def wake(self) -> None:
        """Wake a waiting :meth:`take` (used when stopping)."""
        with self._ready:
            self._ready.notify_all()

    def close(self) -> None:
        """Close the file (pending events stay in it for the next run)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _rewrite(self) -> None:
        # Caller holds the lock. Nothing pending (the usual case): truncate in place.
        # Otherwise replace the file atomically with what is still pending.
        if self._fd is None:
            return
        if not self._pending:
            os.ftruncate(self._fd, 0)
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(b"".join(_line(event) for event in self._pending))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def _line(event: AlarmEvent) -> bytes:
    return json.dumps(event.to_record(), separators=(",", ":")).encode() + b"\n"


class AlarmLogShipper:
    """One thread moving journal events into the store's alarm log (see module doc)."""

    def __init__(self, journal: AlarmJournal, open_log: Callable[[], AlarmLog], *,
                 batch: int = 500, backoff: Backoff | None = None) -> None:
        self._journal = journal
        self._open_log = open_log
        self._batch = batch
        self._backoff = backoff or Backoff(initial=0.5, cap=5.0)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alarm-log-shipper",
                                        daemon=True)
        self._log: AlarmLog | None = None
        self.shipped = 0
        self.failures = 0
        self.last_error: str | None = None

    def start(self) -> AlarmLogShipper:
        """Start the thread; returns self."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop after one last attempt to ship; True when nothing is left pending."""
        self._stopped.set()
        self._journal.wake()
        self._thread.join(timeout)
        return self._journal.pending() == 0

    def _run(self) -> None:
        while True:
            events = self._journal.take(self._batch, timeout=0.5)
            if not events:
                if self._stopped.is_set():
                    break
                continue
            delay = self._ship(events)
            if delay and self._stopped.wait(delay):
                break
        if self._log is not None:
            self._log.close()

    def _ship(self, events: list[AlarmEvent]) -> float:
        """Write one batch; the delay before the next attempt (0 after success)."""
        try:
            if self._log is None:
                self._log = self._open_log()
                self._log.ensure_ready()
            self._log.write(events)
        except (StoreUnavailable, StoreError, OSError) as exc:
            self.failures += 1
            self.last_error = str(exc)
            delay = self._backoff.next_delay()
            logger.warning("Writing %d alarm event(s) to the store failed (%s); they stay "
                           "in the journal, retrying in %.1f s", len(events), exc, delay)
            if not isinstance(exc, StoreUnavailable) and self._log is not None:
                self._log.close()
                self._log = None
            return delay
        if self._backoff.attempts:
            logger.info("Alarm events reach the store again (%d written)", len(events))
        self._backoff.reset()
        self._journal.trim(len(events))
        self.shipped += len(events)
        return 0.0
