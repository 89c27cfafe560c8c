"""Backfill: rollups for stored raw readings that have none yet, newest first.

Deployments upgraded from the original service hold raw readings only. The backfill
computes their 1 m rollups with ``GROUP BY time(1m), stream`` (one query for every
stream per chunk, never row by row), derives the 1 h rollups from those minutes, and
writes both with a coverage mark that widens the covered range downwards - so every
finished chunk is usable at once, and the newest history (what dashboards ask for
first) is ready first.

What it may compute, per stream: from the hour of its oldest reading up to the hour of
its newest reading *at the time the backfill starts* (``floor(newest, 1 h)``). Raw
readings before that hour never change again (readings of a stream only grow in time),
so no writer can race it there; from that hour on, the writer that writes the stream
keeps its rollups itself (:mod:`tps.history.rollup`).

:class:`Backfill` is a plain object stepped one chunk at a time by the history actor
(its own store connection; never the writer's). :class:`BackfillProgress` is its
read-only face for ``/health`` and the log.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from tps.history.buckets import DAY, HOUR, MINUTE, ceil_to, floor_to
from tps.history.planner import Coverage
from tps.history.rollup import points_from_minutes
from tps.history.types import CoverageMark, CoverageRange, RollupPoint, RollupWrite
from tps.store.base import Store

logger = logging.getLogger(__name__)

_TARGET_SECONDS = 0.5  # aim for chunks whose query takes about this long
_LOG_EVERY = 5.0


@dataclass(frozen=True, slots=True)
class _Task:
    """A missing range ``[lo, hi)`` (whole hours) of one stream; its marks go to ``key``
    (the range above it, which it extends downwards)."""

    stream: str
    lo: int
    hi: int
    key: int


@dataclass(frozen=True, slots=True)
class BackfillStatus:
    """A snapshot of the backfill for /health."""

    state: str
    """``waiting``, ``running``, ``done``, ``failed`` or ``off``."""
    streams: int
    hours_total: int
    hours_done: int
    started_at: float | None
    finished_at: float | None
    last_error: str | None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready."""
        done = self.hours_done / self.hours_total if self.hours_total else 1.0
        return {"state": self.state, "streams": self.streams,
                "hours_total": self.hours_total, "hours_done": self.hours_done,
                "done": round(done, 4),
                "seconds": None if self.started_at is None else round(
                    (self.finished_at or time.time()) - self.started_at, 3),
                "last_error": self.last_error}


class BackfillProgress:
    """Progress shared between the backfill (writes) and /health (reads); one lock."""

    def __init__(self, state: str = "waiting") -> None:
        self._lock = threading.Lock()
        self._status = BackfillStatus(state, 0, 0, 0, None, None, None)

    def status(self) -> BackfillStatus:
        """The newest snapshot."""
        with self._lock:
            return self._status

    def update(self, **changes: object) -> None:
        """Replace some fields (the backfill's thread only)."""
        with self._lock:
            fields = {name: getattr(self._status, name) for name in BackfillStatus.__slots__}
            fields.update(changes)
            self._status = BackfillStatus(**fields)


def missing_tasks(oldest: dict[str, int], newest: dict[str, int],
                  coverage: dict[str, list[CoverageRange]],
                  force: tuple[int, int] | None = None) -> list[_Task]:
    """Per stream, the hours from its oldest reading's up to (not including) its newest
    reading's that no coverage range holds - or, with ``force`` (a rebuild), every such
    hour inside ``force``, covered or not."""
    tasks: list[_Task] = []
    for stream, first in oldest.items():
        last = newest.get(stream)
        if last is None:
            continue
        lo, hi = floor_to(first, HOUR), floor_to(last, HOUR)
        if force is not None:
            lo, hi = max(lo, floor_to(force[0], HOUR)), min(hi, ceil_to(force[1] + 1, HOUR))
        if lo >= hi:
            continue
        ranges = coverage.get(stream, [])
        covered = Coverage((r_lo, until + 1) for _, r_lo, until in ranges)
        gaps = [(lo, hi)] if force is not None else covered.missing(lo, hi)
        for gap_lo, gap_hi in gaps:
            gap_lo, gap_hi = floor_to(gap_lo, HOUR), ceil_to(gap_hi, HOUR)
            above = next((at for at, r_lo, _ in ranges if r_lo == gap_hi), gap_hi)
            tasks.append(_Task(stream, gap_lo, min(gap_hi, hi), above))
    return tasks


