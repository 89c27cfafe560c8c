"""Everything cluster mode adds to one TPS process, behind one object the service owns.

:class:`ClusterNode` builds, for the process's role, the parts of ``tps.cluster``:

=========  =========  ===========  ========  =========  ===========
role       registry   coordinator  leases    live feed  store writer
=========  =========  ===========  ========  =========  ===========
``all``    yes        yes          takes     yes        yes
``ingest`` yes        yes          takes     no         no
``writer`` yes        yes          none      no         yes
``api``    yes        yes          none      yes        no
=========  =========  ===========  ========  =========  ===========

Ingest-capable roles publish their readings with :meth:`ClusterNode.publisher`
(the batching writer's "store"), so a reading counts as received once it is in the
local spool, and as stored once JetStream acknowledged it.

Control-plane calls (add, remove, stop, start a stream) are answered from the shared
registry on *any* instance; they return a ``concurrent.futures.Future`` at once, for
the caller to attach a callback (the IO loop must never wait on NATS). NATS trouble
fails the future with ClusterUnavailable (503 at the API).
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from tps.actors.stats import WriterStats
from tps.cluster.jetstream import TRANSIENT_ERRORS
from tps.cluster.link import NatsLink, unavailable
from tps.cluster.names import default_instance_name
from tps.cluster.ownership import ClusterSnapshot, Coordinator, ReaderControl
from tps.cluster.readings import LiveFeed, ReadingsPublisher
from tps.cluster.registry import ClusterRegistry, RegistryEntry
from tps.cluster.writer import ClusterWriterService
from tps.config.settings import FeedConfig, Settings, check_feed
from tps.errors import ClusterUnavailable, FeedRefused, InvalidArgument, TooManyStreams
from tps.feeds.destinations import FeedDestinations
from tps.model import Reading
from tps.store.base import StoreFactory

logger = logging.getLogger(__name__)

T = TypeVar("T")

WRITER_ROLES = frozenset({"all", "writer"})
LIVE_ROLES = frozenset({"all", "api"})


class ClusterNode:
    """The cluster side of one TPS process (see the module docstring)."""

    def __init__(self, settings: Settings, *, control: ReaderControl | None = None,
                 live: Callable[[Sequence[Reading]], None] | None = None,
                 store_factory: StoreFactory | None = None, http: str | None = None) -> None:
        self.settings = settings
        self.instance = settings.instance or default_instance_name()
        self.role = settings.role
        self.link = NatsLink(settings.nats_url, client_name=f"tps {self.instance}",
                             request_timeout=max(2.0, min(5.0, settings.lease_ttl / 4)))
        self.registry = ClusterRegistry(self.link, self.instance)
        self.coordinator = Coordinator(
            self.link, self.registry, instance=self.instance, role=self.role,
            ttl=settings.lease_ttl, configured=settings.feeds, control=control, http=http)
        self.live: LiveFeed | None = None
        if live is not None and self.role in LIVE_ROLES:
            self.live = LiveFeed(self.link, live)
        self.writer: ClusterWriterService | None = None
        if store_factory is not None and self.role in WRITER_ROLES:
            self.writer = ClusterWriterService(
                self.link, store_factory, WriterStats(), batch_size=settings.batch_size,
                flush_interval=settings.flush_interval)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, on_writer_failure: Callable[[BaseException], None] | None = None) -> None:
        """Connect (in the background: NATS may come later) and start every part."""
        self.link.start()
        self.coordinator.start()
        if self.live is not None:
            self.live.start()
        if self.writer is not None:
            self.writer.start(on_writer_failure)
        logger.info("Cluster mode: instance %s, role %s, NATS %s, lease TTL %g s",
                    self.instance, self.role, ", ".join(self.settings.nats_url),
                    self.settings.lease_ttl)

    def publisher(self) -> ReadingsPublisher:
        """A new JetStream publisher: the ingest side's store (one per writer actor)."""
        return ReadingsPublisher(self.link, timeout=max(5.0, self.settings.influx_timeout))

    def hand_back(self, timeout: float) -> None:
        """Stop reading and delete our leases and heartbeat, so others take over now."""
        self.coordinator.stop(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the writer and the live feed, then the connection (after hand_back and
        after the ingest writer's final flush, which still publishes)."""
        if self.writer is not None:
            self.writer.stop(timeout)
        if self.live is not None:
            self.live.stop()
        self.link.stop(timeout)

    # --- what others read ------------------------------------------------------------

    def snapshot(self) -> ClusterSnapshot:
        """Ownership, instances and the connection, for /health and ``owner``."""
        return self.coordinator.snapshot()

    def owner(self, stream: str) -> str | None:
        """The live instance reading ``stream`` now, or None."""
        return self.coordinator.snapshot().owners.get(stream)

    def streams(self) -> dict[str, RegistryEntry]:
        """The registered streams (the shared registry as last watched)."""
        return self.registry.streams()

    def health(self) -> dict[str, Any]:
        """JSON for ``/health``: connection, instances, leases, writer and live counters."""
        data = self.snapshot().to_dict()
        data["nats"] = self.link.status().to_dict()  # now, not as of the last round
        if self.writer is not None:
            stats = self.writer.stats
            data["writer"] = {"points_written": stats.points_written,
                              "batches_written": stats.batches_written,
                              "waiting": stats.buffered,
                              "store_reachable": stats.store_reachable,
                              "write_failures": stats.write_failures,
                              "last_error": stats.last_error,
                              "redelivered": self.writer.consumer.stats.redelivered,
                              "malformed": self.writer.consumer.stats.malformed}
        if self.live is not None:
            data["live"] = {"received": self.live.received, "malformed": self.live.malformed}
        data["registry_malformed"] = self.registry.malformed
        return data

    def ready(self) -> bool:
        """True when connected and the buckets are watched."""
        return self.snapshot().ready and self.link.status().connected

    # --- the control plane (any thread; futures, never blocking) -----------------------

    def add_stream(self, feed: FeedConfig, running: bool = True
                   ) -> concurrent.futures.Future[RegistryEntry]:
        """Register a stream cluster-wide: its fields checked, its URL refused at once
        when the feed-destination policy can tell without DNS (every reader checks again
        before each connect), at most ``TPS_MAX_STREAMS`` streams."""
        check_feed(feed)
        try:
            FeedDestinations.from_settings(self.settings).precheck(feed.url)
        except FeedRefused as exc:
            raise InvalidArgument("url", exc.reason) from None
        known = self.registry.streams()
        limit, count = self.settings.max_streams, len(known)
        if feed.name not in known and count >= limit:
            raise TooManyStreams("TPS_MAX_STREAMS", limit, count + 1, "streams")
        return self._call(lambda: self.registry.add(feed, running), f"adding {feed.name}")

    def remove_stream(self, name: str) -> concurrent.futures.Future[RegistryEntry]:
        """Remove a stream cluster-wide (its reader stops wherever it runs)."""
        return self._call(lambda: self.registry.remove(name), f"removing {name}")

    def set_running(self, name: str, running: bool
                    ) -> concurrent.futures.Future[RegistryEntry]:
        """Stop or start a stream cluster-wide."""
        return self._call(lambda: self.registry.set_running(name, running),
                          f"{'starting' if running else 'stopping'} {name}")

    def set_all(self, running: bool) -> concurrent.futures.Future[list[RegistryEntry]]:
        """Stop or start every stream."""
        async def change_all() -> list[RegistryEntry]:
            return [await self.registry.set_running(name, running)
                    for name in sorted(self.registry.streams())]
        return self._call(change_all, "changing every stream")

    def _call(self, factory: Callable[[], Awaitable[T]], doing: str
              ) -> concurrent.futures.Future[T]:
        async def guarded() -> T:
            if not self.registry.synced or not self.link.status().connected:
                raise ClusterUnavailable(f"not connected to the NATS cluster ({doing})")
            try:
                return await factory()
            except TRANSIENT_ERRORS as exc:  # any NATS or JetStream error, timeouts
                raise unavailable(exc, doing) from None
        return self.link.submit(guarded)
