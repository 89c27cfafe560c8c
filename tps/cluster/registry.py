"""The shared stream registry: one JetStream key-value bucket for the whole cluster.

In cluster mode the streams and every runtime change to them (add, remove, stop,
start) live in the bucket ``tps-streams`` - one key per stream (``names.encode_token``),
a JSON value - instead of each instance's ``streams.json``. Any instance, ``api``
included, can change it; every instance watches it and sees a change within
milliseconds (the KV watch is pushed).

Merge rule for configured feeds (``TPS_FEEDS`` / TOML), decided here because several
instances may start with different lists: **the registry is the cluster's memory, the
configuration only seeds it.** At start-up each instance adds the configured feeds the
registry has never seen (``create``: if two instances seed the same name at once,
exactly one write wins). A name the registry already knows keeps the registry's
definition and state - also when this instance's configuration gives another URL (the
difference is logged) - and a name removed at runtime stays removed (a tombstone), as
in single-node mode. So instances with different feed lists end up with the union,
and restarting one with an older list changes nothing. To change a feed's URL in
cluster mode, remove it and add it again (REST, GraphQL or ``tps streams``).

Every change is a compare-and-set on the key's revision (``update(last=revision)``),
retried on conflict, so two concurrent calls (a stop and a start) never lose one.

Limits set or cleared over the API (issue 11) live in the stream's entry
(``"limits": {...}`` or ``null``), as in the single-node registry file: they win over
the configured ``[[limits]]`` of whichever instance reads the stream; an entry without
the key uses that instance's configured limits. Whoever owns the stream follows a
change within milliseconds (its watch), and a new owner starts from them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import nats.js.errors
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue

from tps.alarms.limits import Limits, parse_limits
from tps.cluster.jetstream import ensure_bucket
from tps.cluster.link import NatsLink, unavailable
from tps.cluster.names import REGISTRY_BUCKET, decode_token, encode_token
from tps.cluster.watch import KvUpdate, watch_bucket
from tps.config.settings import PROTOCOLS, FeedConfig
from tps.errors import InvalidArgument, StreamExists, UnknownStream

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_CAS_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """One key of the registry: a stream (running or stopped) or a removal tombstone."""

    name: str
    feed: FeedConfig | None  # None for a tombstone
    running: bool = True
    by: str = ""  # the instance that made the change
    revision: int = 0
    limits: Limits | None = None
    limits_set: bool = False
    """True once limits were set or cleared over the API: ``limits`` (None: cleared)
    then win over the owner's configured ``[[limits]]``."""

    @property
    def removed(self) -> bool:
        """True for a tombstone (the stream was removed at runtime)."""
        return self.feed is None

    def to_json(self) -> bytes:
        """The value stored in the bucket."""
        data: dict[str, Any] = {"version": FORMAT_VERSION, "name": self.name, "by": self.by,
                                "at": time.time()}
        if self.feed is None:
            data["removed"] = True
        else:
            data["feed"] = self.feed.to_dict()
            data["running"] = self.running
            if self.limits_set:
                data["limits"] = None if self.limits is None else self.limits.to_json()
        return json.dumps(data, separators=(",", ":")).encode()


def decode_entry(key: str, value: bytes, revision: int) -> RegistryEntry:
    """Parse one bucket value; ValueError (naming the problem) for anything else."""
    try:
        data = json.loads(value)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        raise ValueError(f"expected an object with version {FORMAT_VERSION}")
    name = decode_token(key)
    if data.get("name") != name:
        raise ValueError(f"key {key!r} holds stream {data.get('name')!r}")
    by = str(data.get("by", ""))
    if data.get("removed") is True:
        return RegistryEntry(name, None, False, by, revision)
    feed, running = data.get("feed"), data.get("running")
    if not isinstance(feed, dict) or not isinstance(running, bool):
        raise ValueError("a stream entry needs 'feed' and 'running'")
    values = {k: feed.get(k) for k in ("name", "url", "protocol", "query")}
    if not all(isinstance(v, str) for v in values.values()) or values["name"] != name:
        raise ValueError("'feed' needs string name (the key's), url, protocol and query")
    if values["protocol"] not in PROTOCOLS:
        raise ValueError(f"unknown protocol {values['protocol']!r}")
    limits, limits_set = None, "limits" in data
    if data.get("limits") is not None:
        try:
            limits = parse_limits(data["limits"])
        except InvalidArgument as exc:
            # Only this stream's runtime limits are lost, not the stream.
            logger.error("Cluster registry: stream %r has invalid limits (%s); using the "
                         "configured limits instead", name, exc)
            limits, limits_set = None, False
    return RegistryEntry(name, FeedConfig(**values), running, by,  # type: ignore[arg-type]
                         revision, limits, limits_set)


def seed_plan(configured: Iterable[FeedConfig], known: Mapping[str, RegistryEntry]
              ) -> tuple[list[FeedConfig], list[tuple[FeedConfig, RegistryEntry]]]:
    """(feeds to add, (feed, registry entry) pairs that differ and keep the registry's).

    The merge rule of the module docstring, as a pure function.
    """
    add: list[FeedConfig] = []
    differ: list[tuple[FeedConfig, RegistryEntry]] = []
    for feed in configured:
        entry = known.get(feed.name)
        if entry is None:
            add.append(feed)
        elif entry.feed is not None and entry.feed != feed:
            differ.append((feed, entry))
    return add, differ


Listener = Callable[[RegistryEntry | None, str], None]
"""Called on the loop with (new entry or None when the key vanished, stream name)."""


