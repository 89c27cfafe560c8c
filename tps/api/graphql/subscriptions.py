"""GraphQL subscriptions over WebSocket: both wire protocols and the fan-out.

Two parts, both living on the IO loop:

- :class:`SubscriptionConnection` speaks one WebSocket's protocol, either
  ``graphql-transport-ws`` (the ``graphql-ws`` npm library) or the legacy
  ``graphql-ws`` (``subscriptions-transport-ws``). It has no socket of its own: it is
  given ``send`` and ``close`` functions, so the Tornado handler stays a thin shell.
  Outgoing messages not yet flushed to the socket are counted; a consumer that lets
  more than ``settings.subscriber_queue`` pile up is told and disconnected, so it can
  neither grow memory nor slow anyone else.
- :class:`SubscriptionManager` is the fan-out. Readings arrive from the live hub's
  listener (handed to the loop with ``add_callback``) or, in the ``api`` role, from a
  store poller. Subscribers with the same document and variables form a group: the
  document is executed once per event per group and the JSON is reused for every
  member, which is what makes 500 subscribers cheap.

Documents are parsed and validated against the schema (through the document cache);
the subscription field and its arguments are read from the validated document, and
each event is the root value of one execution of that document.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from graphql import (
    ExecutionResult,
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    OperationType,
    execute,
)
from graphql.execution.values import get_argument_values, get_variable_values
from tornado.ioloop import IOLoop

from tps.api.context import ApiContext
from tps.api.graphql.cache import DocumentCache, ParsedDocument
from tps.api.graphql.schema import (
    MAX_LIMIT,
    MAX_WINDOW,
    AverageValue,
    check_range,
    check_stream,
)
from tps.errors import InvalidArgument, StoreUnavailable, TPSError
from tps.model import Reading
from tps.store.base import Store

logger = logging.getLogger(__name__)

GRAPHQL_TRANSPORT_WS = "graphql-transport-ws"
GRAPHQL_WS = "graphql-ws"
SUBPROTOCOLS = (GRAPHQL_TRANSPORT_WS, GRAPHQL_WS)

INIT_TIMEOUT = 10.0
"""Seconds a client has to send ``connection_init`` (graphql-transport-ws: 4408)."""

POLL_INTERVAL = 0.5
"""Seconds between store polls in the ``api`` role (lag stays under 1.5 s)."""

POLL_LOOKBACK_NS = 5_000_000_000
"""How far behind the newest seen reading each poll looks again: the writer flushes
streams at different moments, so a late batch may carry older timestamps."""


def choose_subprotocol(offered: Sequence[str]) -> str | None:
    """The first of the client's offered subprotocols that TPS speaks, or None."""
    for name in offered:
        if name.strip() in SUBPROTOCOLS:
            return name.strip()
    return None


def token_from_payload(payload: Any) -> str | None:
    """The control token carried by a ``connection_init`` payload, if any.

    Accepted shapes: ``{"token": t}``, ``{"authToken": t}``,
    ``{"Authorization": "Bearer t"}`` and ``{"headers": {"Authorization": "Bearer t"}}``.
    """
    if not isinstance(payload, dict):
        return None
    for key in ("token", "authToken"):
        if isinstance(payload.get(key), str):
            return str(payload[key])
    headers = payload.get("headers")
    sources = [payload, headers] if isinstance(headers, dict) else [payload]
    for source in sources:
        for key in ("Authorization", "authorization"):
            value = source.get(key)
            if isinstance(value, str):
                scheme, _, token = value.partition(" ")
                return token.strip() if scheme.lower() == "bearer" else None
    return None


