"""Feed ownership: which instance reads which stream, decided without a coordinator.

Three buckets, all watched by every instance:

* ``tps-instances`` - one heartbeat per instance (name, role), rewritten every
  ``TTL / 4``; a stopped instance deletes its key, a killed one goes silent.
* ``tps-leases`` - one key per stream that somebody reads: ``{"owner": ...}``. Taken with
  ``create`` (succeeds only when no lease exists), renewed every ``TTL / 4`` with
  ``update(last=revision)``, deleted by the owner when it lets go. The bucket's
  ``max_age`` is the TTL, so the lease of a killed instance vanishes on the server
  ``TTL`` after its last renewal.
* ``tps-streams`` - the registry (``tps.cluster.registry``): which streams should run.

Every instance computes the same desired assignment - bounded-load rendezvous hashing
(``tps.cluster.assign``) of the running streams over the live ingest-capable
instances - and acts only on its own part: it takes the leases of streams assigned to
it that nobody live holds, and hands back those assigned elsewhere. Hand-over is
break-before-make: the holder stops its reader, waits until the socket is closed, then
deletes the lease; the new owner sees the deletion in its watch and takes the lease.
A stream is therefore never read by two instances at once, and the gap is one watch
round trip plus a connect.

NATS server 2.9 shows nothing to a watcher when a key expires by ``max_age``, so expiry
is not an event here: survivors notice a dead instance by its silent heartbeat and
simply try ``create`` on its streams every tick until the server has dropped the
leases.

Liveness survives NATS's own failovers. When a NATS node dies, the buckets it led have
no leader for a few seconds (4 to 8 s measured on 2.9.10); nobody can renew, and
nobody can take either. An instance whose own heartbeat fails therefore freezes its
judgement of the others, and after it recovers it gives every instance a full TTL to
be heard again before declaring it dead. A holder never stops its readers merely
because NATS is unreachable (the local spool keeps what they receive); it stops a
reader only on evidence that its lease now belongs to someone else. The price: an
instance cut off from the NATS majority while its peers are not can read a feed that
a peer took over until the partition heals (both copies are stored; the receipt times
differ).

The :class:`Coordinator` runs on the link's loop. It never starts or stops readers
itself: it tells a :class:`ReaderControl` (the supervisor, in the service), which must
return at once and report a finished stop through the callback it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import nats.js.errors
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue

from tps.cluster.assign import assign
from tps.cluster.jetstream import TRANSIENT_ERRORS, ensure_bucket
from tps.cluster.leases import LeaseSet
from tps.cluster.link import LinkStatus, NatsLink
from tps.cluster.names import (
    INSTANCE_BUCKET,
    LEASE_BUCKET,
    WORK_BUCKET,
    decode_token,
    encode_token,
)
from tps.cluster.registry import ClusterRegistry
from tps.cluster.watch import KvUpdate, watch_bucket
from tps.config.settings import FeedConfig

logger = logging.getLogger(__name__)

INGEST_ROLES = frozenset({"all", "ingest"})
_DELETE_ATTEMPTS = 3

Wanted = Callable[[Mapping[str, "InstanceInfo"]], Collection[str]]
"""Which keys of a :class:`~tps.cluster.leases.LeaseSet` this instance wants, given the
live instances (by name): asked every round."""


# --- values stored in the buckets ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """An instance's heartbeat: who it is and what it does."""

    name: str
    role: str
    incarnation: str
    http: str | None = None

    @property
    def ingest(self) -> bool:
        """True when the instance reads feeds (roles ``all`` and ``ingest``)."""
        return self.role in INGEST_ROLES

    def to_json(self) -> bytes:
        """The heartbeat value."""
        return json.dumps({"name": self.name, "role": self.role,
                           "incarnation": self.incarnation, "http": self.http,
                           "at": time.time()}, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, value: bytes) -> InstanceInfo:
        """Parse a heartbeat; ValueError for anything else."""
        try:
            data = json.loads(value)
            return cls(str(data["name"]), str(data["role"]), str(data["incarnation"]),
                       data.get("http"))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a heartbeat: {exc}") from None


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds a stream's lease, at which revision of its key."""

    owner: str
    incarnation: str
    revision: int

    @staticmethod
    def value(owner: str, incarnation: str) -> bytes:
        """The lease value an owner writes."""
        return json.dumps({"owner": owner, "incarnation": incarnation, "at": time.time()},
                          separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, value: bytes, revision: int) -> Lease:
        """Parse a lease value; ValueError for anything else."""
        try:
            data = json.loads(value)
            return cls(str(data["owner"]), str(data.get("incarnation", "")), revision)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a lease: {exc}") from None


