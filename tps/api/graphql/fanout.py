"""Fan-out of live readings to every GraphQL subscription (IO loop only).

Readings arrive from the live hub's listener (handed to the loop with
``add_callback``) or, in the ``api`` role, from the :class:`StorePoller`. Subscribers
with the same document and variables form a group: the document is executed once per
event per group and the JSON is reused for every member, which is what makes 500
subscribers cheap.

Average subscriptions of one stream filter share one :class:`AverageWindows`: one ring
of the newest readings with running totals, from which every window size's mean is
had in constant time, so a hundred different ``windowSize`` values cost no more than
one. It is seeded once - from the live hub when the hub holds enough, else from the
store, built on a worker thread - and grown (seeded again, deeper) only when a larger
window is asked for than it holds; seeds are read one at a time over the whole
manager, so subscriptions never occupy more than one query actor and ``/ready``
always finds one free.

Caps: ``TPS_MAX_SUBSCRIPTIONS`` over all connections (the connection checks its own).
Every subscription is indexed by (owner, id), so ending one, or all of a
connection's, costs the same however many others are open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from graphql import ExecutionResult, GraphQLSchema, execute
from tornado.ioloop import IOLoop

from tps.actors.alarms import AlarmHub
from tps.alarms.model import AlarmEvent
from tps.api.context import ApiContext
from tps.api.graphql.results import format_result
from tps.api.graphql.schema import MAX_WINDOW, AverageValue
from tps.api.graphql.store_poller import POLL_INTERVAL, StorePoller
from tps.api.graphql.subscription_spec import SubscriptionSpec
from tps.errors import TooManySubscriptions
from tps.model import Reading
from tps.store.base import Store

logger = logging.getLogger(__name__)

DISPATCH_SLICE = 0.005
"""Seconds of delivery work done per IO-loop turn; the rest waits for the next turn."""
MEMBERS_PER_STEP = 64
"""Deliveries between two chances for the drain to stop: one group may have thousands
of members (every client subscribed with the same document)."""
MIN_CAPACITY = 1024
"""Fewest readings an average ring holds (grown in powers of two up to MAX_WINDOW)."""

FeedKey = tuple[str, str | None]
"""(kind, stream filter) of a feed."""
ALARMS: FeedKey = ("alarm", None)
"""Where the index files ``alarmEvents`` subscriptions (they live in AlarmFanout)."""
GroupKey = tuple[str, str | None, str]


class Subscriber(Protocol):
    """Receives ready-made payloads for one subscription id of one connection."""

    def deliver(self, sub_id: str, payload: str) -> None:
        """Send one ``next``/``data`` message with the JSON ``payload``."""

    def fail(self, sub_id: str, message: str) -> None:
        """Report an error for ``sub_id`` and end that subscription."""


@dataclass(eq=False, slots=True)
class _Group:
    """Subscribers whose messages are byte-identical (same document and variables)."""

    spec: SubscriptionSpec
    members: dict[tuple[int, str], tuple[Subscriber, str]] = field(default_factory=dict)


def capacity_for(size: int) -> int:
    """The ring size that holds a window of ``size``: a power of two, at least
    MIN_CAPACITY, at most MAX_WINDOW (so a ring grows a handful of times at most)."""
    return min(MAX_WINDOW, max(MIN_CAPACITY, 1 << max(0, size - 1).bit_length()))


class AverageWindows:
    """The newest ``capacity`` readings of one stream filter, from which the mean of the
    newest ``size`` of them is had in constant time for any size (plain, no threads).

    A ring of values and, beside it, the running total before each value: the sum of
    the newest ``size`` values is the running total minus the total before the oldest
    of them. So any number of window sizes cost nothing extra per reading, and a new
    size costs nothing to add. The totals are recomputed every ``capacity`` readings,
    which keeps float error from building up.

    Readings at or before the newest already counted for their stream are ignored,
    which makes seeding and the live feed overlap safely. ``complete`` is True when
    there is nothing older than what is held (the store had no more), so a window
    larger than what is held is still exact.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.complete = False
        self._values: list[float] = [0.0] * capacity
        self._before: list[float] = [0.0] * capacity
        self._total = 0.0
        self._held = 0
        self._next = 0
        self._last_ns: dict[str, int] = {}
        self._pushes = 0

    @classmethod
    def seeded(cls, capacity: int, readings: Sequence[Reading], live_from: dict[str, int],
               complete: bool) -> AverageWindows:
        """Windows holding ``readings`` (any order; duplicates ignored) up to, not
        including, each stream's first reading in ``live_from`` - those still come, each
        with its event. Pure work: run it off the IO loop for large seeds."""
        windows = cls(capacity)
        for reading in sorted(readings, key=lambda r: r.time_ns):
            if reading.time_ns < live_from.get(reading.stream, reading.time_ns + 1):
                windows.push(reading)
        windows.complete = complete
        return windows

    def __len__(self) -> int:
        return self._held

    def covers(self, size: int) -> bool:
        """True when a window of ``size`` is exact over what is held."""
        return size <= self.capacity and (size <= self._held or self.complete)

    def push(self, reading: Reading) -> bool:
        """Count ``reading``; False when it was already counted (or older)."""
        if reading.time_ns <= self._last_ns.get(reading.stream, -1):
            return False
        self._last_ns[reading.stream] = reading.time_ns
        slot = self._next
        self._values[slot] = reading.value
        self._before[slot] = self._total
        self._total += reading.value
        self._next = (slot + 1) % self.capacity
        self._held = min(self._held + 1, self.capacity)
        self._pushes += 1
        if self._pushes % self.capacity == 0:
            self._rebase()
        return True

    def mean(self, size: int) -> tuple[float | None, int]:
        """(mean, readings averaged) of the newest ``size``."""
        count = min(size, self._held)
        if not count:
            return None, 0
        oldest = (self._next - count) % self.capacity
        return (self._total - self._before[oldest]) / count, count

    def _rebase(self) -> None:
        """Recompute the running totals from the values held (oldest first)."""
        total = 0.0
        cap, start = self.capacity, (self._next - self._held) % self.capacity
        values, before = self._values, self._before
        for i in range(self._held):
            slot = (start + i) % cap
            before[slot] = total
            total += values[slot]
        self._total = total


