"""Everything cluster mode adds to one TPS process, behind one object the service owns.

:class:`ClusterNode` builds, for the process's role, the parts of ``tps.cluster``:

=========  =========  ===========  ===========  =========  =====================
role       registry   coordinator  feed leases  live feed  store writer
=========  =========  ===========  ===========  =========  =====================
``all``    yes        yes          takes        yes        yes (partition leases)
``ingest`` yes        yes          takes        no         no
``writer`` yes        yes          none         no         yes (partition leases)
``api``    yes        yes          none         yes        no
=========  =========  ===========  ===========  =========  =====================

Writers hold the leases of readings partitions (``tps-work`` bucket, bounded-load
rendezvous hashing over the live writer instances) and, with rollups on, the
``backfill`` lease while their backfill has not finished - one backfill at a time.

Alarms (:mod:`tps.cluster.alarms`): every role follows the cluster's alarm log
(``alarm_view``, ``alarm_board``, ``alarm_hub``); ingest roles publish their keeper's
events (``alarm_publisher``), continue a stream's alarms when they take its lease and
answer acknowledge/shelve for their streams (after :meth:`ClusterNode.attach_keeper`);
writer roles store the events; instances with an Alertmanager or webhook URL take
turns sending (the ``alert-sender`` lease).

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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from tps.actors.alarms import AlarmBoard, AlarmHub, AlarmKeeperProxy, start_senders
from tps.actors.stats import WriterStats
from tps.alarms.alertmanager import AlertmanagerSender, WebhookSender
from tps.alarms.limits import Limits
from tps.alarms.model import AlarmEvent
from tps.cluster.alarms import (
    AlarmControlServer,
    AlarmEventPublisher,
    AlarmEventStorer,
    AlarmOwnership,
    AlertSenderWork,
    ClusterAlarmView,
)
from tps.cluster.assign import assign
from tps.cluster.jetstream import TRANSIENT_ERRORS
from tps.cluster.leases import LeaseSet
from tps.cluster.link import NatsLink, unavailable
from tps.cluster.names import (
    ALERT_SENDER_KEY,
    BACKFILL_KEY,
    PARTITIONS,
    default_instance_name,
    lease_partition,
    partition_lease,
)
from tps.cluster.ownership import (
    INGEST_ROLES,
    ClusterSnapshot,
    Coordinator,
    InstanceInfo,
    ReaderControl,
    Wanted,
)
from tps.cluster.readings import LiveFeed, ReadingsPublisher
from tps.cluster.registry import ClusterRegistry, RegistryEntry
from tps.cluster.writer import ClusterWriterService, PartitionWork
from tps.config.settings import FeedConfig, Settings, check_feed
from tps.errors import (
    ClusterUnavailable,
    FeedRefused,
    InvalidArgument,
    TooManyStreams,
    UnknownStream,
)
from tps.feeds.destinations import FeedDestinations
from tps.history.hot import HotTier
from tps.model import Reading
from tps.store.alarm_log import open_alarm_log
from tps.store.base import StoreFactory

logger = logging.getLogger(__name__)

T = TypeVar("T")

WRITER_ROLES = frozenset({"all", "writer"})
LIVE_ROLES = frozenset({"all", "api"})


class BackfillGate:
    """Whether this instance may run the rollup backfill now (it holds the ``backfill``
    lease) and whether it still wants to (its backfill has not finished).

    The lease set flips ``allowed`` on the link's loop; the history actor reads it and
    clears ``wanted`` when done. ``on_allowed`` (set by the service) is called when the
    lease is taken, so the history actor starts at once.
    """

    def __init__(self) -> None:
        self.allowed = False
        self.wanted = True
        self.on_allowed: Callable[[], None] = lambda: None

    def start(self, key: str) -> None:
        """LeaseWork: the lease is ours."""
        self.allowed = True
        self.on_allowed()

    def stop(self, key: str, on_stopped: Callable[[], None], lost: bool) -> None:
        """LeaseWork: stop backfilling (a chunk in flight may finish: backfill writes
        are idempotent, so a short overlap with the next holder costs only work)."""
        self.allowed = False
        on_stopped()


def _writers(alive: Mapping[str, InstanceInfo]) -> list[str]:
    return [name for name, info in alive.items() if info.role in WRITER_ROLES]


class ClusterNode:
    """The cluster side of one TPS process (see the module docstring)."""

    def __init__(self, settings: Settings, *, control: ReaderControl | None = None,
                 live: Callable[[Sequence[Reading]], None] | None = None,
                 store_factory: StoreFactory | None = None, http: str | None = None,
                 hot: HotTier | None = None) -> None:
        self.settings = settings
        self.instance = settings.instance or default_instance_name()
        self.role = settings.role
        self.link = NatsLink(settings.nats_url, client_name=f"tps {self.instance}",
                             request_timeout=max(2.0, min(5.0, settings.lease_ttl / 4)))
        self.registry = ClusterRegistry(self.link, self.instance)
        self.live: LiveFeed | None = None
        if live is not None and self.role in LIVE_ROLES:
            self.live = LiveFeed(self.link, live)
        self.writer: ClusterWriterService | None = None
        self.partitions: LeaseSet | None = None
        self.backfill: BackfillGate | None = None
        work: list[tuple[LeaseSet, Wanted]] = []
        if store_factory is not None and self.role in WRITER_ROLES:
            writer = self.writer = ClusterWriterService(
                self.link, store_factory, WriterStats(), batch_size=settings.batch_size,
                flush_interval=settings.flush_interval, rollups=settings.rollups, hot=hot)
            partitions = self.partitions = LeaseSet(
                "partition", self.link, PartitionWork(writer),
                owns_key=lambda key: lease_partition(key) is not None)
            writer.valid = lambda partition: partitions.valid(partition_lease(partition))
            work.append((partitions, self._wanted_partitions))
            if settings.rollups:
                gate = self.backfill = BackfillGate()
                work.append((LeaseSet("backfill", self.link, gate,
                                      owns_key=lambda key: key == BACKFILL_KEY),
                             lambda _alive: [BACKFILL_KEY] if gate.wanted else []))
        # Alarms: every role follows the log; see the module docstring.
        self.alarm_board = AlarmBoard()
        self.alarm_hub = AlarmHub()
        self.alarm_view = ClusterAlarmView(self.link, self.alarm_board, self.alarm_hub,
                                           limits=self._all_limits, base=self._stored_alarms)
        self.alarm_publisher: AlarmEventPublisher | None = None
        self.alarm_ownership: AlarmOwnership | None = None
        self.alarm_control: AlarmControlServer | None = None
        self._control = control
        if control is not None and self.role in INGEST_ROLES:
            self.alarm_publisher = AlarmEventPublisher(
                self.link, holds=lambda stream: self.coordinator.holds(stream),
                on_conflict=self._alarm_conflict)
        self.alarm_storer: AlarmEventStorer | None = None
        if store_factory is not None and self.role in WRITER_ROLES:
            self.alarm_storer = AlarmEventStorer(self.link, lambda: open_alarm_log(settings))
        self.alert_senders: list[AlertmanagerSender | WebhookSender] = []
        self.alert_sending: AlertSenderWork | None = None
        if settings.alertmanager_url or settings.alarm_webhook_url:
            self.alert_senders = start_senders(settings, self.alarm_hub)
            sending = self.alert_sending = AlertSenderWork(self.alert_senders)
            sending.stop(ALERT_SENDER_KEY, lambda: None, False)  # standby until the lease
            work.append((LeaseSet("alert-sender", self.link, sending,
                                  owns_key=lambda key: key == ALERT_SENDER_KEY),
                         lambda _alive: [ALERT_SENDER_KEY]))
        self.coordinator = Coordinator(
            self.link, self.registry, instance=self.instance, role=self.role,
            ttl=settings.lease_ttl, configured=settings.feeds, control=control, http=http,
            work=work)

    def attach_keeper(self, keeper: AlarmKeeperProxy) -> AlarmOwnership:
        """The alarm keeper of an ingest role (built by the service before ``start``)."""
        assert self.alarm_publisher is not None, "only ingest roles keep alarms"
        ownership = self.alarm_ownership = AlarmOwnership(
            self.link, keeper, self.alarm_view, self.alarm_publisher, self.limits_of)
        self.alarm_control = AlarmControlServer(self.link, self.instance, keeper,
                                                self.alarm_publisher, ownership.owns)
        return ownership

    def _alarm_conflict(self, stream: str) -> None:
        """Loop thread: our alarm events of ``stream`` were refused (another instance
        wrote to its log): read the log again, in order with the reader commands."""
        ownership, control = self.alarm_ownership, self._control
        if ownership is not None and control is not None and ownership.owns(stream):
            logger.warning("Stream %s: re-reading its alarm log (another instance added to "
                           "it)", stream)
            control.run(lambda: ownership.adopt(stream))

    def _all_limits(self) -> dict[str, Limits]:
        out = {}
        for name in self.registry.streams():
            limits = self.limits_of(name)
            if limits is not None:
                out[name] = limits
        return out

    def _stored_alarms(self) -> list[AlarmEvent]:
        log = open_alarm_log(self.settings)
        try:
            return log.latest()
        finally:
            log.close()

    def _registry_changed(self, _entry: RegistryEntry | None, name: str) -> None:
        ownership, control = self.alarm_ownership, self._control
        if ownership is not None and control is not None:
            # In order with the stream's adoption (same worker thread), so a limit set
            # while the stream is being taken over is not lost.
            control.run(lambda: ownership.limits_changed(name))
        self.alarm_view.refresh()

    def _wanted_partitions(self, alive: Mapping[str, InstanceInfo]) -> list[str]:
        keys = [partition_lease(p) for p in range(PARTITIONS)]
        return [key for key, owner in assign(keys, _writers(alive)).items()
                if owner == self.instance]

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, on_writer_failure: Callable[[BaseException], None] | None = None) -> None:
        """Connect (in the background: NATS may come later) and start every part."""
        self.link.start()
        self.registry.subscribe(self._registry_changed)
        self.alarm_view.start()
        if self.alarm_publisher is not None:
            self.alarm_publisher.start()
        if self.alarm_control is not None:
            self.alarm_control.start()
        if self.alarm_storer is not None:
            self.alarm_storer.start()
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
        if self.alarm_storer is not None:
            self.alarm_storer.stop(timeout)
        for sender in self.alert_senders:
            sender.stop()
        if self.alarm_control is not None:
            self.alarm_control.stop()
        self.alarm_view.close()
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
            consumed = self.writer.consumer_stats
            rollups = self.writer.rollup_counters
            data["writer"] = {"points_written": stats.points_written,
                              "batches_written": stats.batches_written,
                              "waiting": stats.buffered,
                              "store_reachable": stats.store_reachable,
                              "write_failures": stats.write_failures,
                              "last_error": stats.last_error,
                              "partitions": self.writer.partitions(),
                              "redelivered": consumed.redelivered,
                              "malformed": consumed.malformed,
                              "late_batches": rollups.late_batches,
                              "replays_skipped": rollups.replays_skipped,
                              "streams_recomputed": rollups.streams_recomputed}
        if self.live is not None:
            data["live"] = {"received": self.live.received, "malformed": self.live.malformed}
        data["registry_malformed"] = self.registry.malformed
        return data

    def alarm_health(self) -> dict[str, Any]:
        """The alarm part of the cluster's health: the log as followed here, events
        waiting for JetStream, stored by this writer, whether this instance sends."""
        view = self.alarm_board.view
        info: dict[str, Any] = {"restored": view.restored, "open": len(view.open),
                                "log_applied": self.alarm_view.applied}
        if self.alarm_publisher is not None:
            info["publish_pending"] = self.alarm_publisher.pending()
            info["published"] = self.alarm_publisher.published
            info["dropped"] = self.alarm_publisher.dropped
        if self.alarm_storer is not None:
            info["stored"] = self.alarm_storer.stored
            info["store_last_error"] = self.alarm_storer.last_error
        if self.alert_sending is not None:
            info["sending_alerts"] = self.alert_sending.active
        return info

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

    def set_limits(self, name: str, limits: Limits | None
                   ) -> concurrent.futures.Future[RegistryEntry]:
        """Set (None: clear) a stream's limits cluster-wide (its owner follows)."""
        return self._call(lambda: self.registry.set_limits(name, limits),
                          f"changing the limits of {name}")

    def limits_of(self, name: str) -> Limits | None:
        """The limits ``name`` is evaluated against: the registry's when set over the API,
        else this instance's configured ones (UnknownStream when not registered)."""
        entry = self.registry.streams().get(name)
        if entry is None:
            raise UnknownStream(name)
        if entry.limits_set:
            return entry.limits
        return dict(self.settings.limits).get(name)

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
