"""New readings for subscriptions in the ``api`` role, which has no live hub: the store
is asked every ``POLL_INTERVAL`` for what arrived since the last poll.

:class:`NewReadings` decides what is new (plain code); :class:`StorePoller` is the
loop around it, a task on the IO loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from tps.api.context import QueryRunner
from tps.api.graphql.schema import MAX_LIMIT
from tps.model import Reading
from tps.ratelimit import RateLimitedLog
from tps.store.base import Store

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.5
"""Seconds between store polls (lag stays under 1.5 s)."""

POLL_LOOKBACK_NS = 5_000_000_000
"""How far behind the newest seen reading each poll looks again: the writer flushes
streams at different moments, so a late batch may carry older timestamps."""


class NewReadings:
    """Which of the readings a poll returned were not delivered before.

    Starts at ``start_ns`` (readings at or before it are old news); remembers what it
    delivered within the lookback, so overlapping polls never deliver twice.
    """

    def __init__(self, start_ns: int) -> None:
        self._start = start_ns
        self._newest = start_ns
        self._seen: dict[tuple[str, int], int] = {}

    def after(self) -> int:
        """Where the next poll should start (the newest seen minus the lookback)."""
        return self._newest - POLL_LOOKBACK_NS

    def take(self, readings: Sequence[Reading]) -> list[list[Reading]]:
        """The new ones among ``readings``, one batch per stream, oldest first."""
        after = self.after()
        fresh: list[Reading] = []
        for reading in readings:
            key = (reading.stream, reading.time_ns)
            if key in self._seen:
                continue
            self._seen[key] = reading.time_ns
            if reading.time_ns > self._start:
                fresh.append(reading)
            self._newest = max(self._newest, reading.time_ns)
        for key, stamp in list(self._seen.items()):
            if stamp < after:
                del self._seen[key]
        by_stream: dict[str, list[Reading]] = {}
        for reading in fresh:
            by_stream.setdefault(reading.stream, []).append(reading)
        return list(by_stream.values())


class StorePoller:
    """Polls the store through the query pool and hands each new batch to ``deliver``.

    Runs as a task on the IO loop between :meth:`start` and :meth:`stop`; a failed
    poll is retried (the store may recover) and logged at most once per
    ``RateLimitedLog`` interval.
    """

    def __init__(
        self,
        queries: QueryRunner,
        deliver: Callable[[Sequence[Reading]], None],
        interval: float = POLL_INTERVAL,
    ) -> None:
        self._queries = queries
        self._deliver = deliver
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._failures = RateLimitedLog()
        self.polls = 0
        """Polls completed (for tests and metrics)."""

    def start(self) -> None:
        """Begin polling (IO loop only); idempotent."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        """Stop polling; idempotent."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        queries = self._queries
        news: NewReadings | None = None
        while True:
            try:
                if news is None:
                    current = await queries.run(lambda store: store.current(None))
                    news = NewReadings(current.time_ns if current is not None
                                       else time.time_ns())

                def fetch(store: Store, after: int = news.after()) -> list[Reading]:
                    return store.measurements(after, None, None, limit=MAX_LIMIT)

                for batch in news.take(await queries.run(fetch)):
                    self._deliver(tuple(batch))
                self.polls += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep polling: the store may recover
                suppressed = self._failures.allow("poll")
                if suppressed is not None:
                    more = f" ({suppressed} more since the last report)" if suppressed else ""
                    logger.warning("Subscription poll of the store failed (%s); retrying every "
                                   "%.1f s%s", exc, self._interval, more)
            await asyncio.sleep(self._interval)
