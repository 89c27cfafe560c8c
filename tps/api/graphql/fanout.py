"""Fan-out of live readings to every GraphQL subscription (IO loop only).

Readings arrive from the live hub's listener (handed to the loop with
``add_callback``) or, in the ``api`` role, from the :class:`StorePoller`. Subscribers
with the same document and variables form a group: the document is executed once per
event per group and the JSON is reused for every member, which is what makes 500
subscribers cheap. Average subscriptions share a :class:`RollingWindow` per stream
filter and window size, seeded from the hub or the store before live readings count.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from graphql import ExecutionResult, GraphQLSchema, execute
from tornado.ioloop import IOLoop

from tps.actors.alarms import AlarmHub
from tps.alarms.model import AlarmEvent
from tps.api.context import ApiContext
from tps.api.graphql.results import format_result
from tps.api.graphql.schema import AverageValue
from tps.api.graphql.store_poller import POLL_INTERVAL, StorePoller
from tps.api.graphql.subscription_spec import SubscriptionSpec
from tps.model import Reading
from tps.store.base import Store

logger = logging.getLogger(__name__)


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


class RollingWindow:
    """The newest ``size`` readings and their running sum (plain, no threads).

    Readings at or before the newest already counted for their stream are ignored,
    which makes seeding from the store or hub and the live feed overlap safely.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: deque[float] = deque()
        self._sum = 0.0
        self._last_ns: dict[str, int] = {}
        self._pushes = 0

    def push(self, reading: Reading) -> bool:
        """Count ``reading``; False when it was already counted (or older)."""
        if reading.time_ns <= self._last_ns.get(reading.stream, -1):
            return False
        self._last_ns[reading.stream] = reading.time_ns
        self._values.append(reading.value)
        self._sum += reading.value
        if len(self._values) > self.size:
            self._sum -= self._values.popleft()
        self._pushes += 1
        if self._pushes % self.size == 0:
            # A long-running float running sum drifts; recompute it now and then.
            self._sum = math.fsum(self._values)
        return True

    def mean(self) -> float | None:
        """Mean of what is held, or None when empty."""
        if not self._values:
            return None
        return self._sum / len(self._values)

    def __len__(self) -> int:
        return len(self._values)