class ClusterRegistry:
    """The registry bucket: a watched view plus compare-and-set changes (loop thread).

    ``view()`` may be read from any thread: it returns an immutable snapshot that the
    watch replaces as a whole (copy on write), never mutates.
    """

    def __init__(self, link: NatsLink, instance: str) -> None:
        self._link = link
        self._instance = instance
        self._kv: KeyValue | None = None
        self._watch: Subscription | None = None
        self._view: Mapping[str, RegistryEntry] = {}
        self._synced = asyncio.Event()
        self._listeners: list[Listener] = []
        self.malformed = 0

    # --- any thread ---------------------------------------------------------------------

    def view(self) -> Mapping[str, RegistryEntry]:
        """Every key as last seen (tombstones included)."""
        return self._view

    def streams(self) -> dict[str, RegistryEntry]:
        """The registered streams (no tombstones), by name."""
        return {name: e for name, e in self._view.items() if not e.removed}

    @property
    def synced(self) -> bool:
        """True once the watch delivered the bucket's content."""
        return self._synced.is_set()

    # --- loop thread --------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` on every change the watch delivers."""
        self._listeners.append(listener)

    async def open(self) -> None:
        """Create/find the bucket and start watching it (returns once synced)."""
        kv, _ = await ensure_bucket(self._link.js, REGISTRY_BUCKET,
                                    description="TPS stream registry")
        self._kv = kv
        self._watch = await watch_bucket(self._link.js, REGISTRY_BUCKET, self._changed,
                                         self._synced.set)
        await self._synced.wait()

    def _changed(self, update: KvUpdate) -> None:
        name = decode_token(update.key)
        entry: RegistryEntry | None = None
        if update.value:
            try:
                entry = decode_entry(update.key, update.value, update.revision)
            except ValueError as exc:
                self.malformed += 1
                logger.error("Ignoring registry key %s: %s", update.key, exc)
                return
        view = dict(self._view)
        if entry is None:
            view.pop(name, None)
        else:
            view[name] = entry
        self._view = view
        for listener in self._listeners:
            try:
                listener(entry, name)
            except Exception:
                logger.exception("Registry listener failed")

    @property
    def kv(self) -> KeyValue:
        """The bucket (after :meth:`open`)."""
        if self._kv is None:
            raise RuntimeError("ClusterRegistry.open() has not run")
        return self._kv

    async def seed(self, configured: Iterable[FeedConfig]) -> list[str]:
        """Add the configured feeds the registry has never seen; their names."""
        add, differ = seed_plan(configured, self._view)
        for feed, entry in differ:
            assert entry.feed is not None
            logger.info("Stream %s: configured here as %s, but the cluster registry has %s "
                        "(set by %s); keeping the registry's definition", feed.name, feed.url,
                        entry.feed.url, entry.by or "an earlier instance")
        added = []
        for feed in add:
            try:
                await self.kv.create(encode_token(feed.name),
                                     RegistryEntry(feed.name, feed, True, self._instance).to_json())
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # another instance seeded (or removed) it first: theirs stands
            added.append(feed.name)
        if added:
            logger.info("Seeded the cluster registry with %d configured feed(s): %s",
                        len(added), ", ".join(added))
        return added

    async def add(self, feed: FeedConfig, running: bool = True) -> RegistryEntry:
        """Register a stream (StreamExists if one of that name is registered)."""
        entry = RegistryEntry(feed.name, feed, running, self._instance)
        key = encode_token(feed.name)
        for _ in range(_CAS_ATTEMPTS):
            current = await self._get(key)
            try:
                if current is None:
                    revision = await self.kv.create(key, entry.to_json())
                elif current.removed:
                    revision = await self.kv.update(key, entry.to_json(), last=current.revision)
                else:
                    raise StreamExists(feed.name)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            return RegistryEntry(feed.name, feed, running, self._instance, revision)
        raise unavailable(RuntimeError("too many concurrent changes"), f"adding {feed.name}")

    async def remove(self, name: str) -> RegistryEntry:
        """Remove a stream (leaves a tombstone); UnknownStream if there is none."""
        return await self._change(name, lambda e: RegistryEntry(name, None, False,
                                                                self._instance))

    async def set_running(self, name: str, running: bool) -> RegistryEntry:
        """Record that ``name`` should (not) run; UnknownStream if there is none."""
        return await self._change(name, lambda e: replace(e, running=running,
                                                          by=self._instance))

    async def set_limits(self, name: str, limits: Limits | None) -> RegistryEntry:
        """Set (None: clear) the limits of ``name`` cluster-wide; UnknownStream."""
        return await self._change(name, lambda e: replace(e, limits=limits, limits_set=True,
                                                          by=self._instance))

    async def _change(self, name: str, make: Callable[[RegistryEntry], RegistryEntry]
                      ) -> RegistryEntry:
        key = encode_token(name)
        for _ in range(_CAS_ATTEMPTS):
            current = await self._get(key)
            if current is None or current.removed:
                raise UnknownStream(name)
            new = make(current)
            if (new.feed, new.running, new.limits, new.limits_set) == (
                    current.feed, current.running, current.limits, current.limits_set):
                return current
            try:
                revision = await self.kv.update(key, new.to_json(), last=current.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            return replace(new, revision=revision)
        raise unavailable(RuntimeError("too many concurrent changes"), f"changing {name}")

    async def _get(self, key: str) -> RegistryEntry | None:
        try:
            found = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        if found.value is None:
            return None
        try:
            return decode_entry(key, found.value, found.revision or 0)
        except ValueError as exc:
            # A damaged value is replaced by the next change rather than blocking it.
            logger.error("Registry key %s is damaged (%s); the change overwrites it", key, exc)
            return RegistryEntry(decode_token(key), None, False, "", found.revision or 0)