class _Feed:
    """All subscriptions of one kind on one stream filter."""

    def __init__(self, kind: str, stream: str | None) -> None:
        self.kind = kind
        self.stream = stream
        self.windows: AverageWindows | None = None
        self.seeded = kind != "average"
        self.seeding = False
        self.want = 0
        """Largest window size asked for (averages)."""
        self.backlog: list[Reading] = []
        self.groups: dict[GroupKey, _Group] = {}

    def matches(self, reading: Reading) -> bool:
        return self.stream is None or self.stream == reading.stream

    def window_sizes(self) -> set[int]:
        return {g.spec.window_size for g in self.groups.values() if g.spec.window_size}

    def __len__(self) -> int:
        return sum(len(g.members) for g in self.groups.values())


class SubscriptionManager:
    """Fan-out of live readings to every subscription (IO-loop only, except the
    hub listener, which only hands batches to the loop)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        api: ApiContext,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self._schema = schema
        self._api = api
        self._poll_interval = poll_interval
        self._max = api.settings.max_subscriptions
        self._feeds: dict[FeedKey, _Feed] = {}
        self._index: dict[tuple[int, str], tuple[FeedKey, GroupKey]] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._poller: StorePoller | None = None
        self._alarms = AlarmFanout(self._schema, api.alarm_hub, self._render, self._queue)
        self._seed_slot: asyncio.Semaphore | None = None
        self._work: deque[Iterator[None]] = deque()
        self._draining = False
        self._resume_scheduled = False
        self.delivered = 0
        self.seed_fetches = 0
        """Store reads made to seed average windows (for tests and metrics)."""

    # -- membership --

    def add(self, owner: int, sub_id: str, subscriber: Subscriber, spec: SubscriptionSpec) -> None:
        """Start sending ``spec``'s events to ``subscriber`` under ``sub_id``.

        Raises TooManySubscriptions at ``TPS_MAX_SUBSCRIPTIONS``.
        """
        member = (owner, sub_id)
        if member not in self._index and len(self._index) >= self._max:
            raise TooManySubscriptions("TPS_MAX_SUBSCRIPTIONS", self._max,
                                       len(self._index) + 1, "open subscriptions:")
        self.remove(owner, sub_id)
        if spec.kind == "alarm":
            if self._alarms.add(owner, sub_id, subscriber, spec):
                self._index[member] = (ALARMS, spec.group_key)
            return
        self._ensure_source()
        key: FeedKey = (spec.kind, spec.stream)
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = _Feed(spec.kind, spec.stream)
        group = feed.groups.get(spec.group_key)
        if group is None:
            group = feed.groups[spec.group_key] = _Group(spec)
        group.members[member] = (subscriber, sub_id)
        self._index[member] = (key, spec.group_key)
        if spec.window_size is not None:
            self._want_window(feed, spec.window_size)

    def remove(self, owner: int, sub_id: str) -> None:
        """Stop a subscription (unknown ids are ignored)."""
        where = self._index.pop((owner, sub_id), None)
        if where is None:
            return
        key, group_key = where
        if key == ALARMS:
            self._alarms.remove(owner, sub_id, group_key)
            return
        feed = self._feeds[key]
        group = feed.groups[group_key]
        del group.members[(owner, sub_id)]
        if not group.members:
            del feed.groups[group_key]
        if not feed.groups:
            del self._feeds[key]
        if not self._feeds:
            self._stop_source()

    def remove_owner(self, owner: int, sub_ids: Iterable[str]) -> None:
        """Stop every subscription of one connection (each in constant time)."""
        for sub_id in list(sub_ids):
            self.remove(owner, sub_id)

    def subscriber_count(self) -> int:
        """Active subscriptions (for tests and metrics)."""
        return len(self._index)

    def store_polls(self) -> int:
        """Store polls completed in the ``api`` role (for tests and metrics)."""
        return self._poller.polls if self._poller is not None else 0

    # -- sources --

    def _ensure_source(self) -> None:
        hub = self._api.hub
        if hub is not None:
            if self._unsubscribe is None:
                loop = IOLoop.current()

                def listener(readings: Sequence[Reading]) -> None:
                    # Runs on the publishing reader's thread: only hand over.
                    loop.add_callback(self.dispatch, tuple(readings))

                self._unsubscribe = hub.subscribe(listener)
            return
        queries = self._api.queries
        if queries is None:
            logger.warning("Subscriptions get no readings: no live hub and no query pool")
            return
        if self._poller is None:
            self._poller = StorePoller(queries, self.dispatch, self._poll_interval)
        self._poller.start()

    def _stop_source(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._poller is not None:
            self._poller.stop()

    def close(self) -> None:
        """Detach from the hub / stop polling (subscribers are closed by their handlers)."""
        self._feeds.clear()
        self._index.clear()
        self._work.clear()
        self._alarms.close()
        self._stop_source()
        self._alarms.close()

    # -- average windows --

    def _want_window(self, feed: _Feed, size: int) -> None:
        """Make ``feed``'s windows hold a window of ``size``: at once when they already
        do, else by seeding them (again, deeper) while live readings wait."""
        feed.want = max(feed.want, size)
        windows = feed.windows
        if feed.seeded and windows is not None and windows.covers(size):
            return
        if feed.seeding:
            return  # the seed in flight is checked again when it lands
        feed.seeded = False
        hub = self._api.hub
        if hub is not None and feed.stream is not None:
            recent = hub.recent(feed.stream, capacity_for(feed.want))
            if len(recent) >= feed.want or self._api.queries is None:
                # The hub holds enough (at most its short history): no store read at all.
                self._install(feed, AverageWindows.seeded(
                    capacity_for(feed.want), recent, self._live_from(feed), complete=False))
                return
        feed.seeding = True
        asyncio.get_running_loop().create_task(self._seed_from_store(feed))

    async def _seed_from_store(self, feed: _Feed) -> None:
        if self._seed_slot is None:
            self._seed_slot = asyncio.Semaphore(1)
        readings: list[Reading] = []
        complete = False
        queries = self._api.queries
        loop = asyncio.get_running_loop()
        async with self._seed_slot:  # one seed read at a time, over every feed
            capacity, stream = capacity_for(feed.want), feed.stream

            def fetch(store: Store) -> list[Reading]:
                return store.measurements(None, None, stream, last=capacity, limit=capacity)

            if queries is not None and feed.groups:
                try:
                    self.seed_fetches += 1
                    readings = await queries.run(fetch)
                    complete = len(readings) < capacity
                except Exception as exc:  # noqa: BLE001 - an empty start is better than none
                    logger.warning("Average windows of %s start empty: store: %s",
                                   stream or "all", exc)
            hub = self._api.hub
            if hub is not None and stream is not None:
                # Readings newer than the writer's last flush are only in the hub.
                readings += hub.recent(stream, capacity + len(feed.backlog))
            # A hundred thousand readings are a few hundred ms of Python: built on a
            # worker thread, while new readings keep waiting in the backlog.
            windows = await loop.run_in_executor(
                None, AverageWindows.seeded, capacity_for(feed.want), readings,
                self._live_from(feed), complete)
        feed.seeding = False
        if self._feeds.get((feed.kind, feed.stream)) is not feed:
            return  # every subscriber left meanwhile
        self._install(feed, windows)
        if not all(windows.covers(size) for size in feed.window_sizes()):
            # A larger window was asked for while this seed was read: read deeper.
            self._want_window(feed, feed.want)

    @staticmethod
    def _live_from(feed: _Feed) -> dict[str, int]:
        """Each stream's first reading waiting in the backlog: a seed stops short of it,
        so that every reading that arrived meanwhile still produces its event."""
        live_from: dict[str, int] = {}
        for reading in feed.backlog:
            live_from.setdefault(reading.stream, reading.time_ns)
        return live_from

    def _install(self, feed: _Feed, windows: AverageWindows) -> None:
        """Use ``windows`` for ``feed``, then send what waited meanwhile, each reading
        with its event (readings the seed already held are ignored by ``push``).

        The backlog goes to the front of the delivery queue: any reading still queued
        behind it is newer.
        """
        feed.windows = windows
        feed.seeded = True
        backlog, feed.backlog = feed.backlog, []
        if backlog:
            self._work.appendleft(self._deliveries(backlog, feed))
            self._drain()

    # -- delivery --

    def dispatch(self, readings: Sequence[Reading]) -> None:
        """Send events for ``readings`` (one stream's batch, oldest first). IO loop only.

        The work is queued and done in slices of at most ``DISPATCH_SLICE`` seconds: a
        hundred distinct subscriptions times a burst of readings is a lot of rendering,
        and no slice of it may hold the loop for long. Order is kept: one queue, worked
        front to back.
        """
        self._queue(self._deliveries(tuple(readings), None))

    def _queue(self, work: Iterator[None]) -> None:
        """Do ``work`` after everything queued before it, in slices."""
        self._work.append(work)
        self._drain()

    def _drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        deadline = time.perf_counter() + DISPATCH_SLICE
        try:
            while self._work:
                for _ in self._work[0]:
                    if time.perf_counter() >= deadline:
                        self._resume_later()
                        return
                self._work.popleft()
        finally:
            self._draining = False

    def _resume_later(self) -> None:
        if not self._resume_scheduled:
            self._resume_scheduled = True
            IOLoop.current().add_callback(self._resume)

    def _resume(self) -> None:
        self._resume_scheduled = False
        self._drain()

    def _deliveries(self, readings: Sequence[Reading], only: _Feed | None) -> Iterator[None]:
        """Deliver ``readings`` to every feed (or ``only`` one), yielding after each
        group's payload so that the drain can stop between any two."""
        feeds = [only] if only is not None else list(self._feeds.values())
        for feed in feeds:
            for reading in readings:
                if not feed.matches(reading) or self._feeds.get(
                        (feed.kind, feed.stream)) is not feed:
                    continue
                if not feed.seeded:
                    feed.backlog.append(reading)
                    continue
                windows = feed.windows
                if windows is not None and not windows.push(reading):
                    continue
                for group in list(feed.groups.values()):
                    event: Reading | AverageValue = reading
                    size = group.spec.window_size
                    if windows is not None and size is not None:
                        mean, count = windows.mean(size)
                        event = AverageValue(mean, size, count, feed.stream)
                    payload = self._render(group.spec, event)
                    yield
                    for step in _deliver(list(group.members.values()), payload):
                        self.delivered += step
                        yield

    def _render(self, spec: SubscriptionSpec, event: Any) -> str:
        document = spec.parsed.document
        assert document is not None
        result = execute(
            self._schema,
            document,
            root_value=event,
            variable_values=spec.variables,
            operation_name=spec.operation_name,
        )
        assert isinstance(result, ExecutionResult)
        return json.dumps(format_result(result), separators=(",", ":"))


class AlarmFanout:
    """``alarmEvents`` subscriptions: alarm events from the keeper's hub (IO loop only,
    except the hub listener, which only hands events to the loop).

    Grouped like readings: one execution per event per distinct document, the JSON
    reused for every member. In a process without a keeper (role ``api``) the
    subscription fails with a message saying where alarm events are published.
    """

    def __init__(self, schema: GraphQLSchema, hub: AlarmHub | None,
                 render: Callable[[SubscriptionSpec, Any], str],
                 queue: Callable[[Iterator[None]], None]) -> None:
        self._schema = schema
        self._hub = hub
        self._render = render
        self._queue = queue  # the manager's sliced work queue (in order with readings)
        self._groups: dict[GroupKey, _Group] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self.delivered = 0

    def add(self, owner: int, sub_id: str, subscriber: Subscriber, spec: SubscriptionSpec
            ) -> bool:
        """Start sending alarm events matching ``spec`` to ``subscriber``; False when
        this process has no alarm events (the subscriber was told)."""
        if self._hub is None:
            subscriber.fail(sub_id, "alarmEvents: alarm events are published by the process "
                            "that evaluates limits (role all or ingest), not this one")
            return False
        if self._unsubscribe is None:
            loop = IOLoop.current()

            def listener(events: Sequence[AlarmEvent]) -> None:
                # Runs on the alarm keeper's thread: only hand over.
                loop.add_callback(self.dispatch, tuple(events))

            self._unsubscribe = self._hub.subscribe(listener)
        group = self._groups.get(spec.group_key)
        if group is None:
            group = self._groups[spec.group_key] = _Group(spec)
        group.members[(owner, sub_id)] = (subscriber, sub_id)
        return True

    def remove(self, owner: int, sub_id: str, group_key: GroupKey) -> None:
        """Stop a subscription of group ``group_key`` (the manager's index knows it)."""
        group = self._groups.get(group_key)
        if group is not None and group.members.pop((owner, sub_id), None) is not None \
                and not group.members:
            del self._groups[group_key]
        if not self._groups:
            self.close()

    def close(self) -> None:
        """Detach from the hub."""
        self._groups.clear()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def __len__(self) -> int:
        return sum(len(group.members) for group in self._groups.values())

    def dispatch(self, events: Sequence[AlarmEvent]) -> None:
        """Send each event to the groups whose stream filter it matches, in the
        manager's slices (thousands of members must not hold the loop). IO loop only."""
        self._queue(self._deliveries(tuple(events)))

    def _deliveries(self, events: Sequence[AlarmEvent]) -> Iterator[None]:
        for event in events:
            for group in list(self._groups.values()):
                stream = group.spec.stream
                if stream is not None and stream != event.alarm.stream:
                    continue
                payload = self._render(group.spec, event)
                yield
                for step in _deliver(list(group.members.values()), payload):
                    self.delivered += step
                    yield


def _deliver(members: list[tuple[Subscriber, str]], payload: str) -> Iterator[int]:
    """Deliver ``payload`` to ``members``, yielding how many were served after every
    ``MEMBERS_PER_STEP`` of them (a member gone meanwhile ignores its delivery)."""
    for start in range(0, len(members), MEMBERS_PER_STEP):
        part = members[start:start + MEMBERS_PER_STEP]
        for subscriber, sub_id in part:
            subscriber.deliver(sub_id, payload)
        yield len(part)
