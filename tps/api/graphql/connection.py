"""The subscription protocol state machine of one WebSocket on /graphql (IO loop only).

Speaks either ``graphql-transport-ws`` (the ``graphql-ws`` npm library) or the legacy
``graphql-ws`` (``subscriptions-transport-ws``). It has no socket of its own: it is
given ``send``, ``busy`` and ``close`` functions, so the Tornado handler stays a thin
shell. Outgoing messages not yet flushed to the socket are counted; a consumer that
lets more than ``settings.subscriber_queue`` pile up is told and disconnected, so it
can neither grow memory nor slow anyone else.

Subscriptions go to the :class:`~tps.api.graphql.fanout.SubscriptionManager`; a query
or mutation sent over the socket is answered once by the HTTP layer's executor. A
wrong control token in ``connection_init`` does not close the socket: reads work as
without a token, and a mutation is answered with an ``UNAUTHENTICATED`` error (the
same rule as over HTTP, :mod:`tps.api.graphql.handshake`). A subscription to a stream
TPS does not know is answered with a ``NOT_FOUND`` error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from graphql import GraphQLError, GraphQLSchema, OperationType
from tornado.ioloop import IOLoop

from tps.api.graphql.cache import DocumentCache, ParsedDocument
from tps.api.graphql.fanout import SubscriptionManager
from tps.api.graphql.handshake import Access, token_from_payload
from tps.api.graphql.known_streams import KnownStreams
from tps.api.graphql.results import (
    BAD_REQUEST,
    INTERNAL_SERVER_ERROR,
    OPERATION_RESOLUTION_FAILURE,
    format_error,
    request_error,
    tps_error,
)
from tps.api.graphql.subscription_spec import SubscriptionSpec, subscription_spec
from tps.api.requests import JsonTooDeep, loads_bounded
from tps.errors import TooManySubscriptions, TPSError
from tps.feeds.protocol import MODERN

logger = logging.getLogger(__name__)

INIT_TIMEOUT = 10.0
"""Seconds a client has to send ``connection_init`` (graphql-transport-ws: 4408)."""


class Executor(Protocol):
    """Runs a query or mutation; the HTTP layer's executor (see handler.py)."""

    def __call__(
        self,
        parsed: ParsedDocument,
        operation_name: str | None,
        variables: dict[str, Any] | None,
        access: Access,
    ) -> Awaitable[str]:
        """The response (``data``/``errors``) as JSON text."""


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
        access: Access = Access.ANONYMOUS,
        streams: KnownStreams | None = None,
        max_subscriptions: int = 1000,
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
        self._streams = streams
        self._max_subscriptions = max_subscriptions
        self.access = access
        self.acknowledged = False
        self.closed = False
        self.pending = 0
        self.active: dict[str, str] = {}  # id -> JSON-encoded id
        self._modern = protocol == MODERN
        self._next_type = "next" if self._modern else "data"
        self._init_timer: object | None = None
        # A new long document's validation off the loop, for on_message to hand over.
        self._waiting: Coroutine[Any, Any, None] | None = None

    @property
    def authorized(self) -> bool:
        """True when this socket may send mutations (it brought the control token)."""
        return self.access is Access.CONTROL

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

    def on_message(self, text: str | bytes) -> Awaitable[None] | None:
        """Handle one client message. Returns what is still to do when a new long
        document is validated off the loop: the caller awaits it before it reads the
        next message (Tornado does, for a coroutine ``on_message``), so order is kept
        and nothing piles up here."""
        self._dispatch(text)
        waiting, self._waiting = self._waiting, None
        return waiting

    def _dispatch(self, text: str | bytes) -> None:
        if self.closed:
            return
        try:
            message = loads_bounded(text)
        except JsonTooDeep:
            self.shutdown(4400, "Invalid message: JSON nested too deeply")
            return
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
            # A wrong token is not a reason to close: reads need none (see handshake).
            self.access = Access.of_token(token, self._check_token)
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
            self._send_error(sub_id, [request_error(
                "query: expected a string query, an object of variables and a string "
                "operationName", BAD_REQUEST)])
            return
        parsed = self._cache.lookup(query)
        if parsed is None and not self._cache.inline(query):
            # A new, long document: validated off the loop (see on_message).
            self._waiting = self._subscribe_later(sub_id, query, variables, operation_name)
            return
        self._subscribe_parsed(sub_id, query, parsed or self._cache.get(query), variables,
                               operation_name)

    async def _subscribe_later(self, sub_id: str, query: str, variables: dict[str, Any] | None,
                               operation_name: str | None) -> None:
        """Validate ``query`` off the loop, then subscribe."""
        parsed = await self._cache.get_async(query)
        if not self.closed:
            self._subscribe_parsed(sub_id, query, parsed, variables, operation_name)

    def _subscribe_parsed(self, sub_id: str, query: str, parsed: ParsedDocument,
                          variables: dict[str, Any] | None, operation_name: str | None) -> None:
        if parsed.errors:
            self._send_error(sub_id, [format_error(e) for e in parsed.errors])
            return
        op = parsed.operation(operation_name)
        if op is None:
            self._send_error(sub_id, [request_error(
                "operationName: no such operation in the document",
                OPERATION_RESOLUTION_FAILURE)])
            return
        if len(self.active) >= self._max_subscriptions:
            self._refuse(sub_id, TooManySubscriptions(
                "TPS_MAX_CONNECTION_SUBSCRIPTIONS", self._max_subscriptions,
                len(self.active) + 1, "subscriptions on this connection:"))
            return
        self.active[sub_id] = json.dumps(sub_id)
        if op.operation != OperationType.SUBSCRIPTION:
            IOLoop.current().add_callback(self._execute_once, sub_id, parsed, operation_name,
                                          variables)
            return
        try:
            spec = subscription_spec(self._schema, query, parsed, operation_name, variables)
        except (GraphQLError, TPSError) as exc:
            del self.active[sub_id]
            self._send_error(sub_id, [format_error(exc) if isinstance(exc, GraphQLError)
                                      else tps_error(exc)])
            return
        streams = self._streams
        if spec.stream is None or streams is None or streams.in_memory(spec.stream):
            self._subscribe(sub_id, spec)
            return
        IOLoop.current().add_callback(self._add_when_known, sub_id, self.active[sub_id], spec)

    async def _add_when_known(self, sub_id: str, encoded: str, spec: SubscriptionSpec) -> None:
        """Subscribe once the stream is known to exist (the store may have to be asked);
        else end the subscription with NOT_FOUND."""
        assert self._streams is not None
        error: dict[str, Any] | None = None
        try:
            await self._streams.require(spec.stream)
        except TPSError as exc:
            error = tps_error(exc)
        except Exception:
            logger.exception("Checking stream %r of a subscription failed", spec.stream)
            error = request_error("internal error while checking the stream",
                                  INTERNAL_SERVER_ERROR)
        if self.closed or self.active.get(sub_id) is not encoded:
            return  # completed (or replaced) meanwhile
        if error is not None:
            del self.active[sub_id]
            self._send_error(sub_id, [error])
            return
        self._subscribe(sub_id, spec)

    def _subscribe(self, sub_id: str, spec: SubscriptionSpec) -> None:
        """Hand the subscription to the manager; past ``TPS_MAX_SUBSCRIPTIONS`` it ends
        with an error for that id and the connection stays."""
        try:
            self._manager.add(id(self), sub_id, self, spec)
        except TooManySubscriptions as exc:
            del self.active[sub_id]
            self._refuse(sub_id, exc)

    def _refuse(self, sub_id: str, exc: TooManySubscriptions) -> None:
        """A subscription over a cap: an error for that id (``extensions.limit``)."""
        self._send_error(sub_id, [tps_error(exc)])

    async def _execute_once(
        self,
        sub_id: str,
        parsed: ParsedDocument,
        operation_name: str | None,
        variables: dict[str, Any] | None,
    ) -> None:
        """A query or mutation sent over the socket: one result, then complete."""
        response = await self._executor(parsed, operation_name, variables, self.access)
        if sub_id not in self.active:
            return
        self.deliver(sub_id, response)
        self.active.pop(sub_id, None)
        self._json({"id": sub_id, "type": "complete"})


_MODERN_ONLY = frozenset({"subscribe", "complete", "ping", "pong"})
_LEGACY_ONLY = frozenset({"start", "stop", "connection_terminate"})

