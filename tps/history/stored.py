"""Closed rollup buckets read from the store, kept in memory: what an ``api`` process
(no hot tier) would otherwise read again for every question.

Not an answer cache: answers are still computed per question, from raw edges read from
the store each time plus whole buckets. What is kept is the buckets themselves, and only
ones that can no longer change: a rollup bucket that lies wholly inside a stream's
coverage (:class:`~tps.history.planner.Coverage`) is exact and final - the writer folds
every reading up to the coverage's ``until`` (its newest folded reading) before it
widens the range, and readings of a stream only arrive newer than that
(:mod:`tps.history.rollup`). The backfill and ``tps rollup --rebuild`` write buckets from
raw readings, so a bucket rewritten there has the same value. Finality is judged by
:func:`~tps.history.planner.is_final` against a settled coverage
(:meth:`~tps.history.answers.CoverageBoard.settled`): a chunk must end a few minutes
before the coverage does, and the coverage must have been read a second ago.

Buckets are kept in *chunks*: a day of hour buckets, an hour of minute buckets, each
kept whole when every bucket of the chunk is inside one coverage range. Parts of a
piece whose chunk is not (the newest hours, a gap in coverage) are left to the store as
before. A missing chunk is read together with the other missing, covered chunks of its
*fetch span* (:data:`FETCH_NS`: a day of minute buckets, 8 days of hour buckets), one
``store.rollups`` statement per run: random windows over 30 days then find their
buckets kept after about 30 reads instead of 720. At most
:data:`MAX_CHUNKS` chunks are kept (least recently used first out: about 40 bytes a
bucket, so at most ~10 MB).

Shared by the query actors (and the IO loop never): one lock guards the chunk table;
the store is read outside it, and two actors missing the same chunk may both read it.
Chunks are never changed once built, so they are read outside the lock.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from tps.history.buckets import DAY, HOUR, MINUTE, floor_to
from tps.history.hot import TierArrays
from tps.history.planner import Buckets, Coverage, Piece, is_final
from tps.store.base import Store

logger = logging.getLogger(__name__)

CHUNK_NS = {HOUR: DAY, MINUTE: HOUR}
"""Tier width -> the span one chunk of its buckets covers."""
FETCH_NS = {HOUR: 8 * DAY, MINUTE: DAY}
"""Tier width -> the span whose missing, covered chunks are read with a missing one."""
MAX_CHUNKS = 4096
"""Chunks kept at most (a 30-day history of one stream is 30 + 720 chunks)."""


@dataclass(frozen=True, slots=True)
class HeldPart:
    """The buckets of ``chunk`` starting in ``[start, end)``."""

    chunk: TierArrays
    start: int
    end: int


class StoredRollups:
    """The kept chunks (see the module docstring)."""

    def __init__(self, max_chunks: int = MAX_CHUNKS) -> None:
        self.max_chunks = max_chunks
        self._lock = threading.Lock()
        self._chunks: OrderedDict[tuple[str, int, int], TierArrays] = OrderedDict()
        self.fetches = 0
        """Store reads of missing chunks (for tests and the benchmark)."""

    def __len__(self) -> int:
        with self._lock:
            return len(self._chunks)

    def clear(self) -> None:
        """Forget every chunk (after a rebuild, in tests)."""
        with self._lock:
            self._chunks.clear()

    def take(self, store: Store, stream: str | None, pieces: Sequence[Piece],
             coverage: Coverage) -> tuple[list[HeldPart], list[Piece]]:
        """Split the planner's pieces into parts answered by kept chunks (reading the
        missing ones from the store first) and the pieces the store must still answer.
        ``coverage`` is the stream's settled coverage: what may be kept.

        Blocking (a query actor). Only a named stream's buckets are kept."""
        if stream is None:
            return [], list(pieces)
        wanted: list[tuple[int, int, int, int]] = []  # width, chunk start, start, end
        rest: list[Piece] = []
        for piece in pieces:
            size = CHUNK_NS.get(piece.width) if isinstance(piece, Buckets) else None
            if size is None or not isinstance(piece, Buckets):
                rest.append(piece)
                continue
            chunk = floor_to(piece.start, size)
            while chunk < piece.end:
                lo, hi = max(piece.start, chunk), min(piece.end, chunk + size)
                if is_final(coverage, chunk, chunk + size):
                    wanted.append((piece.width, chunk, lo, hi))
                elif rest and isinstance(rest[-1], Buckets) and rest[-1].width == piece.width \
                        and rest[-1].end == lo:
                    rest[-1] = Buckets(piece.width, rest[-1].start, hi)
                else:
                    rest.append(Buckets(piece.width, lo, hi))
                chunk += size
        if not wanted:
            return [], rest
        if len(wanted) > self.max_chunks // 2:
            # Larger than the cache should hold for one question: the store answers.
            return [], list(pieces)
        chunks = self._chunks_for(store, stream, [(w, c) for w, c, _, _ in wanted], coverage)
        held = [HeldPart(chunks[(width, chunk)], lo, hi) for width, chunk, lo, hi in wanted]
        return held, rest

    def _chunks_for(self, store: Store, stream: str, keys: list[tuple[int, int]],
                    coverage: Coverage) -> dict[tuple[int, int], TierArrays]:
        found: dict[tuple[int, int], TierArrays] = {}
        missing: list[tuple[int, int]] = []
        with self._lock:
            for width, chunk in keys:
                held = self._chunks.get((stream, width, chunk))
                if held is None:
                    missing.append((width, chunk))
                else:
                    self._chunks.move_to_end((stream, width, chunk))
                    found[(width, chunk)] = held
            if not missing:
                return found
            # The other covered chunks of each missing chunk's fetch span, read with it.
            extra: list[tuple[int, int]] = []
            for width, chunk in {(w, floor_to(c, FETCH_NS[w])) for w, c in missing}:
                size = CHUNK_NS[width]
                for other in range(chunk, chunk + FETCH_NS[width], size):
                    if (stream, width, other) not in self._chunks \
                            and is_final(coverage, other, other + size):
                        extra.append((width, other))
            missing = sorted({*missing, *extra})
        fetched: dict[tuple[int, int], TierArrays] = {}
        runs = _runs(missing)
        for width, first, last in runs:
            size = CHUNK_NS[width]
            rows = store.rollups(width, first, last + size - 1, [stream]).get(stream, [])
            built = {chunk: TierArrays(width) for chunk in range(first, last + size, size)}
            for start, agg in rows:
                chunk_of = built.get(floor_to(start, size))
                if chunk_of is not None:
                    chunk_of.add([(start, agg)])
            for chunk, arrays in built.items():
                fetched[(width, chunk)] = arrays
        with self._lock:
            self.fetches += len(runs)
            for (width, chunk), arrays in fetched.items():
                self._chunks[(stream, width, chunk)] = arrays
            while len(self._chunks) > self.max_chunks:
                self._chunks.popitem(last=False)
        found.update(fetched)
        return found


def _runs(keys: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """(width, first chunk, last chunk) of each run of adjacent missing chunks."""
    out: list[tuple[int, int, int]] = []
    for width, chunk in sorted(set(keys)):
        if out and out[-1][0] == width and out[-1][2] + CHUNK_NS[width] == chunk:
            out[-1] = (width, out[-1][1], chunk)
        else:
            out.append((width, chunk, chunk))
    return out
