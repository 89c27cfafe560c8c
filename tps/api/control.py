"""The control plane as the HTTP layer uses it: the supervisor, awaited off the IO loop.

:class:`ControlPlane` wraps the typed supervisor proxy. Each call asks the supervisor
(which answers at once) and, for changes that stop readers, then awaits the
supervisor's ``settled`` future, so an operator's "stopped" or "removed" answer means
the change has taken effect - while neither the supervisor nor the IO loop waits:
the answer is awaited as an asyncio future.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Protocol, TypeVar

import pykka

from tps.actors.stats import StreamStats
from tps.actors.supervisor import SupervisorProxy
from tps.config.settings import FeedConfig

logger = logging.getLogger(__name__)

T = TypeVar("T")

CALL_TIMEOUT = 15.0
"""Seconds the supervisor has to answer one control call."""
SETTLE_TIMEOUT = 10.0
"""Seconds a control call waits for the readers it stopped before it answers anyway."""


class StreamControl(Protocol):
    """What REST and GraphQL need to control streams: :class:`ControlPlane` (the local
    supervisor) or, in cluster mode, ``tps.api.cluster_control.ClusterControlPlane``
    (the shared registry). Errors come from :mod:`tps.errors`."""

    async def list_streams(self) -> list[StreamStats]:
        """Every stream."""

    async def get_stream(self, name: str) -> StreamStats:
        """One stream (UnknownStream if there is none)."""

    async def add_stream(self, feed: FeedConfig, started: bool = True) -> StreamStats:
        """Register ``feed`` and start it unless ``started`` is False."""

    async def remove_stream(self, name: str) -> StreamStats:
        """Forget the stream."""

    async def stop_stream(self, name: str) -> StreamStats:
        """Pause the stream."""

    async def start_stream(self, name: str) -> StreamStats:
        """Resume the stream."""

    async def set_all(self, running: bool) -> list[StreamStats]:
        """Start or stop every stream."""


class FutureWaiter:
    """Awaits pykka futures without blocking the IO loop.

    ``pykka.Future.get()`` blocks its thread, so the wait happens on a small private
    thread pool and the result comes back to the loop through asyncio's thread-safe
    hand-off. Used for control-plane calls (rare); hot query paths use the query pool's
    callbacks instead.
    """

    def __init__(self, workers: int = 4) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tps-wait")

    async def wait(self, future: pykka.Future[T], timeout: float = CALL_TIMEOUT) -> T:
        """The future's value (re-raising its exception) once it is set."""
        loop = asyncio.get_running_loop()
        # pykka's get() takes timeout as a keyword only.
        return await loop.run_in_executor(self._executor, partial(future.get, timeout=timeout))

    def close(self) -> None:
        """Stop the pool's threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)


class ControlPlane:
    """Stream control for REST and GraphQL: awaitable, typed, never blocking the loop.

    Errors are the supervisor's (:mod:`tps.errors`), ``pykka.ActorDeadError`` while
    TPS shuts down and ``pykka.Timeout`` when the supervisor does not answer within
    ``CALL_TIMEOUT``; callers turn them into their own answers.
    """

    def __init__(
        self,
        supervisor: SupervisorProxy,
        waiter: FutureWaiter,
        settle_timeout: float = SETTLE_TIMEOUT,
    ) -> None:
        self._supervisor = supervisor
        self._waiter = waiter
        self._settle_timeout = settle_timeout

    async def list_streams(self) -> list[StreamStats]:
        """Every stream, in registration order."""
        return await self._waiter.wait(self._supervisor.list_streams())

    async def get_stream(self, name: str) -> StreamStats:
        """One stream (UnknownStream if there is none)."""
        return await self._waiter.wait(self._supervisor.get_stream(name))

    async def add_stream(self, feed: FeedConfig, started: bool = True) -> StreamStats:
        """Register ``feed`` and start its reader unless ``started`` is False."""
        return await self._waiter.wait(self._supervisor.add_stream(feed, started))

    async def remove_stream(self, name: str) -> StreamStats:
        """Forget the stream, once its reader stopped and the writer flushed what it read."""
        stats = await self._waiter.wait(self._supervisor.remove_stream(name))
        await self._settle([name])
        return stats

    async def stop_stream(self, name: str) -> StreamStats:
        """Pause the stream; answers once its reader has stopped."""
        stats = await self._waiter.wait(self._supervisor.stop_stream(name))
        await self._settle([name])
        return stats

    async def start_stream(self, name: str) -> StreamStats:
        """Resume the stream (after its previous reader, if one is still stopping)."""
        stats = await self._waiter.wait(self._supervisor.start_stream(name))
        await self._settle([name])
        return stats

    async def set_all(self, running: bool) -> list[StreamStats]:
        """Start or stop every stream; answers once every stopped reader has stopped."""
        streams = await self._waiter.wait(self._supervisor.set_all(running))
        await self._settle([stats.name for stats in streams])
        return streams

    async def _settle(self, names: Sequence[str]) -> None:
        settled = await self._waiter.wait(self._supervisor.settled(names))
        try:
            await asyncio.wait_for(asyncio.wrap_future(settled), self._settle_timeout)
        except TimeoutError:
            logger.warning("Answering a control call on %s before it took effect: a reader "
                           "did not stop within %.0f s", ", ".join(names), self._settle_timeout)