# --- pure policy ----------------------------------------------------------------------------


class Liveness:
    """Which instances are alive, from their heartbeats (no IO; one thread).

    ``ttl`` of silence makes an instance dead - but silence only counts while we can
    hear: our own heartbeat writes must work *and* our watch must deliver them back to
    us (the echo). A watch is an ephemeral consumer on one NATS node; when that node
    dies it stalls silently until the client rebuilds it, and without the echo check
    every other instance would look dead meanwhile. While we cannot hear, judgement is
    frozen at the moment we went deaf; once we hear again, every instance gets a fresh
    ``ttl`` to be heard (see the module docstring).
    """

    def __init__(self, me: str, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.me = me
        self.ttl = ttl
        self._clock = clock
        self._heard: dict[str, float] = {}
        self._info: dict[str, InstanceInfo] = {}
        self._recovered_at = -math.inf
        self._failing_since: float | None = None
        self._last_echo = -math.inf

    @property
    def _echo_limit(self) -> float:
        return self.ttl / 2  # heartbeats go out every ttl / 4

    def heard(self, info: InstanceInfo, age: float = 0.0) -> None:
        """A heartbeat of ``info.name`` that was written ``age`` seconds ago."""
        self._heard[info.name] = self._clock() - max(0.0, min(age, self.ttl))
        self._info[info.name] = info

    def gone(self, name: str) -> None:
        """``name`` deleted its heartbeat (a clean stop): dead at once."""
        self._heard.pop(name, None)
        self._info.pop(name, None)

    def own_heartbeat(self, ok: bool) -> None:
        """Whether our own heartbeat write just worked."""
        now = self._clock()
        if ok and self._failing_since is not None:
            self._failing_since = None
            self._recovered_at = now
        elif not ok and self._failing_since is None:
            self._failing_since = now

    def echo(self) -> None:
        """Our own heartbeat came back through the watch: the watch works."""
        now = self._clock()
        if now - self._last_echo > self._echo_limit:
            self._recovered_at = now
        self._last_echo = now

    def _deaf_since(self) -> float | None:
        now = self._clock()
        since = [self._failing_since] if self._failing_since is not None else []
        if now - self._last_echo > self._echo_limit:
            since.append(self._last_echo + self._echo_limit)
        return min(since) if since else None

    @property
    def judging(self) -> bool:
        """False while we cannot hear the others (judgement frozen)."""
        return self._deaf_since() is None

    def is_alive(self, name: str) -> bool:
        """True for ourselves and for instances heard from recently enough."""
        if name == self.me:
            return True
        heard = self._heard.get(name)
        if heard is None:
            return False
        deaf = self._deaf_since()
        reference = self._clock() if deaf is None else deaf
        return reference - max(heard, self._recovered_at) < self.ttl

    def alive(self) -> dict[str, InstanceInfo]:
        """Every live instance we have a heartbeat of, by name."""
        return {name: info for name, info in self._info.items() if self.is_alive(name)}

    def known(self) -> dict[str, InstanceInfo]:
        """Every instance whose heartbeat we hold, alive or not."""
        return dict(self._info)


@dataclass(frozen=True, slots=True)
class Plan:
    """What one instance should do now about its leases."""

    take: tuple[str, ...] = ()
    release: tuple[str, ...] = ()


def plan(me: str, ingest: bool, running: Collection[str], ingest_instances: Collection[str],
         holders: Mapping[str, Lease], mine: Collection[str], releasing: Collection[str],
         is_alive: Callable[[str], bool]) -> Plan:
    """The leases ``me`` should try to take and those it should hand back.

    Take: streams assigned to ``me`` that nobody live holds (or that ``me`` holds
    under an earlier incarnation). Release: held streams that no longer run or are
    assigned to another (live) instance.
    """
    members = set(ingest_instances) | ({me} if ingest else set())
    desired = assign(running, members)
    take = []
    for stream in sorted(running):
        if desired.get(stream) != me or stream in mine:
            continue
        holder = holders.get(stream)
        if holder is None or holder.owner == me or not is_alive(holder.owner):
            take.append(stream)
    release = [s for s in sorted(mine)
               if s not in releasing and (s not in running or desired.get(s) != me)]
    return Plan(tuple(take), tuple(release))


# --- the coordinator ------------------------------------------------------------------------


class ReaderControl(Protocol):
    """Starts and stops this instance's readers; every call returns at once."""

    def start_reading(self, feed: FeedConfig) -> None:
        """Read ``feed`` (this instance now holds its lease)."""

    def stop_reading(self, name: str, on_stopped: Callable[[], None],
                     removed: bool = False) -> None:
        """Stop reading ``name``; call ``on_stopped`` (any thread) once its socket is
        closed - immediately if it was not being read. ``removed``: the stream was
        removed from the registry (not merely handed over or stopped)."""

    def run(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the thread that starts and stops readers, after what is queued
        (for work that must stay in order with them)."""


@dataclass(frozen=True)
class ClusterSnapshot:
    """What the coordinator knows, for ``/health`` and the streams' ``owner``."""

    instance: str
    role: str
    ttl: float
    link: LinkStatus
    held: tuple[str, ...] = ()
    owners: Mapping[str, str | None] = field(default_factory=dict)
    instances: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    takeovers: int = 0
    lost: int = 0
    renew_failures: int = 0
    ready: bool = False
    hearing: bool = False
    """False while this instance cannot write or hear heartbeats (it judges nobody then)."""
    work_held: tuple[str, ...] = ()
    """Keys of the ``tps-work`` bucket this instance holds (partitions, jobs)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``/health``."""
        return {"instance": self.instance, "role": self.role, "lease_ttl": self.ttl,
                "nats": self.link.to_dict(), "ready": self.ready,
                "leases_held": list(self.held), "work_held": list(self.work_held),
                "instances": dict(self.instances),
                "takeovers": self.takeovers, "leases_lost": self.lost,
                "renew_failures": self.renew_failures, "hearing": self.hearing}


class Coordinator:
    """Heartbeats, leases and the registry's seeding for one instance (on the loop).

    ``work`` are the other leased kinds of work this instance may do (readings
    partitions, single jobs: :mod:`tps.cluster.leases`), each with the function that
    says which of its keys this instance wants; they share the heartbeats, the
    liveness judgement and the rounds of the feed leases.
    """

    def __init__(self, link: NatsLink, registry: ClusterRegistry, *, instance: str,
                 role: str, ttl: float, configured: tuple[FeedConfig, ...] = (),
                 control: ReaderControl | None = None, http: str | None = None,
                 work: Sequence[tuple[LeaseSet, Wanted]] = ()) -> None:
        self._link = link
        self._registry = registry
        self.instance = instance
        self.role = role
        self.ingest = role in INGEST_ROLES and control is not None
        self._configured = configured
        self._control = control
        self._incarnation = secrets.token_hex(4)
        self._info = InstanceInfo(instance, role, self._incarnation, http)
        self._ttl = ttl
        self._liveness = Liveness(instance, ttl)
        self._leases: KeyValue | None = None
        self._instances: KeyValue | None = None
        self._watches: list[Subscription] = []
        self._holders: dict[str, Lease] = {}
        self._mine: dict[str, int] = {}  # stream -> revision of our lease
        self._reading: dict[str, FeedConfig] = {}
        self._releasing: set[str] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._ready = asyncio.Event()
        self._takeovers = 0
        self._lost = 0
        self._renew_failures = 0
        self._last_renew = -math.inf
        self._last_heartbeat = -math.inf
        self._snapshot = ClusterSnapshot(instance, role, ttl, link.status())
        self._work = list(work)
        for lease_set, _ in self._work:
            lease_set.wake = self._wake.set

    # --- any thread -------------------------------------------------------------------

    def start(self) -> Coordinator:
        """Start on the link's loop (returns at once)."""
        self._link.submit_task(self._run)
        return self

    def stop(self, timeout: float) -> None:
        """Hand everything back: stop our readers, delete our leases and heartbeat.

        Blocking (not for actors); bounded by ``timeout``.
        """
        with contextlib.suppress(Exception):
            self._link.call(lambda: self._shutdown(timeout), timeout + 1.0)

    def snapshot(self) -> ClusterSnapshot:
        """The newest snapshot (immutable; replaced after every round)."""
        return self._snapshot

    def wait_ready(self, timeout: float) -> bool:
        """Block until the buckets are open and watched (tests, start-up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._snapshot.ready:
                return True
            time.sleep(0.01)
        return False

    @property
    def ttl(self) -> float:
        """The lease TTL in force (the bucket's, which may differ from the setting)."""
        return self._ttl

    def holds(self, stream: str) -> bool:
        """True while this instance holds the feed lease of ``stream`` and hears the
        cluster (loop thread: the alarm-event publisher's fence)."""
        return (stream in self._mine and stream not in self._releasing
                and self._liveness.judging)

    def alive_instances(self) -> dict[str, InstanceInfo]:
        """The instances alive as last judged, ourselves included (loop thread)."""
        alive = self._liveness.alive()
        alive[self.instance] = self._info
        return alive

    # --- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        await self._link.connected()
        while True:
            try:
                await self._open()
                break
            except (nats.js.errors.APIError, *TRANSIENT_ERRORS) as exc:
                logger.warning("Cannot open the cluster buckets yet (%r); retrying in 1 s", exc)
                await asyncio.sleep(1.0)
        tick = min(0.5, self._ttl / 8)
        while not self._stopping:
            try:
                await self._round()
            except (nats.js.errors.APIError, *TRANSIENT_ERRORS) as exc:
                logger.debug("Ownership round interrupted: %r", exc)
            self._publish_snapshot()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), tick)
            self._wake.clear()

    async def _open(self) -> None:
        js = self._link.js
        self._instances, _ = await ensure_bucket(js, INSTANCE_BUCKET, ttl=self._ttl,
                                                   description="TPS instance heartbeats")
        self._leases, lease_ttl = await ensure_bucket(js, LEASE_BUCKET, ttl=self._ttl,
                                                      description="TPS feed leases")
        if lease_ttl and lease_ttl != self._ttl:
            self._ttl = lease_ttl  # the cluster's TTL wins: it is what the server enforces
            self._liveness.ttl = lease_ttl
        await self._heartbeat()
        synced = [asyncio.Event(), asyncio.Event()]
        self._watches = [
            await watch_bucket(js, INSTANCE_BUCKET, self._instance_changed, synced[0].set),
            await watch_bucket(js, LEASE_BUCKET, self._lease_changed, synced[1].set),
        ]
        if self._work:
            work_kv, _ = await ensure_bucket(js, WORK_BUCKET, ttl=self._ttl,
                                             description="TPS work leases (partitions, jobs)")
            for lease_set, _ in self._work:
                lease_set.attach(work_kv, instance=self.instance,
                                 incarnation=self._incarnation, ttl=self._ttl)
            synced.append(asyncio.Event())
            self._watches.append(
                await watch_bucket(js, WORK_BUCKET, self._work_changed, synced[-1].set))
        if not self._registry.synced:
            await self._registry.open()
        self._registry.subscribe(lambda _entry, _name: self._wake.set())
        await asyncio.gather(*(event.wait() for event in synced))
        await self._registry.seed(self._configured)
        self._ready.set()
        logger.info("Cluster member %s (role %s) ready: lease TTL %g s", self.instance,
                    self.role, self._ttl)

    def _instance_changed(self, update: KvUpdate) -> None:
        name = decode_token(update.key)
        if update.value is None:
            if name != self.instance:
                self._liveness.gone(name)
                logger.info("Instance %s left the cluster", name)
        else:
            try:
                info = InstanceInfo.from_json(update.value)
            except ValueError as exc:
                logger.error("Ignoring heartbeat key %s: %s", update.key, exc)
                return
            if name == self.instance:
                if info.incarnation == self._incarnation:
                    self._liveness.echo()
                else:
                    logger.error("Another process calls itself %s (TPS_INSTANCE must be "
                                 "unique); its leases and ours will fight", name)
                return
            if not self._liveness.is_alive(name):
                logger.info("Instance %s (role %s) joined the cluster", name, info.role)
            self._liveness.heard(info, _age(update.created))
        self._wake.set()

    def _lease_changed(self, update: KvUpdate) -> None:
        stream = decode_token(update.key)
        if update.value is None:
            self._holders.pop(stream, None)
        else:
            try:
                self._holders[stream] = Lease.from_json(update.value, update.revision)
            except ValueError as exc:
                logger.error("Ignoring lease key %s: %s", update.key, exc)
                return
        self._wake.set()

    def _work_changed(self, update: KvUpdate) -> None:
        for lease_set, _ in self._work:
            if lease_set.owns_key(update.key):
                lease_set.changed(update.key, update.value, update.revision)
        self._wake.set()

    async def _round(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat >= self._ttl / 4:
            await self._heartbeat()
        if self._mine and now - self._last_renew >= self._ttl / 4:
            self._last_renew = now
            await asyncio.gather(*(self._renew(s) for s in list(self._mine)))
        if self._work and not self._stopping:
            alive = self.alive_instances()
            judging = self._liveness.judging
            for lease_set, wanted in self._work:
                await lease_set.round(wanted(alive) if judging else (),
                                      self._liveness.is_alive, judging)
        self._follow_feed_changes()
        if self._stopping or not self.ingest or not self._liveness.judging:
            return
        streams = self._registry.streams()
        running = {name for name, entry in streams.items() if entry.running}
        ingest = [name for name, info in self._liveness.alive().items() if info.ingest]
        decided = plan(self.instance, self.ingest, running, ingest, self._holders,
                       self._mine, self._releasing, self._liveness.is_alive)
        for stream in decided.release:
            self._release(stream, "assigned to another instance" if stream in running
                          else "stopped or removed")
        if decided.take:
            await asyncio.gather(*(self._take(s) for s in decided.take))

    async def _heartbeat(self) -> None:
        assert self._instances is not None
        self._last_heartbeat = time.monotonic()
        try:
            await self._instances.put(encode_token(self.instance), self._info.to_json())
        except (nats.js.errors.APIError, *TRANSIENT_ERRORS) as exc:
            if self._liveness.judging:
                logger.warning("Cannot write this instance's heartbeat (%r); not judging "
                               "other instances until it works again", exc)
            self._liveness.own_heartbeat(False)
            return
        self._liveness.own_heartbeat(True)

    # --- leases -------------------------------------------------------------------------

    async def _take(self, stream: str) -> None:
        assert self._leases is not None
        key = encode_token(stream)
        value = Lease.value(self.instance, self._incarnation)
        try:
            try:
                revision = await self._leases.create(key, value)
            except nats.js.errors.KeyWrongLastSequenceError:
                current = await self._get_lease(key)
                if current is None or current.owner != self.instance:
                    return  # held by another instance (its lease has not expired yet)
                revision = await self._leases.update(key, value, last=current.revision)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError,
                *TRANSIENT_ERRORS):
            return
        if self._stopping or stream in self._mine:
            return
        entry = self._registry.streams().get(stream)
        if entry is None or entry.feed is None or not entry.running:
            # Stopped or removed while we were taking it: give it straight back.
            self._mine[stream] = revision
            self._release(stream, "stopped or removed")
            return
        self._mine[stream] = revision
        previous = self._holders.get(stream)
        self._takeovers += 1
        logger.info("Took the lease of stream %s%s; starting its reader", stream,
                    f" (previously {previous.owner})" if previous and
                    previous.owner != self.instance else "")
        self._start(entry.feed)

    async def _renew(self, stream: str) -> None:
        assert self._leases is not None
        revision = self._mine.get(stream)
        if revision is None:
            return
        key = encode_token(stream)
        value = Lease.value(self.instance, self._incarnation)
        try:
            try:
                self._mine[stream] = await self._leases.update(key, value, last=revision)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                pass
            current = await self._get_lease(key)
            if current is None:
                # Expired while NATS could not take our renewals; nobody took it since.
                self._mine[stream] = await self._leases.create(key, value)
                logger.warning("Lease of stream %s had expired; taken again", stream)
            elif current.owner == self.instance:
                self._mine[stream] = current.revision  # a renewal whose answer we missed
            else:
                self._lose(stream, current.owner)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError,
                *TRANSIENT_ERRORS) as exc:
            self._renew_failures += 1
            logger.debug("Renewing the lease of %s failed: %r", stream, exc)

    async def _get_lease(self, key: str) -> Lease | None:
        assert self._leases is not None
        try:
            entry = await self._leases.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        try:
            return Lease.from_json(entry.value, entry.revision or 0)
        except ValueError:
            return Lease("", "", entry.revision or 0)

    def _lose(self, stream: str, owner: str) -> None:
        self._lost += 1
        self._mine.pop(stream, None)
        logger.error("Lost the lease of stream %s to %s; stopping its reader here", stream,
                     owner)
        if stream in self._reading and self._control is not None:
            del self._reading[stream]
            self._control.stop_reading(stream, lambda: None)

    def _release(self, stream: str, why: str) -> None:
        """Stop reading ``stream``, then delete our lease (break before make)."""
        self._releasing.add(stream)
        logger.info("Handing back stream %s (%s)", stream, why)
        feed = self._reading.pop(stream, None)
        if feed is None or self._control is None:
            self._link.submit_task(lambda: self._drop_lease(stream))
            return
        loop = self._link.loop

        def stopped() -> None:
            loop.call_soon_threadsafe(
                lambda: self._link.submit_task(lambda: self._drop_lease(stream)))

        entry = self._registry.view().get(stream)
        self._control.stop_reading(stream, stopped,
                                   removed=entry is None or entry.removed)

    async def _drop_lease(self, stream: str) -> None:
        assert self._leases is not None
        revision = self._mine.get(stream)
        try:
            for attempt in range(_DELETE_ATTEMPTS):
                try:
                    if revision is not None:
                        await self._leases.delete(encode_token(stream), last=revision)
                    return
                except nats.js.errors.KeyWrongLastSequenceError:
                    return  # no longer ours
                except (nats.js.errors.APIError, *TRANSIENT_ERRORS) as exc:
                    if attempt == _DELETE_ATTEMPTS - 1:
                        logger.warning("Could not delete the lease of %s (%r); it expires "
                                       "within %g s", stream, exc, self._ttl)
                    else:
                        await asyncio.sleep(0.2)
                    revision = self._mine.get(stream, revision)
        finally:
            self._mine.pop(stream, None)
            self._releasing.discard(stream)
            self._wake.set()

    def _start(self, feed: FeedConfig) -> None:
        self._reading[feed.name] = feed
        if self._control is not None:
            self._control.start_reading(feed)

    def _follow_feed_changes(self) -> None:
        """Restart readers whose stream was redefined (removed and added again)."""
        if self._control is None:
            return
        streams = self._registry.streams()
        loop = self._link.loop
        control = self._control
        for name, feed in list(self._reading.items()):
            entry = streams.get(name)
            if entry is None or entry.feed is None or entry.feed == feed:
                continue
            new = entry.feed
            self._reading[name] = new

            def restart(new: FeedConfig = new) -> None:
                loop.call_soon_threadsafe(lambda: self._restart_done(new))

            logger.info("Stream %s was redefined (%s); restarting its reader", name, new.url)
            control.stop_reading(name, restart)

    def _restart_done(self, feed: FeedConfig) -> None:
        if self._reading.get(feed.name) == feed and self._control is not None:
            self._control.start_reading(feed)

    # --- stopping -------------------------------------------------------------------------

    async def _shutdown(self, timeout: float) -> None:
        self._stopping = True
        deadline = time.monotonic() + timeout
        for stream in list(self._mine):
            if stream not in self._releasing:
                self._release(stream, "this instance is stopping")
        for lease_set, _ in self._work:
            lease_set.release_all("this instance is stopping")
        while (self._mine or any(s.busy for s, _ in self._work)) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for lease_set, _ in self._work:
            if lease_set.busy:
                logger.warning("Stopping with %s leases not handed back (%s); they expire "
                               "within %g s", lease_set.name, ", ".join(lease_set.held()),
                               self._ttl)
        if self._mine:
            logger.warning("Stopping with %d leases not handed back (%s); they expire within "
                           "%g s", len(self._mine), ", ".join(sorted(self._mine)), self._ttl)
        if self._instances is not None:
            with contextlib.suppress(nats.js.errors.APIError, *TRANSIENT_ERRORS):
                await self._instances.delete(encode_token(self.instance))
        self._publish_snapshot()

    # --- snapshot -------------------------------------------------------------------------

    def _publish_snapshot(self) -> None:
        alive = self._liveness.alive()
        instances = {
            name: {"role": info.role, "alive": name in alive, "http": info.http}
            for name, info in self._liveness.known().items()
        }
        instances[self.instance] = {"role": self.role, "alive": True, "http": self._info.http}
        owners: dict[str, str | None] = {}
        for name, entry in self._registry.streams().items():
            holder = self._holders.get(name)
            owners[name] = (holder.owner if holder is not None and entry.running and
                            self._liveness.is_alive(holder.owner) else None)
        self._snapshot = ClusterSnapshot(
            self.instance, self.role, self._ttl, self._link.status(),
            held=tuple(sorted(self._mine)), owners=owners, instances=instances,
            takeovers=self._takeovers, lost=self._lost, renew_failures=self._renew_failures,
            ready=self._ready.is_set(), hearing=self._liveness.judging,
            work_held=tuple(key for lease_set, _ in self._work for key in lease_set.held()),
        )


def _age(created: Any) -> float:
    """Seconds since a KV entry was written (its server timestamp), 0 when unknown."""
    if isinstance(created, datetime):
        return max(0.0, (datetime.now(UTC) - created).total_seconds())
    return 0.0