class _Feed:
    """All subscriptions of one kind on one stream filter (and one window size)."""

    def __init__(self, stream: str | None, window_size: int | None) -> None:
        self.stream = stream
        self.window = RollingWindow(window_size) if window_size is not None else None
        self.seeded = window_size is None
        self.backlog: list[Reading] = []
        self.groups: dict[tuple[str, str | None, str], _Group] = {}

    def matches(self, reading: Reading) -> bool:
        return self.stream is None or self.stream == reading.stream

    def event(self, reading: Reading) -> Reading | AverageValue | None:
        """The event this reading produces for the feed (None: nothing to send)."""
        window = self.window
        if window is None:
            return reading
        if not self.seeded:
            self.backlog.append(reading)
            return None
        if not window.push(reading):
            return None
        return AverageValue(window.mean(), window.size, len(window), self.stream)

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
        self._feeds: dict[tuple[str, str | None, int | None], _Feed] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._poller: StorePoller | None = None
        self._alarms = AlarmFanout(self._schema, api.alarm_hub, self._render)
        self.delivered = 0

    # -- membership --

    def add(self, owner: int, sub_id: str, subscriber: Subscriber, spec: SubscriptionSpec) -> None:
        """Start sending ``spec``'s events to ``subscriber`` under ``sub_id``."""
        if spec.kind == "alarm":
            self._alarms.add(owner, sub_id, subscriber, spec)
            return
        self._ensure_source()
        key = (spec.kind, spec.stream, spec.window_size)
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = _Feed(spec.stream, spec.window_size)
            if feed.window is not None:
                self._seed(feed)
        group = feed.groups.get(spec.group_key)
        if group is None:
            group = feed.groups[spec.group_key] = _Group(spec)
        group.members[(owner, sub_id)] = (subscriber, sub_id)

    def remove(self, owner: int, sub_id: str) -> None:
        """Stop a subscription (unknown ids are ignored)."""
        self._alarms.remove(owner, sub_id)
        for key, feed in list(self._feeds.items()):
            for group_key, group in list(feed.groups.items()):
                if group.members.pop((owner, sub_id), None) is not None and not group.members:
                    del feed.groups[group_key]
            if not feed.groups:
                del self._feeds[key]
        if not self._feeds:
            self._stop_source()

    def remove_owner(self, owner: int, sub_ids: Iterable[str]) -> None:
        """Stop every subscription of one connection."""
        for sub_id in list(sub_ids):
            self.remove(owner, sub_id)

    def subscriber_count(self) -> int:
        """Active subscriptions (for tests and metrics)."""
        return sum(len(feed) for feed in self._feeds.values()) + len(self._alarms)

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
        self._stop_source()
        self._alarms.close()

    def _seed(self, feed: _Feed) -> None:
        """Fill an average window with the newest readings before live ones count."""
        window = feed.window
        assert window is not None
        hub = self._api.hub
        if hub is not None and feed.stream is not None:
            recent = hub.recent(feed.stream, window.size)
            if len(recent) >= window.size or self._api.queries is None:
                for reading in recent:
                    window.push(reading)
                feed.seeded = True
                return
        asyncio.get_running_loop().create_task(self._seed_from_store(feed))

    async def _seed_from_store(self, feed: _Feed) -> None:
        window = feed.window
        assert window is not None
        size, stream = window.size, feed.stream

        def fetch(store: Store) -> list[Reading]:
            return store.measurements(None, None, stream, last=size, limit=size)

        readings: list[Reading] = []
        queries = self._api.queries
        if queries is not None:
            try:
                readings = await queries.run(fetch)
            except Exception as exc:  # noqa: BLE001 - an empty start is better than none
                logger.warning("Average window of %s starts empty: store: %s",
                               stream or "all", exc)
        hub = self._api.hub
        if hub is not None and stream is not None:
            # Readings newer than the writer's last flush are only in the hub.
            readings += hub.recent(stream, size + len(feed.backlog))
        # Readings that arrived since the subscription began wait in the backlog: each
        # of them must still produce its event, so the seed stops short of them.
        live_from: dict[str, int] = {}
        for reading in feed.backlog:
            live_from.setdefault(reading.stream, reading.time_ns)
        for reading in readings:
            if reading.time_ns < live_from.get(reading.stream, reading.time_ns + 1):
                window.push(reading)
        feed.seeded = True
        backlog, feed.backlog = feed.backlog, []
        if backlog:
            self._dispatch_to(feed, backlog)

    # -- delivery --

    def dispatch(self, readings: Sequence[Reading]) -> None:
        """Send events for ``readings`` (one stream's batch, oldest first). IO loop only."""
        for feed in list(self._feeds.values()):
            self._dispatch_to(feed, readings)

    def _dispatch_to(self, feed: _Feed, readings: Sequence[Reading]) -> None:
        for reading in readings:
            if not feed.matches(reading):
                continue
            event = feed.event(reading)
            if event is None:
                continue
            for group in list(feed.groups.values()):
                payload = self._render(group.spec, event)
                for subscriber, sub_id in list(group.members.values()):
                    subscriber.deliver(sub_id, payload)
                    self.delivered += 1

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
                 render: Callable[[SubscriptionSpec, Any], str]) -> None:
        self._schema = schema
        self._hub = hub
        self._render = render
        self._groups: dict[tuple[str, str | None, str], _Group] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self.delivered = 0

    def add(self, owner: int, sub_id: str, subscriber: Subscriber, spec: SubscriptionSpec) -> None:
        """Start sending alarm events matching ``spec`` to ``subscriber``."""
        if self._hub is None:
            subscriber.fail(sub_id, "alarmEvents: alarm events are published by the process "
                            "that evaluates limits (role all or ingest), not this one")
            return
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

    def remove(self, owner: int, sub_id: str) -> None:
        """Stop a subscription (unknown ids are ignored)."""
        for key, group in list(self._groups.items()):
            if group.members.pop((owner, sub_id), None) is not None and not group.members:
                del self._groups[key]
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
        """Send each event to the groups whose stream filter it matches. IO loop only."""
        for event in events:
            for group in list(self._groups.values()):
                stream = group.spec.stream
                if stream is not None and stream != event.alarm.stream:
                    continue
                payload = self._render(group.spec, event)
                for subscriber, sub_id in list(group.members.values()):
                    subscriber.deliver(sub_id, payload)
                    self.delivered += 1
