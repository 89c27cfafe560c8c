"""The writer's in-memory buffer: bounded, drop-oldest, sliced into batches.

Readings arrive in chunks (one stream's batch per call) and are kept as those chunks,
so appending is O(1) whatever the chunk size. Every reading gets a sequence number;
a :class:`Batch` remembers the sequence number after its last reading, so acknowledging
it stays correct even if the oldest readings were dropped while it was being written.

A chunk may carry the spool position of the record it came from. A batch reports the
position of the last chunk it wholly contains, which is what the spool checkpoint may
advance to once the store acknowledges the batch (a chunk only partly written must be
replayed after a crash, so its record is not yet behind the checkpoint).

Not thread-safe: the writer handle serializes access with its lock.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from tps.model import Reading

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Batch:
    """Readings to write next, oldest first, and what acknowledging them settles."""

    readings: list[Reading]
    end_seq: int
    position: int | None

    def __len__(self) -> int:
        return len(self.readings)


@dataclass(slots=True)
class _Chunk:
    readings: Sequence[Reading]
    position: int | None


class BatchBuffer:
    """Readings waiting to be written, at most ``limit`` of them.

    ``append`` enforces the limit by dropping the oldest readings (the memory-only
    policy, as in Telegraf); callers that have somewhere else to keep readings (the
    spool) check :attr:`room` first and do not append what does not fit.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("buffer limit must be at least 1")
        self.limit = limit
        self._chunks: deque[_Chunk] = deque()
        self._offset = 0  # readings of the first chunk already acknowledged or dropped
        self._count = 0
        self.head_seq = 0  # sequence number of the oldest buffered reading
        self.dropped = 0  # readings dropped (ever) to stay within the limit

    def __len__(self) -> int:
        return self._count

    @property
    def tail_seq(self) -> int:
        """Sequence number the next appended reading will get."""
        return self.head_seq + self._count

    @property
    def room(self) -> int:
        """How many readings fit before the limit is reached."""
        return max(0, self.limit - self._count)

    def append(
        self, readings: Sequence[Reading], position: int | None = None, *, bounded: bool = True
    ) -> int:
        """Add readings (oldest first); drop the oldest beyond the limit.

        Returns how many readings were dropped by this call. ``bounded=False`` lets the
        caller overshoot the limit by one chunk instead (used when re-reading the
        spool, where dropping would lose readings that are safe on disk).
        """
        if not readings:
            return 0
        self._chunks.append(_Chunk(readings, position))
        self._count += len(readings)
        excess = self._count - self.limit if bounded else 0
        if excess > 0:
            self._discard(excess)
            self.dropped += excess
            return excess
        return 0

    def oldest_time_ns(self) -> int | None:
        """Timestamp of the oldest buffered reading, or None when empty."""
        if not self._chunks:
            return None
        return self._chunks[0].readings[self._offset].time_ns

    def peek(self, max_count: int) -> Batch:
        """The oldest ``max_count`` readings (or fewer), without removing them."""
        out: list[Reading] = []
        position: int | None = None
        offset = self._offset
        for chunk in self._chunks:
            need = max_count - len(out)
            if need <= 0:
                break
            available = len(chunk.readings) - offset
            if available <= need:
                out.extend(chunk.readings[offset:] if offset else chunk.readings)
                if chunk.position is not None:
                    position = chunk.position
            else:
                out.extend(chunk.readings[offset : offset + need])
            offset = 0
        return Batch(out, self.head_seq + len(out), position)

    def ack(self, batch: Batch) -> int:
        """Remove the readings of a written batch; returns how many were removed.

        Readings that were dropped meanwhile are not removed twice.
        """
        settled = batch.end_seq - self.head_seq
        if settled <= 0:
            return 0
        settled = min(settled, self._count)
        self._discard(settled)
        return settled

    def _discard(self, count: int) -> None:
        """Remove ``count`` readings from the head."""
        self.head_seq += count
        self._count -= count
        while count > 0:
            chunk = self._chunks[0]
            available = len(chunk.readings) - self._offset
            if available <= count:
                self._chunks.popleft()
                self._offset = 0
                count -= available
            else:
                self._offset += count
                count = 0
