"""The writer's batching policy: readings in from feed threads, batches out to the store.

:class:`Pipeline` holds the in-memory :class:`~tps.ingest.buffer.BatchBuffer` and the
disk :class:`~tps.ingest.spool.Spool` and decides what goes where. It is plain code:
the writer actor (``tps/actors/writer.py``) decides *when* to write, and the handle in
front of it calls :meth:`Pipeline.add` from any feed thread.

Memory bound (``TPS_BUFFER_LIMIT``):

* spool off: the oldest readings are dropped, counted in ``WriterStats.dropped`` and
  warned about (at most every 10 s) - Telegraf's policy;
* spool on: nothing is dropped. When memory is full, newer readings stay on disk only
  (*overflow*); as batches are written they are re-read from the spool in order
  (:meth:`Pipeline.refill`). Memory always holds a contiguous prefix of the unwritten
  spool, which is why the checkpoint can advance as batches are acknowledged. Start-up
  is the same mechanism: everything after the checkpoint is "overflow" and is read back
  before new data.

Threads and locks. Feed threads call :meth:`~Pipeline.add`; the writer actor calls
:meth:`~Pipeline.next_batch`, :meth:`~Pipeline.ack` and the flush methods; the syncer
thread calls :meth:`~Pipeline.sync_spool`. ``Pipeline.lock`` guards the buffer, the
overflow state and the pipeline's ``WriterStats`` fields. The one lock order is::

    Spool._io  ->  Pipeline.lock  ->  Spool._lock

and no thread takes ``Spool._io`` while holding ``Pipeline.lock`` (nothing here holds
``Spool._io`` while taking ``Pipeline.lock`` either). Under ``Pipeline.lock`` only
memory is touched: a spool append adds the record to the spool's memory, in the same
critical section as the buffer append, so spool and buffer always see readings in one
order. The disk work - writing what the spool holds in memory, rolling segments, the
checkpoint file, reading the overflow back - runs outside ``Pipeline.lock``, so a feed
thread never waits for the disk behind another thread; a feed thread that finds too
much waiting for the disk writes it itself after releasing the lock (back-pressure).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from tps.config.settings import Settings
from tps.ingest.buffer import Batch, BatchBuffer
from tps.ingest.spool import Spool
from tps.model import Reading
from tps.ratelimit import RateLimitedLog

logger = logging.getLogger(__name__)

REFILL_CHUNK = 50_000
"""Readings re-read from the spool per step."""
WARN_EVERY = 10.0
"""Seconds between two warnings of the same kind."""
_CLOSED = -1
"""What ``add`` noted instead of a drop count: refused, the pipeline is closed."""
_OVERFLOWED = -2
"""What ``add`` noted instead of a drop count: memory just filled, the spool takes over."""


class PipelineStats(Protocol):
    """The counters the pipeline keeps (``tps.actors.stats.WriterStats`` has them)."""

    buffered: int
    oldest_unwritten_ns: int | None
    points_written: int
    batches_written: int
    dropped: int
    spool_enabled: bool
    spool_bytes: int
    spool_segments: int
    spool_replayed: int
    spool_truncated: int
    spool_dropped: int
    spool_errors: int


class Pipeline:
    """Buffer + spool + the lock that orders them; shared by the handle and its actor."""

    def __init__(self, settings: Settings, stats: PipelineStats) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.stats = stats
        self.batch_size = settings.batch_size
        self.buffer = BatchBuffer(settings.buffer_limit)
        self.spool: Spool | None = None
        self.closed = False
        self.doorbell = False
        self.overflow = False
        self.loaded_upto = 0
        self._warnings = RateLimitedLog(WARN_EVERY)
        stats.spool_enabled = settings.spool
        if settings.spool:
            self.spool = Spool(settings.data_dir / "spool", settings.spool_max_bytes)
            self.loaded_upto = self.spool.checkpoint_position
            self.overflow = self.spool.last_position > self.loaded_upto
            stats.spool_truncated += self.spool.recovery.truncated_records
            self._update_spool_stats()

    # --- called by feed threads (through the handle) --------------------------------

    def add(self, readings: Sequence[Reading]) -> bool:
        """Take readings; True when the actor should be told (doorbell)."""
        spool = self.spool
        dropped = 0
        with self.lock:
            if self.closed:
                self.stats.dropped += len(readings)
                dropped = _CLOSED
            elif (position := spool.append(readings) if spool is not None else None) is not None:
                if not self.overflow and self.buffer.room >= len(readings):
                    self.buffer.append(readings, position)
                    self.loaded_upto = position
                elif not self.overflow:
                    self.overflow = True
                    dropped = _OVERFLOWED
            else:
                dropped = self.buffer.append(readings)
                if dropped:
                    self.stats.dropped += dropped
            self._update_buffer_stats()
            ring = not self.doorbell and dropped != _CLOSED and (
                len(self.buffer) >= self.batch_size or self.overflow)
            if ring:
                self.doorbell = True
        if dropped:
            self._warn(dropped, len(readings))
        if spool is not None and spool.needs_write:
            spool.write_pending()  # back-pressure, holding no lock of ours
        return ring

    def _warn(self, dropped: int, count: int) -> None:
        """The log line of an unusual ``add``, written after the lock: ``dropped`` is
        :data:`_CLOSED`, :data:`_OVERFLOWED` or how many readings were dropped."""
        if dropped == _CLOSED:
            self._warnings.log(logger, logging.ERROR, "closed",
                               "Writer is stopped: %d readings refused", count)
        elif dropped == _OVERFLOWED:
            logger.warning(
                "Writer memory buffer is full (TPS_BUFFER_LIMIT=%d): newer readings wait "
                "in the spool on disk and are read back as the store catches up",
                self.buffer.limit,
            )
        else:
            self._warnings.log(
                logger, logging.WARNING, "dropped",
                "Writer buffer full (TPS_BUFFER_LIMIT=%d%s): dropped the oldest %d readings "
                "(%d in total); they were never written",
                self.buffer.limit, ", spool unavailable" if self.spool else "", dropped,
                self.stats.dropped,
            )

    # --- called by the actor ----------------------------------------------------------

    def clear_doorbell(self) -> None:
        """The actor is about to look at the buffer: later arrivals ring again."""
        with self.lock:
            self.doorbell = False

    def next_batch(self, size: int) -> Batch:
        """The next batch to write, re-reading the spool first if memory has room."""
        self.refill()
        with self.lock:
            return self.buffer.peek(size)

    def refill(self) -> None:
        """Move readings that wait on disk only into memory, oldest first.

        The spool is read holding no lock of ours; readings newer than the ones read
        stay "overflow" until a later refill, so memory stays a prefix of the spool.
        """
        spool = self.spool
        if spool is None:
            return
        while True:
            with self.lock:
                if not self.overflow:
                    return
                room = self.buffer.room
                after = self.loaded_upto
            if room <= 0:
                return
            records = spool.read(after, min(room, REFILL_CHUNK))
            with self.lock:
                loaded = 0
                for readings, position in records:
                    if position > self.loaded_upto:
                        self.buffer.append(readings, position, bounded=False)
                        self.loaded_upto = position
                        loaded += len(readings)
                self.stats.spool_replayed += loaded
                if self.loaded_upto >= spool.last_position:
                    self.overflow = False
                self._update_buffer_stats()
            if not records:
                return  # the rest is not readable yet (spool failed); retried later

    def ack(self, batch: Batch, refused: int = 0) -> None:
        """The store accepted ``batch`` (except ``refused`` readings it will never take):
        advance the spool's checkpoint, then trim the buffer."""
        if self.spool is not None and batch.position is not None:
            self.spool.checkpoint(batch.position)  # disk: before taking our lock
        with self.lock:
            self.buffer.ack(batch)
            self.stats.points_written += len(batch)
            self.stats.batches_written += 1
            self.stats.dropped += refused
            self._update_buffer_stats()
            self.changed.notify_all()

    def waiting(self) -> int:
        """Readings not yet written that are in memory (a lower bound during overflow)."""
        with self.lock:
            return len(self.buffer)

    # --- flushing ---------------------------------------------------------------------

    def flush_target(self) -> tuple[int, int]:
        """(buffer sequence, spool position) that cover everything submitted so far."""
        with self.lock:
            self.doorbell = True
            spool_pos = self.spool.last_position if self.spool is not None else 0
            return self.buffer.tail_seq, spool_pos

    def wait_written(self, target: tuple[int, int], timeout: float) -> bool:
        """Block until everything up to ``target`` is acknowledged, or timeout."""
        seq, position = target
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                done = self.buffer.head_seq >= seq and (
                    self.spool is None or self.spool.checkpoint_position >= position
                )
                remaining = deadline - time.monotonic()
                if done or remaining <= 0:
                    return done
                self.changed.wait(min(remaining, 0.1))

    # --- the spool's disk work and stats ------------------------------------------------

    def sync_spool(self) -> None:
        """Group commit: write and fsync what the spool holds in memory (syncer thread)."""
        if self.spool is not None:
            self.spool.sync()
            with self.lock:
                self._update_spool_stats()

    def close(self) -> None:
        """Refuse further readings; sync and close the spool."""
        with self.lock:
            self.closed = True
        if self.spool is not None:
            self.spool.close()
            with self.lock:
                self._update_spool_stats()

    def _update_buffer_stats(self) -> None:
        self.stats.buffered = len(self.buffer)
        self.stats.oldest_unwritten_ns = self.buffer.oldest_time_ns()

    def _update_spool_stats(self) -> None:
        spool = self.spool
        if spool is None:
            return
        self.stats.spool_bytes = spool.size_bytes
        self.stats.spool_segments = spool.segments
        self.stats.spool_dropped = spool.dropped_readings
        self.stats.spool_errors = spool.errors
