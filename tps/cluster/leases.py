"""Leases on work other than feeds: readings partitions, the backfill, the alert sender.

Feeds are leased per stream in ``tps-leases`` (:mod:`tps.cluster.ownership`); other
work that must run in exactly one instance at a time is leased in one more bucket,
``tps-work``, with the same mechanics and the same TTL:

* a key per unit of work (``partition.3``, ``backfill``, ``alert-sender``), value
  ``{"owner", "incarnation"}``; taken with ``create`` only when no live instance holds
  it, renewed every ``TTL / 4`` with compare-and-set, deleted by the owner when it
  lets go; the bucket's ``max_age`` drops the lease of a killed instance;
* hand-over is break-before-make: the owner stops the work (:meth:`LeaseWork.stop`),
  and deletes the lease only when the work reports it stopped;
* which keys an instance *wants* is the coordinator's business (bounded-load
  rendezvous hashing of the partitions over the live writer instances; "while not
  done" for the backfill; "while configured" for the alert sender); a :class:`LeaseSet`
  takes the wanted keys nobody live holds and hands back the held keys no longer
  wanted.

A :class:`LeaseSet` runs on the NATS link's loop, driven by the coordinator's rounds
and watch; only :meth:`LeaseSet.valid` and :meth:`LeaseSet.held` are for other
threads. ``valid`` answers "may I still act as the owner right now?" from the local
clock: a lease counts as valid for ``TTL / 2`` after the server last confirmed it -
the server drops it ``TTL`` after that at the earliest - so an owner cut off from NATS
stops writing before anyone else can have taken over.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Collection, Mapping
from types import MappingProxyType
from typing import Protocol

import nats.js.errors
from nats.js.kv import KeyValue

from tps.cluster.jetstream import TRANSIENT_ERRORS
from tps.cluster.link import NatsLink

logger = logging.getLogger(__name__)

_DELETE_ATTEMPTS = 3


class LeaseWork(Protocol):
    """Starts and stops the work behind leased keys; every call returns at once."""

    def start(self, key: str) -> None:
        """This instance now holds ``key``: begin the work."""

    def stop(self, key: str, on_stopped: Callable[[], None], lost: bool) -> None:
        """Stop the work of ``key``; call ``on_stopped`` (any thread) once it has
        stopped. ``lost``: another instance holds the lease already (stop at once,
        finish nothing)."""


def lease_value(owner: str, incarnation: str) -> bytes:
    """What an owner writes into a lease key."""
    return json.dumps({"owner": owner, "incarnation": incarnation, "at": time.time()},
                      separators=(",", ":")).encode()


def lease_owner(value: bytes) -> str:
    """The owner named by a lease value ("" when unreadable)."""
    try:
        return str(json.loads(value)["owner"])
    except (ValueError, KeyError, TypeError):
        return ""


class LeaseSet:
    """One kind of leased work in the ``tps-work`` bucket (see the module docstring).

    ``name`` is for logs ("partition", "backfill"); ``keys`` says which bucket keys
    belong to this set.
    """

    def __init__(self, name: str, link: NatsLink, work: LeaseWork, *,
                 owns_key: Callable[[str], bool]) -> None:
        self.name = name
        self._link = link
        self._work = work
        self.owns_key = owns_key
        self._kv: KeyValue | None = None
        self._instance = ""
        self._incarnation = ""
        self._ttl = 10.0
        self._holders: dict[str, tuple[str, int]] = {}  # key -> (owner, revision)
        self._mine: dict[str, int] = {}  # key -> revision of our lease
        self._releasing: set[str] = set()
        self._confirmed: Mapping[str, float] = MappingProxyType({})
        self._last_renew = -1e18
        self.takeovers = 0
        self.lost = 0
        self.wake: Callable[[], None] = lambda: None

    # --- any thread -------------------------------------------------------------------

    def held(self) -> tuple[str, ...]:
        """The keys this instance holds now."""
        return tuple(sorted(self._confirmed))

    def valid(self, key: str) -> bool:
        """True while we hold ``key`` and the server confirmed it within ``TTL / 2``."""
        confirmed = self._confirmed.get(key)
        return confirmed is not None and time.monotonic() - confirmed < self._ttl / 2

    def holder(self, key: str) -> str | None:
        """Who holds ``key`` as last watched (None: nobody)."""
        held = self._holders.get(key)
        return held[0] if held is not None else None

    # --- loop thread --------------------------------------------------------------------

    def attach(self, kv: KeyValue, *, instance: str, incarnation: str, ttl: float) -> None:
        """The opened bucket and who we are (the coordinator calls this once)."""
        self._kv = kv
        self._instance = instance
        self._incarnation = incarnation
        self._ttl = ttl

    def changed(self, key: str, value: bytes | None, revision: int) -> None:
        """The watch saw ``key`` change (None: deleted or expired)."""
        if value is None:
            self._holders.pop(key, None)
        else:
            self._holders[key] = (lease_owner(value), revision)

    async def round(self, wanted: Collection[str], is_alive: Callable[[str], bool],
                    judging: bool) -> None:
        """Renew what we hold; unless ``judging`` is False (we cannot hear the others),
        take wanted keys nobody live holds and hand back held keys no longer wanted."""
        now = time.monotonic()
        if self._mine and now - self._last_renew >= self._ttl / 4:
            self._last_renew = now
            await asyncio.gather(*(self._renew(key) for key in list(self._mine)))
        if not judging:
            return
        for key in sorted(self._mine):
            if key not in wanted and key not in self._releasing:
                self.release(key, "no longer assigned here")
        takes = []
        for key in sorted(wanted):
            if key in self._mine or key in self._releasing:
                continue
            holder = self._holders.get(key)
            if holder is None or holder[0] == self._instance or not is_alive(holder[0]):
                takes.append(key)
        if takes:
            await asyncio.gather(*(self._take(key) for key in takes))

    async def _take(self, key: str) -> None:
        kv = self._kv
        assert kv is not None
        value = lease_value(self._instance, self._incarnation)
        try:
            try:
                revision = await kv.create(key, value)
            except nats.js.errors.KeyWrongLastSequenceError:
                current = await self._get(key)
                if current is None or current[0] != self._instance:
                    return  # held by another instance (not expired yet)
                revision = await kv.update(key, value, last=current[1])
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError,
                *TRANSIENT_ERRORS):
            return
        if key in self._mine:
            return
        previous = self._holders.get(key)
        self._mine[key] = revision
        self._confirm(key)
        self.takeovers += 1
        logger.info("Took the %s lease %s%s", self.name, key,
                    f" (previously {previous[0]})" if previous and
                    previous[0] != self._instance else "")
        self._work.start(key)

    async def _renew(self, key: str) -> None:
        kv = self._kv
        assert kv is not None
        revision = self._mine.get(key)
        if revision is None:
            return
        value = lease_value(self._instance, self._incarnation)
        try:
            try:
                self._mine[key] = await kv.update(key, value, last=revision)
                self._confirm(key)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                pass
            current = await self._get(key)
            if current is None:
                self._mine[key] = await kv.create(key, value)
                self._confirm(key)
                logger.warning("The %s lease %s had expired; taken again", self.name, key)
            elif current[0] == self._instance:
                self._mine[key] = current[1]
                self._confirm(key)
            else:
                self._lose(key, current[0])
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError,
                *TRANSIENT_ERRORS) as exc:
            logger.debug("Renewing the %s lease %s failed: %r", self.name, key, exc)

    async def _get(self, key: str) -> tuple[str, int] | None:
        kv = self._kv
        assert kv is not None
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return lease_owner(entry.value), entry.revision or 0

    def _confirm(self, key: str) -> None:
        self._confirmed = MappingProxyType({**self._confirmed, key: time.monotonic()})

    def _unconfirm(self, key: str) -> None:
        self._confirmed = MappingProxyType(
            {k: at for k, at in self._confirmed.items() if k != key})

    def _lose(self, key: str, owner: str) -> None:
        self.lost += 1
        self._mine.pop(key, None)
        self._unconfirm(key)
        logger.error("Lost the %s lease %s to %s; stopping its work here", self.name, key,
                     owner)
        self._work.stop(key, lambda: None, True)

    def release(self, key: str, why: str) -> None:
        """Stop the work of ``key``, then delete our lease (break before make)."""
        if key not in self._mine or key in self._releasing:
            return
        self._releasing.add(key)
        logger.info("Handing back the %s lease %s (%s)", self.name, key, why)
        loop = self._link.loop

        def stopped() -> None:
            loop.call_soon_threadsafe(
                lambda: self._link.submit_task(lambda: self._drop(key)))

        self._work.stop(key, stopped, False)

    async def _drop(self, key: str) -> None:
        kv = self._kv
        assert kv is not None
        revision = self._mine.get(key)
        # No longer ours from here on, whatever the delete's outcome.
        self._unconfirm(key)
        try:
            for attempt in range(_DELETE_ATTEMPTS):
                try:
                    if revision is not None:
                        await kv.delete(key, last=revision)
                    return
                except nats.js.errors.KeyWrongLastSequenceError:
                    return  # no longer ours
                except (nats.js.errors.APIError, *TRANSIENT_ERRORS) as exc:
                    if attempt == _DELETE_ATTEMPTS - 1:
                        logger.warning("Could not delete the %s lease %s (%r); it expires "
                                       "within %g s", self.name, key, exc, self._ttl)
                    else:
                        await asyncio.sleep(0.2)
                    revision = self._mine.get(key, revision)
        finally:
            self._mine.pop(key, None)
            self._releasing.discard(key)
            self.wake()

    def release_all(self, why: str) -> None:
        """Hand back every lease (stopping)."""
        for key in list(self._mine):
            self.release(key, why)

    @property
    def busy(self) -> bool:
        """True while we hold (or are handing back) any lease."""
        return bool(self._mine)
