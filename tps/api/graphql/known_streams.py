"""Which stream names TPS knows, so a question about any other answers NOT_FOUND.

A stream is known when it is configured or added in this process (the supervisor's
stats board), registered in the cluster's shared registry (cluster mode: a stream added
on any instance is known on every instance at once, before its first reading, whoever
reads it), has a reading in the live hub, or has readings in the store. The first
three are memory lookups; the store's names are fetched through the query pool and kept,
and fetched again for an unknown name at most once per ``refresh_after`` seconds, so a
client asking for ``nosuch`` in a loop costs the store one cheap query per second.
Stored names are never forgotten here: a removed stream's readings are still stored.

Lives on the IO loop (the API's state, like the subscription fan-out).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from tps.api.context import ApiContext
from tps.errors import UnknownStream
from tps.store.base import Store

REFRESH_AFTER = 1.0
"""Seconds before an unknown name makes the store be asked again."""


class KnownStreams:
    """Answers "is this a stream TPS knows?" cheaply (IO loop only)."""

    def __init__(
        self,
        api: ApiContext,
        refresh_after: float = REFRESH_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._refresh_after = refresh_after
        self._clock = clock
        self._stored: frozenset[str] = frozenset()
        self._fetched_at: float | None = None
        self._inflight: asyncio.Future[frozenset[str]] | None = None
        self.store_queries = 0
        """Times the store was asked for its stream names (for tests)."""

    def in_memory(self, name: str) -> bool:
        """Configured, added, registered in the cluster, or seen live in this process
        (no store query)."""
        board = self._api.board
        if board is not None and any(stats.name == name for stats in board.streams()):
            return True
        cluster = self._api.cluster
        if cluster is not None and name in cluster.streams():
            return True
        hub = self._api.hub
        return hub is not None and hub.latest(name) is not None

    def known_now(self, name: str | None) -> bool:
        """True when ``name`` (None: every stream) is known without asking the store."""
        return name is None or name in self._stored or self.in_memory(name)

    async def require(self, name: str | None) -> None:
        """Return when ``name`` (None: every stream) is known; raise UnknownStream if not.

        Store errors propagate (an unreachable store is not a missing stream).
        """
        if name is None or self.known_now(name):
            return
        fetched = self._fetched_at
        stale = fetched is None or self._clock() - fetched >= self._refresh_after
        if stale and name in await self._refresh():
            return
        raise UnknownStream(name)

    async def _refresh(self) -> frozenset[str]:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._fetch())
        return await asyncio.shield(self._inflight)

    async def _fetch(self) -> frozenset[str]:
        queries = self._api.queries
        if queries is None:
            self._fetched_at = self._clock()
            return self._stored

        def names(store: Store) -> list[str]:
            return store.stream_names()

        self.store_queries += 1
        fetched = await queries.run(names)
        self._stored = self._stored | frozenset(fetched)
        self._fetched_at = self._clock()
        return self._stored