class Backfill:
    """Computes missing rollups chunk by chunk (see the module docstring)."""

    def __init__(self, store: Store, progress: BackfillProgress | None = None,
                 force: tuple[int, int] | None = None) -> None:
        self.store = store
        self.progress = progress or BackfillProgress()
        self.force = force
        self._tasks: list[_Task] | None = None
        self._done_to: dict[_Task, int] = {}
        self._span = HOUR
        self._last_log = 0.0
        self._hours_done = 0

    def prepare(self) -> None:
        """Find what is missing (three small queries)."""
        streams = self.store.stream_names()
        oldest = self.store.oldest_times(streams) if streams else {}
        newest = self.store.newest_times(streams) if streams else {}
        coverage = self.store.coverage(streams) if streams else {}
        self._tasks = missing_tasks(oldest, newest, coverage, self.force)
        self._done_to = {task: task.hi for task in self._tasks}
        total = sum((task.hi - task.lo) // HOUR for task in self._tasks)
        self.progress.update(state="running", streams=len({t.stream for t in self._tasks}),
                             hours_total=total, hours_done=0, started_at=time.time(),
                             finished_at=None, last_error=None)
        logger.info("Rollup backfill: %d stream-hours of %d stream(s) to compute%s",
                    total, len(streams), " (rebuild)" if self.force else "")

    def step(self) -> bool:
        """Compute one chunk (all streams that need it); False when nothing is left."""
        if self._tasks is None:
            self.prepare()
        assert self._tasks is not None
        open_tasks = [t for t in self._tasks if self._done_to[t] > t.lo]
        if not open_tasks:
            self._finish()
            return False
        upper = max(self._done_to[t] for t in open_tasks)
        lower = max(upper - self._span, min(t.lo for t in open_tasks))
        chunk = [(t, max(t.lo, lower), self._done_to[t]) for t in open_tasks
                 if self._done_to[t] > lower]
        started = time.monotonic()
        names = sorted({t.stream for t, _, _ in chunk})
        lo = min(c_lo for _, c_lo, _ in chunk)
        hi = max(c_hi for _, _, c_hi in chunk)
        minutes = self.store.raw_aggregates(lo, hi - 1, MINUTE, names)
        points: list[RollupPoint] = []
        marks: list[CoverageMark] = []
        for task, c_lo, c_hi in chunk:
            mine = [(s, a) for s, a in minutes.get(task.stream, []) if c_lo <= s < c_hi]
            points.extend(points_from_minutes(task.stream, mine))
            marks.append(CoverageMark(task.stream, task.key, lo=c_lo))
            self._done_to[task] = c_lo
            self._hours_done += (c_hi - c_lo) // HOUR
        self.store.write_rollups(RollupWrite(tuple(points), tuple(marks)))
        elapsed = time.monotonic() - started
        self._adapt(elapsed)
        self.progress.update(hours_done=self._hours_done)
        now = time.monotonic()
        if now - self._last_log >= _LOG_EVERY:
            self._last_log = now
            status = self.progress.status()
            logger.info("Rollup backfill: %d of %d stream-hours done; now at %s",
                        status.hours_done, status.hours_total, _iso(lower))
        return True

    def run(self) -> BackfillStatus:
        """Step until done (blocking; for the CLI and tests)."""
        try:
            while self.step():
                pass
        except Exception as exc:
            self.fail(exc)
            raise
        return self.progress.status()

    def fail(self, exc: BaseException) -> None:
        """Record a failure (the caller decides whether to retry)."""
        self.progress.update(state="failed", last_error=str(exc) or type(exc).__name__)

    def _adapt(self, elapsed: float) -> None:
        if elapsed < _TARGET_SECONDS / 2 and self._span < DAY:
            self._span = min(DAY, self._span * 2)
        elif elapsed > _TARGET_SECONDS * 2 and self._span > HOUR:
            self._span = max(HOUR, floor_to(self._span // 2, HOUR))

    def _finish(self) -> None:
        status = self.progress.status()
        if status.state != "done":
            self.progress.update(state="done", finished_at=time.time())
            status = self.progress.status()
            seconds = (status.finished_at or 0.0) - (status.started_at or 0.0)
            logger.info("Rollup backfill: done, %d stream-hours in %.1f s", status.hours_done,
                        seconds)


def _iso(time_ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time_ns // 1_000_000_000))
