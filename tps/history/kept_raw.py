"""Raw readings of final spans read from the store, kept in memory: the raw edges an
``api`` process (no hot tier) would otherwise ask the store for with every question.

Not an answer cache: every answer is still computed for its own window, exactly, by
bisecting kept arrays the way the hot tier (:mod:`tps.history.hot`) does. What is kept
is raw readings, and only of spans that can no longer change - the same rule as
:mod:`tps.history.stored`'s rollup chunks: the writer folds and stores every reading
up to a coverage range's ``until`` before it widens the range, and readings of a
stream only arrive newer than that. So a *block* (:data:`BLOCK_NS` of one stream,
epoch-aligned) lying wholly inside the stream's coverage holds every reading it will
ever hold. Two margins keep that true where the writer's order is not the whole story:

- the coverage judged is one read at least :data:`~tps.history.answers.SETTLE_S`
  before (:meth:`~tps.history.answers.CoverageBoard.settled`): InfluxDB applies the
  points of one ``/write`` to their shards in parallel, so for a moment a coverage
  mark may be visible before the readings it was written with;
- a block must end :data:`~tps.history.planner.LATE_NS` before the coverage does: in cluster mode a
  redelivered message can bring readings older than the newest stored one (about
  ``WRITER_ACK_WAIT`` late, :mod:`tps.cluster.rollups`).

A raw piece of the planner (:class:`~tps.history.planner.Raw`) is answered from kept
blocks when every block it touches is final; a missing final block is read together
with the other missing final blocks of its *fetch span* (:data:`FETCH_NS`), one
``store.readings_arrays`` statement per span, so random windows over 30 days find
their edges kept after about 720 reads. Pieces touching a block that is not final
(the newest minutes, a gap in coverage) go to the store as before, and so do all
streams together (``stream=None``) and pieces longer than :data:`MAX_PIECE_BLOCKS`.

Bounded by bytes (``TPS_KEPT_RAW_MAX_BYTES``: 16 bytes a reading plus
:data:`BLOCK_OVERHEAD` a block), least recently used first out. Keys are (stream,
block start) of blocks inside a stream's stored coverage, never client text.

Who reads missing blocks: in a server, one thread of its own (with its own store
connection), to which the query actors hand their misses without waiting - their
pieces go to the store as without blocks - so no question pays for reading an hour of
raw readings while the blocks warm up (a process started under random-window load
would otherwise answer far slower than without blocks for its first pass). Without a
store factory (tests, tools) the asking thread reads them itself.

Shared by the query actors and the fetcher (and the IO loop never): one lock guards the
block table and the byte count; the store is read outside it. Blocks are never changed
once built, so they are read outside the lock. On SQLite a raw edge is an indexed range
read of microseconds, so blocks buy little there; they are kept all the same, so both
stores take the same path.
"""

from __future__ import annotations

import logging
import threading
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from tps.history.buckets import (
    HOUR,
    MINUTE,
    Aggregate,
    floor_to,
    window_aggregate,
    window_grouped,
)
from tps.history.planner import Coverage, Piece, Raw, is_final
from tps.store.base import Store, StoreFactory

logger = logging.getLogger(__name__)

BLOCK_NS = 10 * MINUTE
"""Span of one kept block (1,200 readings of a 2 Hz stream, 19 KB)."""
FETCH_NS = HOUR
"""Span whose missing final blocks are read with a missing one (one statement)."""
MAX_PIECE_BLOCKS = 36
"""Longest raw piece answered from blocks (6 hours); longer ones go to the store."""
MAX_WANTED = 1024
"""Missing blocks waiting for the fetcher thread at most (the oldest wishes go first)."""
FETCH_RETRY_S = 1.0
"""Seconds the fetcher waits after a failed read before the next."""
READING_BYTES = 16
BLOCK_OVERHEAD = 256
"""Bytes counted per block beyond its readings (the object, its arrays, the key)."""
DEFAULT_MAX_BYTES = 96 << 20


class RawBlock:
    """One stream's readings in ``[start, start + BLOCK_NS)``: every one the store will
    ever hold there. Immutable once built."""

    __slots__ = ("start", "times", "values")

    def __init__(self, start: int, times: array[int], values: array[float]) -> None:
        self.start = start
        self.times = times
        self.values = values

    @property
    def nbytes(self) -> int:
        """What the block counts against the byte budget."""
        return len(self.times) * READING_BYTES + BLOCK_OVERHEAD

    def aggregate(self, lo: int, hi: int) -> Aggregate | None:
        """The readings with ``lo <= t <= hi``."""
        return window_aggregate(self.times, self.values, lo, hi)

    def grouped(self, lo: int, hi: int, interval: int) -> list[tuple[int, Aggregate]]:
        """The readings with ``lo <= t <= hi`` per epoch-aligned ``interval`` bucket."""
        return window_grouped(self.times, self.values, lo, hi, interval)


