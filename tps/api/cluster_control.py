"""The control plane in cluster mode: the shared registry, on any instance.

REST and GraphQL use :class:`ClusterControlPlane` exactly as they use the local
:class:`~tps.api.control.ControlPlane`. Changes go to the cluster's registry bucket
(``tps.cluster.node.ClusterNode``), whose future is awaited on the IO loop without
blocking it; the instance that owns the stream acts on the change within milliseconds
(its registry watch). A stop or removal answers once no instance holds the stream's
lease any more (bounded by ``SETTLE_TIMEOUT``), so "stopped" means stopped.

A stream's figures: from this instance's own reader when it reads the stream; for a
stream read elsewhere the state is ``remote`` and ``owner`` names the instance (whose
``/api/streams`` has its counters); ``unassigned`` while no live instance holds it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence

from tps.actors.board import StatsBoard
from tps.actors.stats import StreamState, StreamStats
from tps.api.control import SETTLE_TIMEOUT
from tps.cluster.node import ClusterNode
from tps.cluster.registry import RegistryEntry
from tps.config.settings import FeedConfig
from tps.errors import UnknownStream

logger = logging.getLogger(__name__)

_SETTLE_STEP = 0.05


class ClusterControlPlane:
    """Stream control through the cluster's shared registry (see the module docstring)."""

    def __init__(self, node: ClusterNode, board: StatsBoard | None,
                 settle_timeout: float = SETTLE_TIMEOUT) -> None:
        self._node = node
        self._board = board
        self._settle_timeout = settle_timeout

    async def list_streams(self) -> list[StreamStats]:
        """Every registered stream, by name."""
        local = {s.name: s for s in self._board.streams()} if self._board is not None else {}
        owners = self._node.snapshot().owners
        return [self._stats(entry, local.get(name), owners.get(name))
                for name, entry in sorted(self._node.streams().items())]

    async def get_stream(self, name: str) -> StreamStats:
        """One stream (UnknownStream if the registry has none of that name)."""
        for stats in await self.list_streams():
            if stats.name == name:
                return stats
        raise UnknownStream(name)

    async def add_stream(self, feed: FeedConfig, started: bool = True) -> StreamStats:
        """Register ``feed`` cluster-wide; an ingest instance picks it up at once."""
        entry = await asyncio.wrap_future(self._node.add_stream(feed, started))
        return self._stats(entry, None, None)

    async def remove_stream(self, name: str) -> StreamStats:
        """Remove the stream cluster-wide; answers once nobody reads it."""
        before = await self.get_stream(name)
        await asyncio.wrap_future(self._node.remove_stream(name))
        await self._settle([name])
        before.state = StreamState.STOPPED
        before.owner = None
        return before

    async def stop_stream(self, name: str) -> StreamStats:
        """Stop the stream cluster-wide; answers once nobody reads it."""
        entry = await asyncio.wrap_future(self._node.set_running(name, False))
        await self._settle([name])
        return self._stats(entry, None, None)

    async def start_stream(self, name: str) -> StreamStats:
        """Start the stream cluster-wide (an ingest instance takes it)."""
        entry = await asyncio.wrap_future(self._node.set_running(name, True))
        return self._stats(entry, self._local(name), self._node.owner(name))

    async def set_all(self, running: bool) -> list[StreamStats]:
        """Start or stop every stream cluster-wide."""
        entries = await asyncio.wrap_future(self._node.set_all(running))
        if not running:
            await self._settle([entry.name for entry in entries])
        return await self.list_streams()

    # --- helpers ------------------------------------------------------------------------

    def _local(self, name: str) -> StreamStats | None:
        if self._board is None:
            return None
        return next((s for s in self._board.streams() if s.name == name), None)

    async def _settle(self, names: Sequence[str]) -> None:
        """Wait (on the loop, without blocking it) until no instance reads ``names``."""
        deadline = time.monotonic() + self._settle_timeout
        while time.monotonic() < deadline:
            owners = self._node.snapshot().owners
            if not any(owners.get(name) for name in names):
                return
            await asyncio.sleep(_SETTLE_STEP)
        logger.warning("Answering a control call on %s before it took effect: its owner did "
                       "not let go within %.0f s", ", ".join(names), self._settle_timeout)

    def _stats(self, entry: RegistryEntry, local: StreamStats | None,
               owner: str | None) -> StreamStats:
        feed = entry.feed
        assert feed is not None
        if local is not None and owner == self._node.instance and entry.running:
            return dataclasses.replace(local, owner=owner)
        if not entry.running:
            state = StreamState.STOPPED
        elif owner is None:
            state = StreamState.UNASSIGNED
        else:
            state = StreamState.REMOTE
        return StreamStats(feed.name, feed.url, feed.protocol, feed.query, state=state,
                           owner=owner if entry.running else None)