# --- what a subscription asks for ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """The validated meaning of one subscription document.

    ``kind`` is ``temperature`` or ``average``; ``window_size`` is set for averages;
    ``group_key`` identifies subscribers whose every message is identical.
    """

    kind: str
    stream: str | None
    window_size: int | None
    parsed: ParsedDocument
    operation_name: str | None
    variables: dict[str, Any]
    group_key: tuple[str, str | None, str]


def subscription_spec(
    schema: GraphQLSchema,
    text: str,
    parsed: ParsedDocument,
    operation_name: str | None,
    variables: dict[str, Any] | None,
) -> SubscriptionSpec:
    """Read the subscription field and its checked arguments from a valid document.

    Raises GraphQLError (bad variables) or InvalidArgument (out-of-range arguments).
    """
    op = parsed.operation(operation_name)
    subscription_type = schema.subscription_type
    if op is None or op.operation != OperationType.SUBSCRIPTION or subscription_type is None:
        raise GraphQLError("operationName: no subscription operation selected")
    coerced = get_variable_values(schema, op.variable_definitions or (), variables or {})
    if isinstance(coerced, list):
        raise coerced[0]
    fields = [s for s in op.selection_set.selections if isinstance(s, FieldNode)]
    if len(fields) != 1:
        raise GraphQLError("subscription: select exactly one root field (fragments unsupported)")
    node = fields[0]
    name = node.name.value
    definition = subscription_type.fields.get(name)
    if definition is None:
        raise GraphQLError(f"subscription: unknown field {name!r}")
    args = get_argument_values(definition, node, coerced)
    stream = check_stream(args.get("stream"))
    window: int | None = None
    kind = "temperature"
    if name == "averageTemperature":
        kind = "average"
        # Graphene gives arguments Python names (``window_size``) as out_name.
        size = args.get("window_size", args.get("windowSize"))
        window = check_range("windowSize", size, 1, MAX_WINDOW)
        if window is None:
            raise InvalidArgument("windowSize", "is required")
    key = (parsed_text_key(text), operation_name, json.dumps(coerced, sort_keys=True, default=str))
    return SubscriptionSpec(kind, stream, window, parsed, operation_name, coerced, key)


def parsed_text_key(text: str) -> str:
    """The grouping key for a document (its text; identical text, identical answer)."""
    return text


# --- fan-out -----------------------------------------------------------------------


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
        self._loop: IOLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self.delivered = 0

    # -- membership --

    def add(self, owner: int, sub_id: str, subscriber: Subscriber, spec: SubscriptionSpec) -> None:
        """Start sending ``spec``'s events to ``subscriber`` under ``sub_id``."""
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
        return sum(len(feed) for feed in self._feeds.values())

    # -- sources --

    def _ensure_source(self) -> None:
        if self._loop is None:
            self._loop = IOLoop.current()
        hub = self._api.hub
        if hub is not None:
            if self._unsubscribe is None:
                loop = self._loop

                def listener(readings: Sequence[Reading]) -> None:
                    # Runs on the publishing reader's thread: only hand over.
                    loop.add_callback(self.dispatch, tuple(readings))

                self._unsubscribe = hub.subscribe(listener)
        elif self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    def _stop_source(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None

    def close(self) -> None:
        """Detach from the hub / stop polling (subscribers are closed by their handlers)."""
        self._feeds.clear()
        self._stop_source()

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

        try:
            readings: list[Reading] = await self._api.queries.run(fetch)
        except Exception as exc:  # noqa: BLE001 - an empty start is better than none
            logger.warning("Average window of %s starts empty: store: %s", stream or "all", exc)
            readings = []
        for reading in readings:
            window.push(reading)
        hub = self._api.hub
        if hub is not None and stream is not None:
            # Readings newer than the writer's last flush are only in the hub.
            for reading in hub.recent(stream, size):
                window.push(reading)
        feed.seeded = True
        backlog, feed.backlog = feed.backlog, []
        if backlog:
            self._dispatch_to(feed, backlog)

    async def _poll(self) -> None:
        """``api`` role: read new readings from the store every ``poll_interval``."""
        queries = self._api.queries
        seen: dict[tuple[str, int], int] = {}
        newest: int | None = None
        while self._feeds:
            try:
                if newest is None:
                    current = await queries.run(lambda store: store.current(None))
                    newest = current.time_ns if current is not None else time.time_ns()
                    start = newest
                after = newest - POLL_LOOKBACK_NS

                def fetch(store: Store, after: int = after) -> list[Reading]:
                    return store.measurements(after, None, None, limit=MAX_LIMIT)

                readings: list[Reading] = await queries.run(fetch)
                fresh = []
                for reading in readings:
                    key = (reading.stream, reading.time_ns)
                    if key in seen:
                        continue
                    seen[key] = reading.time_ns
                    if reading.time_ns > start:
                        fresh.append(reading)
                    newest = max(newest, reading.time_ns)
                for key, stamp in list(seen.items()):
                    if stamp < after:
                        del seen[key]
                by_stream: dict[str, list[Reading]] = {}
                for reading in fresh:
                    by_stream.setdefault(reading.stream, []).append(reading)
                for batch in by_stream.values():
                    self.dispatch(tuple(batch))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep polling: the store may recover
                logger.warning("Subscription poll failed (%s); retrying", exc)
            await asyncio.sleep(self._poll_interval)

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

    def _render(self, spec: SubscriptionSpec, event: Reading | AverageValue) -> str:
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


def format_result(result: ExecutionResult) -> dict[str, Any]:
    """An ExecutionResult as the JSON-ready response mapping."""
    out: dict[str, Any] = {}
    if result.errors:
        out["errors"] = [format_error(error) for error in result.errors]
    out["data"] = result.data
    return out


def format_error(error: GraphQLError) -> dict[str, Any]:
    """A GraphQLError as JSON; unexpected exceptions are logged, not leaked."""
    original = error.original_error
    if isinstance(original, StoreUnavailable) and not str(original).startswith(
        "store unavailable"
    ):
        error = GraphQLError(
            f"store unavailable: {original}", error.nodes, path=error.path
        )
    elif original is not None and not isinstance(original, TPSError | GraphQLError):
        logger.error("Resolver failed at %s", error.path, exc_info=original)
        error = GraphQLError(
            f"internal error: {type(original).__name__}", error.nodes, path=error.path
        )
    return dict(error.formatted)


# --- one WebSocket -----------------------------------------------------------------


class Executor(Protocol):
    """Runs a query or mutation; the HTTP layer's executor (see handler.py)."""

    def __call__(
        self,
        parsed: ParsedDocument,
        operation_name: str | None,
        variables: dict[str, Any] | None,
        authorized: bool,
    ) -> Awaitable[dict[str, Any]]:
        """The response mapping (``data``/``errors``)."""


class SubscriptionConnection:
    """Protocol state of one WebSocket on /graphql (IO loop only).

    ``send(text)`` writes one message; ``busy()`` is True while earlier messages still
    wait for the socket (Tornado's ``IOStream.writing()``); ``close(code, reason)``
    closes the socket.
    """

    def __init__(
        self,
        protocol: str,
        *,
        send: Callable[[str], Any],
        busy: Callable[[], bool],
        close: Callable[[int, str], None],
        schema: GraphQLSchema,
        cache: DocumentCache,
        manager: SubscriptionManager,
        executor: Executor,
        check_token: Callable[[str | None], bool],
        queue_limit: int,
        authorized: bool = False,
    ) -> None:
        self.protocol = protocol
        self._send = send
        self._busy = busy
        self._close = close
        self._schema = schema
        self._cache = cache
        self._manager = manager
        self._executor = executor
        self._check_token = check_token
        self._queue_limit = queue_limit
        self.authorized = authorized
        self.acknowledged = False
        self.closed = False
        self.pending = 0
        self.active: dict[str, str] = {}  # id -> JSON-encoded id
        self._modern = protocol == GRAPHQL_TRANSPORT_WS
        self._next_type = "next" if self._modern else "data"
        self._init_timer: object | None = None

    # -- lifecycle --

    def opened(self) -> None:
        """Start the connection-init timer."""
        loop = IOLoop.current()
        self._init_timer = loop.call_later(INIT_TIMEOUT, self._init_timed_out)

    def _init_timed_out(self) -> None:
        if not self.acknowledged and not self.closed:
            self.shutdown(4408, "Connection initialisation timeout")

    def connection_lost(self) -> None:
        """The socket is gone: drop every subscription of this connection."""
        self.closed = True
        self._cancel_timer()
        self._manager.remove_owner(id(self), self.active)
        self.active.clear()

    def _cancel_timer(self) -> None:
        if self._init_timer is not None:
            IOLoop.current().remove_timeout(self._init_timer)
            self._init_timer = None

    def shutdown(self, code: int, reason: str) -> None:
        """Close the socket with ``code`` and drop every subscription."""
        if self.closed:
            return
        self.connection_lost()
        self._close(code, reason)

    # -- outgoing --

    def _write(self, text: str, force: bool = False) -> None:
        if self.closed:
            return
        # ``pending`` counts messages handed over while earlier ones are still waiting
        # for the socket; it resets as soon as the socket has taken everything. A
        # consumer that stops reading never lets it reset.
        if self._busy():
            self.pending += 1
            if self.pending > self._queue_limit and not force:
                self._overflow()
                return
        else:
            self.pending = 0
        try:
            self._send(text)
        except Exception:  # noqa: BLE001 - the socket closed under us
            self.connection_lost()

    def _overflow(self) -> None:
        message = (
            f"subscriber too slow: more than {self._queue_limit} messages waiting; "
            "disconnecting"
        )
        logger.warning("GraphQL subscriber disconnected: %s", message)
        for sub_id in list(self.active):
            # Past the bound on purpose: a few final messages, then the socket closes.
            self._send_error(sub_id, [{"message": message}], force=True)
        self.shutdown(1008, "subscriber too slow")

    def _json(self, message: dict[str, Any], force: bool = False) -> None:
        self._write(json.dumps(message, separators=(",", ":")), force)

    def deliver(self, sub_id: str, payload: str) -> None:
        """Send one event (``next`` or legacy ``data``) with a pre-rendered payload."""
        encoded = self.active.get(sub_id)
        if encoded is None:
            return
        self._write(f'{{"id":{encoded},"type":"{self._next_type}","payload":{payload}}}')

    def fail(self, sub_id: str, message: str) -> None:
        """Report an error for ``sub_id`` and end that subscription."""
        self._send_error(sub_id, [{"message": message}])
        self._end(sub_id)

    def _send_error(
        self, sub_id: str, errors: list[dict[str, Any]], force: bool = False
    ) -> None:
        if self._modern:
            self._json({"id": sub_id, "type": "error", "payload": errors}, force)
        else:
            payload: dict[str, Any] = dict(errors[0]) if errors else {"message": "error"}
            if len(errors) > 1:
                payload["errors"] = errors
            self._json({"id": sub_id, "type": "error", "payload": payload}, force)

    def _end(self, sub_id: str) -> None:
        if self.active.pop(sub_id, None) is not None:
            self._manager.remove(id(self), sub_id)

    # -- incoming --

    def on_message(self, text: str | bytes) -> None:
        """Handle one client message."""
        if self.closed:
            return
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self.shutdown(4400, "Invalid message: expected a JSON object with a type")
            return
        kind = message["type"]
        handler = getattr(self, f"_on_{kind}", None)
        if handler is None or (kind in _MODERN_ONLY and not self._modern) or (
            kind in _LEGACY_ONLY and self._modern
        ):
            self.shutdown(4400, f"Invalid message type {kind!r}")
            return
        handler(message)

    def _on_connection_init(self, message: dict[str, Any]) -> None:
        if self.acknowledged:
            self.shutdown(4429, "Too many initialisation requests")
            return
        token = token_from_payload(message.get("payload"))
        if token is not None:
            if not self._check_token(token):
                if self._modern:
                    self.shutdown(4403, "Forbidden: the control token is wrong")
                else:
                    self._json({"type": "connection_error",
                                "payload": {"message": "the control token is wrong"}})
                    self.shutdown(1008, "Forbidden")
                return
            self.authorized = True
        self.acknowledged = True
        self._cancel_timer()
        self._json({"type": "connection_ack"})
        if not self._modern:
            self._json({"type": "ka"})

    def _on_ping(self, message: dict[str, Any]) -> None:
        self._json({"type": "pong"})

    def _on_pong(self, message: dict[str, Any]) -> None:
        return

    def _on_connection_terminate(self, message: dict[str, Any]) -> None:
        self.shutdown(1000, "Normal closure")

    def _on_complete(self, message: dict[str, Any]) -> None:
        sub_id = message.get("id")
        if isinstance(sub_id, str):
            self._end(sub_id)

    def _on_stop(self, message: dict[str, Any]) -> None:
        sub_id = message.get("id")
        if isinstance(sub_id, str) and sub_id in self.active:
            self._end(sub_id)
            self._json({"id": sub_id, "type": "complete"})

    def _on_start(self, message: dict[str, Any]) -> None:
        self._on_subscribe(message)

    def _on_subscribe(self, message: dict[str, Any]) -> None:
        if not self.acknowledged:
            self.shutdown(4401, "Unauthorized: send connection_init first")
            return
        sub_id = message.get("id")
        payload = message.get("payload")
        if not isinstance(sub_id, str) or not sub_id or not isinstance(payload, dict):
            self.shutdown(4400, "Invalid message: subscribe needs an id and a payload")
            return
        if sub_id in self.active:
            if self._modern:
                self.shutdown(4409, f"Subscriber for {sub_id} already exists")
                return
            self._end(sub_id)  # legacy clients may reuse an id: replace it
        query = payload.get("query")
        variables = payload.get("variables")
        operation_name = payload.get("operationName")
        if not isinstance(query, str) or not (variables is None or isinstance(variables, dict)) \
                or not (operation_name is None or isinstance(operation_name, str)):
            self._send_error(sub_id, [{"message": "query: expected a string query, an object "
                                       "of variables and a string operationName"}])
            return
        parsed = self._cache.get(query)
        if parsed.errors:
            self._send_error(sub_id, [format_error(e) for e in parsed.errors])
            return
        op = parsed.operation(operation_name)
        if op is None:
            self._send_error(sub_id, [{"message": "operationName: no such operation in the "
                                       "document"}])
            return
        self.active[sub_id] = json.dumps(sub_id)
        if op.operation != OperationType.SUBSCRIPTION:
            IOLoop.current().add_callback(self._execute_once, sub_id, parsed, operation_name,
                                          variables)
            return
        try:
            spec = subscription_spec(self._schema, query, parsed, operation_name, variables)
        except (GraphQLError, InvalidArgument) as exc:
            del self.active[sub_id]
            self._send_error(sub_id, [{"message": str(exc)}])
            return
        self._manager.add(id(self), sub_id, self, spec)

    async def _execute_once(
        self,
        sub_id: str,
        parsed: ParsedDocument,
        operation_name: str | None,
        variables: dict[str, Any] | None,
    ) -> None:
        """A query or mutation sent over the socket: one result, then complete."""
        response = await self._executor(parsed, operation_name, variables, self.authorized)
        if sub_id not in self.active:
            return
        self.deliver(sub_id, json.dumps(response, separators=(",", ":")))
        self.active.pop(sub_id, None)
        self._json({"id": sub_id, "type": "complete"})


_MODERN_ONLY = frozenset({"subscribe", "complete", "ping", "pong"})
_LEGACY_ONLY = frozenset({"start", "stop", "connection_terminate"})