@dataclass(frozen=True, slots=True)
class HeldRaw:
    """The readings of ``block`` with ``lo <= t <= hi`` (part of one raw piece)."""

    block: RawBlock
    lo: int
    hi: int


class KeptRaw:
    """The kept blocks (see the module docstring). ``max_bytes`` 0: keep nothing."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES,
                 store_factory: StoreFactory | None = None) -> None:
        if max_bytes < 0:
            raise ValueError("the byte budget of kept raw readings must not be negative")
        self.max_bytes = max_bytes
        self._store_factory = store_factory
        """With it, missing blocks are read by a thread of their own (see
        :meth:`_blocks_for`); without it, by the asking thread."""
        self._wanted: OrderedDict[tuple[str, int], Coverage] = OrderedDict()
        """Missing final blocks for the fetcher thread, newest wish last (bounded)."""
        self._wake = threading.Condition(threading.Lock())
        self._fetcher: threading.Thread | None = None
        self._in_flight = 0
        """1 while the fetcher reads a wish it took (under ``_wake``)."""
        self._closed = False
        self._lock = threading.Lock()
        self._blocks: OrderedDict[tuple[str, int], RawBlock] = OrderedDict()
        self._bytes = 0
        self.fetches = 0
        """Store reads of missing blocks (for tests and the benchmark)."""
        self.evicted = 0
        """Blocks dropped for the byte budget."""

    def __len__(self) -> int:
        with self._lock:
            return len(self._blocks)

    @property
    def nbytes(self) -> int:
        """Bytes held (as counted against ``max_bytes``)."""
        with self._lock:
            return self._bytes

    def held(self, stream: str) -> list[int]:
        """Starts of the blocks kept for ``stream``, ascending (tests, diagnosis)."""
        with self._lock:
            return sorted(start for name, start in self._blocks if name == stream)

    def status(self) -> dict[str, int]:
        """Figures for ``/health`` (``history.kept_raw``)."""
        with self._lock:
            return {"blocks": len(self._blocks), "bytes": self._bytes,
                    "max_bytes": self.max_bytes, "fetches": self.fetches,
                    "evicted": self.evicted,
                    "wanted": len(self._wanted) + self._in_flight}

    def clear(self) -> None:
        """Forget every block (in tests)."""
        with self._lock:
            self._blocks.clear()
            self._bytes = 0

    def take(self, store: Store, stream: str | None, pieces: Sequence[Piece],
             final: Coverage) -> tuple[list[HeldRaw], list[Piece]]:
        """Split pieces into parts answered by kept blocks (reading missing final blocks
        from the store first) and the pieces the store must still answer.

        ``final`` is the stream's settled coverage. Blocking (a query actor)."""
        if stream is None or not self.max_bytes:
            return [], list(pieces)
        wanted: list[tuple[Raw, list[tuple[int, int, int]]]] = []  # (block start, lo, hi)
        rest: list[Piece] = []
        for piece in pieces:
            if not isinstance(piece, Raw):
                rest.append(piece)
                continue
            first, last = floor_to(piece.lo, BLOCK_NS), floor_to(piece.hi, BLOCK_NS)
            if (last - first) // BLOCK_NS >= MAX_PIECE_BLOCKS or not is_final(
                    final, first, last + BLOCK_NS):
                rest.append(piece)
                continue
            wanted.append((piece, [(start, max(piece.lo, start),
                                    min(piece.hi, start + BLOCK_NS - 1))
                                   for start in range(first, last + 1, BLOCK_NS)]))
        if not wanted:
            return [], rest
        blocks = self._blocks_for(store, stream,
                                  sorted({s for _, parts in wanted for s, _, _ in parts}),
                                  final)
        held: list[HeldRaw] = []
        for piece, parts in wanted:
            if all(start in blocks for start, _, _ in parts):
                held.extend(HeldRaw(blocks[start], lo, hi) for start, lo, hi in parts)
            else:  # a missing block another actor's fetch will bring: the store answers
                rest.append(piece)
        return held, rest

    def _blocks_for(self, store: Store, stream: str, starts: list[int],
                    final: Coverage) -> dict[int, RawBlock]:
        found: dict[int, RawBlock] = {}
        missing: list[int] = []
        with self._lock:
            for start in starts:
                held = self._blocks.get((stream, start))
                if held is None:
                    missing.append(start)
                else:
                    self._blocks.move_to_end((stream, start))
                    found[start] = held
            if not missing:
                return found
        if self._store_factory is not None:
            self._want(stream, missing, final)
            return found
        return self._fetch(store, stream, found, missing, final)

    def _want(self, stream: str, missing: list[int], final: Coverage) -> None:
        """Hand missing blocks to the fetcher thread (started on first use). The asking
        actor does not wait: its pieces go to the store, as without blocks, so no
        question pays for reading an hour of raw readings while the blocks warm up."""
        with self._wake:
            if self._closed:
                return
            for start in missing:
                self._wanted[(stream, start)] = final
                self._wanted.move_to_end((stream, start))
            while len(self._wanted) > MAX_WANTED:
                self._wanted.popitem(last=False)
            if self._fetcher is None:
                self._fetcher = threading.Thread(target=self._fetch_forever, daemon=True,
                                                 name="tps-kept-raw-fetcher")
                self._fetcher.start()
            self._wake.notify()

    def _fetch_forever(self) -> None:
        assert self._store_factory is not None
        store: Store | None = None
        try:
            while True:
                with self._wake:
                    while not self._wanted and not self._closed:
                        self._wake.wait()
                    if self._closed:
                        return
                    (stream, start), final = self._wanted.popitem(last=True)
                    self._in_flight = 1
                try:
                    if store is None:
                        store = self._store_factory()
                    with self._lock:
                        if (stream, start) in self._blocks:
                            continue
                    self._fetch(store, stream, {}, [start], final)
                except Exception as exc:  # noqa: BLE001 - a wish lost; the store answers
                    logger.warning("Reading kept raw blocks of %s failed: %s", stream, exc)
                    if store is not None:
                        store.close()
                        store = None
                    with self._wake:  # do not spin on a store that is down
                        self._wake.wait(FETCH_RETRY_S)
                finally:
                    with self._wake:
                        self._in_flight = 0
        finally:
            if store is not None:
                store.close()

    def close(self) -> None:
        """Stop the fetcher thread (idempotent)."""
        with self._wake:
            self._closed = True
            self._wanted.clear()
            self._wake.notify_all()
            fetcher = self._fetcher
        if fetcher is not None:
            fetcher.join(5)

    def _fetch(self, store: Store, stream: str, found: dict[int, RawBlock],
               missing: list[int], final: Coverage) -> dict[int, RawBlock]:
        with self._lock:
            # Another actor's fetch may have brought some since they were found missing.
            for start in missing:
                held = self._blocks.get((stream, start))
                if held is not None:
                    found[start] = held
            missing = [start for start in missing if start not in found]
            # Per fetch span: from its first to its last missing final block.
            spans: dict[int, list[int]] = {}
            for start in missing:
                spans.setdefault(floor_to(start, FETCH_NS), [])
            for span in spans:
                spans[span] = [other for other in range(span, span + FETCH_NS, BLOCK_NS)
                               if (stream, other) not in self._blocks
                               and is_final(final, other, other + BLOCK_NS)]
        fetched: dict[int, RawBlock] = {}
        for block_starts in spans.values():
            if not block_starts:
                continue
            lo, hi = block_starts[0], block_starts[-1] + BLOCK_NS
            times, values = store.readings_arrays(lo, hi - 1, [stream]).get(
                stream, (array("q"), array("d")))
            for start in block_starts:  # not the kept or unfinal ones between them
                i = bisect_left(times, start)
                j = bisect_left(times, start + BLOCK_NS, i)
                fetched[start] = RawBlock(start, times[i:j], values[i:j])
        with self._lock:
            self.fetches += sum(1 for block_starts in spans.values() if block_starts)
            for start, block in fetched.items():
                earlier = self._blocks.pop((stream, start), None)
                if earlier is not None:
                    self._bytes -= earlier.nbytes
                self._blocks[(stream, start)] = block
                self._bytes += block.nbytes
            for start in missing:  # the blocks asked for are the most recently used
                self._blocks.move_to_end((stream, start))
            while self._bytes > self.max_bytes and self._blocks:
                _, dropped = self._blocks.popitem(last=False)
                self._bytes -= dropped.nbytes
                self.evicted += 1
        found.update(fetched)
        return found
