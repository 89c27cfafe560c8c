"""The /graphql endpoint: HTTP GET and POST, and WebSocket subscriptions on one path.

HTTP follows the GraphQL-over-HTTP conventions: ``POST`` with ``application/json``
(``query``, ``variables``, ``operationName``) or ``GET ?query=`` (queries only; a
mutation over GET is refused with 405). A request that is not a GraphQL request at
all (not JSON, no query, wrong content type) gets 400 and a JSON error; anything the
GraphQL layer refuses (parse, validation, argument limits, store unavailable) comes
back with 200 in ``errors``, and so does a mutation without the control token
(``UNAUTHENTICATED``: Apollo and urql show a GraphQL error's message, while they
report a 401 as a bare network error). Every error has ``extensions.code``
(:mod:`tps.api.graphql.results`). Nothing a client sends produces a 500.

Every query and mutation passes the request budget first
(:mod:`tps.api.graphql.budget`): a request that may read more than
``TPS_MAX_REQUEST_ROWS`` rows or uses more than ``TPS_MAX_ALIASES`` aliases gets one
``BAD_USER_INPUT`` error with ``extensions.limit``, and nothing runs. One that may read
many rows is built off the IO loop and written in pieces
(:mod:`tps.api.graphql.offload`). A body larger than
``TPS_MAX_REQUEST_BYTES`` is answered 413 from its ``Content-Length``.

A request with ``Upgrade: websocket`` on the same path becomes a subscription
connection (:mod:`tps.api.graphql.connection`, fanned out by
:mod:`tps.api.graphql.fanout`). A browser asking for HTML with no
query gets GraphiQL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable
from inspect import isawaitable
from typing import Any

import tornado.web
import tornado.websocket
from graphql import ExecutionResult, GraphQLError, GraphQLSchema, OperationType, execute
from tornado.concurrent import Future

from tps.api.context import ApiContext
from tps.api.graphql.budget import Budget, check_budget, request_cost
from tps.api.graphql.cache import DocumentCache, ParsedDocument
from tps.api.graphql.connection import SubscriptionConnection
from tps.api.graphql.fanout import SubscriptionManager
from tps.api.graphql.handshake import DEFAULT_SUBPROTOCOL, Access, choose_subprotocol
from tps.api.graphql.known_streams import KnownStreams
from tps.api.graphql.offload import HeavyRequests, dump_chunks
from tps.api.graphql.results import (
    BAD_REQUEST,
    OPERATION_RESOLUTION_FAILURE,
    CodedExecutionContext,
    format_error,
    format_result,
    request_error,
    tps_error,
)
from tps.api.graphql.schema import FLAT_LISTS, RequestContext, build_schema
from tps.api.graphql.shortcut import Shortcuts
from tps.api.requests import JsonTooDeep, loads_bounded
from tps.compat.graphql_core import ArgumentPlans, VariableCoercion, flat_list_context
from tps.compat.tornado import (
    bound_send_buffer,
    socket_busy,
    spell_websocket_headers_as_rfc,
    write_text_frame,
)
from tps.errors import RequestTooLarge, Unauthenticated

logger = logging.getLogger(__name__)

JSON_TYPE = "application/json; charset=utf-8"
WS_SEND_BUFFER = 64 * 1024
"""Kernel send buffer of a subscription socket, in bytes."""
_ACCEPTED_TYPES = ("application/json", "application/graphql-response+json")
OFFLOAD_ROWS = 2_000
"""A request that may read more rows than this is built off the IO loop
(:mod:`tps.api.graphql.offload`); smaller ones, the hot path, stay on it."""
MESSAGE_SLICE = 0.005
"""Seconds of a websocket client's burst of messages handled before the loop gets a turn."""
CHUNK_BYTES = 64 * 1024
"""A response longer than this is written (and compressed) piece by piece."""

Response = list[str]
"""A response as JSON text in pieces (their join is the whole document)."""


class GraphQLService:
    """Schema, document cache, executor and subscription fan-out of one application.

    Shared by every request and WebSocket; lives on the IO loop. Every query and
    mutation passes the request budget (:mod:`tps.api.graphql.budget`) before it runs.
    """

    def __init__(self, ctx: ApiContext, schema: GraphQLSchema | None = None) -> None:
        self.ctx = ctx
        self.schema = schema or build_schema().graphql_schema
        self.cache = DocumentCache(self.schema)
        self._context_class = flat_list_context(FLAT_LISTS, CodedExecutionContext)
        self.subscriptions = SubscriptionManager(self.schema, ctx)
        self.streams = KnownStreams(ctx)
        settings = ctx.settings
        self.budget = Budget(settings.max_request_rows, settings.max_aliases)
        self.heavy = HeavyRequests()
        self.shortcuts = Shortcuts(self.schema)
        self.variables = VariableCoercion(self.schema)
        self.arguments = ArgumentPlans()

    def respond(
        self,
        parsed: ParsedDocument,
        operation_name: str | None,
        variables: dict[str, Any] | None,
        access: Access,
    ) -> Response | Awaitable[Response]:
        """Run a valid query or mutation; the response as JSON pieces, or an awaitable.

        A request over budget is refused before any work (one ``BAD_USER_INPUT`` error
        naming the limit); one that may read many rows runs off the IO loop; the rest
        run here: the history questions dashboards repeat through
        :mod:`tps.api.graphql.shortcut` when it recognises them, everything else through
        :meth:`execute`.
        """
        op = parsed.operation(operation_name)
        assert parsed.document is not None and op is not None
        try:
            coerced = self.variables.coerce(op, variables or {})
        except GraphQLError:
            coerced = None  # execution reports the bad variable, with its code
        if coerced is not None:
            try:
                cost = request_cost(self.schema, parsed.document, op, coerced, self.arguments)
                check_budget(cost, self.budget)
            except RequestTooLarge as exc:
                return [_dumps({"errors": [tps_error(exc)]})]
            if cost.rows > OFFLOAD_ROWS:
                home = asyncio.get_running_loop()
                return self.heavy.run(lambda: self._off_loop(
                    parsed, operation_name, variables, access, home))
            shortcut = self.shortcuts.find(op)
            if shortcut is not None:
                context = RequestContext(self.ctx, access is Access.CONTROL, self.streams)
                answer = shortcut.respond(context, coerced)
                if isawaitable(answer):
                    return self._shortcut_later(answer, parsed, operation_name, variables,
                                                access)
                if answer is not None:
                    return answer
        response = self.execute(parsed, operation_name, variables, access)
        if isawaitable(response):
            return self._dump_later(response)
        assert isinstance(response, dict)
        return [_dumps(response)]

    def execute(
        self,
        parsed: ParsedDocument,
        operation_name: str | None,
        variables: dict[str, Any] | None,
        access: Access,
        home: asyncio.AbstractEventLoop | None = None,
    ) -> dict[str, Any] | Awaitable[dict[str, Any]]:
        """Run a valid query or mutation; the response mapping, or an awaitable of it.

        No budget check (see :meth:`respond`). A mutation needs ``Access.CONTROL``;
        otherwise the answer is one ``UNAUTHENTICATED`` error and nothing runs. Returns a
        plain value when every resolver answered synchronously (the
        ``currentTemperature`` hot path), saving a coroutine per request. ``home`` is the
        IO loop when this runs on a heavy-request thread.
        """
        assert parsed.document is not None
        op = parsed.operation(operation_name)
        if op is not None and op.operation == OperationType.MUTATION \
                and access is not Access.CONTROL:
            return {"errors": [tps_error(Unauthenticated(access.refusal()))]}
        result = execute(
            self.schema,
            parsed.document,
            context_value=RequestContext(self.ctx, access is Access.CONTROL, self.streams,
                                         home),
            variable_values=variables,
            operation_name=operation_name,
            execution_context_class=self._context_class,
        )
        if isawaitable(result):
            return self._finish(result)
        assert isinstance(result, ExecutionResult)
        return format_result(result)

    async def _shortcut_later(
        self,
        pending: Awaitable[Response | None],
        parsed: ParsedDocument,
        operation_name: str | None,
        variables: dict[str, Any] | None,
        access: Access,
    ) -> Response:
        """A shortcut's awaited answer, or the executor's when it gave up."""
        answer = await pending
        if answer is not None:
            return answer
        response = self.execute(parsed, operation_name, variables, access)
        if isawaitable(response):
            response = await response
        assert isinstance(response, dict)
        return [_dumps(response)]

    async def _finish(self, pending: Awaitable[ExecutionResult]) -> dict[str, Any]:
        return format_result(await pending)

    async def _dump_later(self, pending: Awaitable[dict[str, Any]]) -> Response:
        return [_dumps(await pending)]

    async def _off_loop(
        self,
        parsed: ParsedDocument,
        operation_name: str | None,
        variables: dict[str, Any] | None,
        access: Access,
        home: asyncio.AbstractEventLoop,
    ) -> Response:
        """On a heavy-request thread: execute, then serialize in pieces."""
        response = self.execute(parsed, operation_name, variables, access, home)
        if isawaitable(response):
            response = await response
        assert isinstance(response, dict)
        return dump_chunks(response)

    async def execute_async(
        self,
        parsed: ParsedDocument,
        operation_name: str | None,
        variables: dict[str, Any] | None,
        access: Access,
    ) -> str:
        """:meth:`respond` as a coroutine returning the JSON text (the WebSocket path)."""
        response = self.respond(parsed, operation_name, variables, access)
        if isawaitable(response):
            response = await response
        assert isinstance(response, list)
        if len(response) > 1:
            self.heavy.release_soon()
        return "".join(response)

    def observe(self, label: str, seconds: float) -> None:
        """Record one operation's latency (metrics may be absent in tests)."""
        metrics = self.ctx.metrics
        if metrics is not None:
            try:
                metrics.observe_query(label, seconds)
            except Exception:  # metrics must never fail a request
                logger.exception("Recording GraphQL latency failed")

    def close(self) -> None:
        """Stop subscription sources and the heavy-request threads."""
        self.subscriptions.close()
        self.heavy.close()
        self.cache.close()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class BadRequestError(Exception):
    """The request is not a GraphQL request (answered with ``status`` and a JSON error)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    def body(self) -> dict[str, Any]:
        """The JSON answer (code ``BAD_REQUEST``)."""
        return {"errors": [request_error(str(self), BAD_REQUEST)]}


@tornado.web.stream_request_body
class GraphQLHandler(tornado.websocket.WebSocketHandler):
    """``/graphql``: queries and mutations over HTTP, subscriptions over WebSocket.

    The body is streamed in (``stream_request_body``) so that a request larger than
    ``TPS_MAX_REQUEST_BYTES`` is answered 413 from its ``Content-Length`` alone.
    """

    service: GraphQLService
    connection: SubscriptionConnection | None

    def initialize(self, service: GraphQLService) -> None:
        """Receive the shared service (injected by the route table)."""
        self.service = service
        self.connection = None
        self._body = bytearray()
        self._last_turn = time.perf_counter()

    # -- HTTP --

    def prepare(self) -> None:
        """Allow listed cross-origin callers (``TPS_CORS_ORIGINS``); refuse a body over
        the limit before reading it.

        Not ``set_default_headers``: Tornado calls that before ``initialize``, when the
        injected service is not there yet.
        """
        origin = self.request.headers.get("Origin")
        if origin and origin in self.service.ctx.settings.cors_origins:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Vary", "Origin")
        limit = self.service.ctx.settings.max_request_bytes
        declared = self.request.headers.get("Content-Length", "")
        if declared.strip().isdigit() and int(declared) > limit:
            refusal = RequestTooLarge("TPS_MAX_REQUEST_BYTES", limit, int(declared),
                                      "the body's bytes:")
            self._send_json(413, {"errors": [tps_error(refusal)]})

    def data_received(self, chunk: bytes) -> None:
        """Collect the body (bounded by the server's ``max_body_size``)."""
        self._body += chunk

    def options(self) -> None:
        """CORS preflight (allowed origins come from ``TPS_CORS_ORIGINS``)."""
        self.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.set_header("Access-Control-Allow-Headers", "Content-Type, Authorization")
        self.set_status(204)
        self.finish()

    async def get(self, *args: Any, **kwargs: Any) -> None:
        """WebSocket upgrade, GraphiQL for browsers, or a query from ``?query=``."""
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            await super().get(*args, **kwargs)
            return
        query = self.get_query_argument("query", None)
        if query is None and "text/html" in self.request.headers.get("Accept", ""):
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.finish(_graphiql_html())
            return
        try:
            if query is None:
                raise BadRequestError(400, "query: missing; pass ?query=<GraphQL document>")
            variables = _variables(self.get_query_argument("variables", None), from_text=True)
            operation_name = self.get_query_argument("operationName", None) or None
        except BadRequestError as exc:
            self._send_json(exc.status, exc.body())
            return
        await self._handle(query, variables, operation_name, over_get=True)

    async def post(self, *args: Any, **kwargs: Any) -> None:
        """A GraphQL request as JSON: ``{"query", "variables", "operationName"}``."""
        try:
            ctype = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype not in _ACCEPTED_TYPES:
                raise BadRequestError(400, f"Content-Type must be application/json, got {ctype!r}")
            try:
                body = loads_bounded(bytes(self._body))
            except JsonTooDeep as exc:
                raise BadRequestError(400, f"body: {exc}") from None
            except (ValueError, UnicodeDecodeError):
                raise BadRequestError(400, "body: not valid JSON") from None
            if not isinstance(body, dict):
                raise BadRequestError(400, "body: expected a JSON object with a query")
            query = body.get("query")
            if not isinstance(query, str):
                raise BadRequestError(400, "query: missing or not a string")
            variables = _variables(body.get("variables"))
            operation_name = body.get("operationName")
            if operation_name is not None and not isinstance(operation_name, str):
                raise BadRequestError(400, "operationName: must be a string")
        except BadRequestError as exc:
            self._send_json(exc.status, exc.body())
            return
        await self._handle(query, variables, operation_name or None, over_get=False)

    async def _handle(
        self,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        over_get: bool,
    ) -> None:
        started = time.perf_counter()
        service = self.service
        parsed = service.cache.lookup(query)
        if parsed is None:  # a new document: long ones are validated off the loop
            parsed = await service.cache.get_async(query)
        label = "invalid"
        if parsed.errors:
            pieces: Response = [_dumps({"errors": [format_error(e) for e in parsed.errors]})]
            status = 200
        else:
            status, pieces, label = await self._run(parsed, variables, operation_name, over_get)
        # Recorded before the answer leaves, so a client never sees it unrecorded.
        service.observe(label, time.perf_counter() - started)
        self.set_status(status)
        self.set_header("Content-Type", JSON_TYPE)
        await self._write_pieces(pieces)

    async def _write_pieces(self, pieces: Response) -> None:
        """Finish with the JSON pieces; a long answer is written (and compressed) in
        parts of about CHUNK_BYTES, each flushed before the next is encoded."""
        if len(pieces) == 1:
            self.finish(pieces[0])
            return
        self.service.heavy.release_soon()  # after this answer is written and dropped
        batch: list[str] = []
        size = 0
        for piece in pieces:
            batch.append(piece)
            size += len(piece)
            if size >= CHUNK_BYTES:
                self.write("".join(batch).encode())
                batch, size = [], 0
                await self.flush()
        self.finish("".join(batch).encode())

    async def _run(
        self,
        parsed: ParsedDocument,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        over_get: bool,
    ) -> tuple[int, Response, str]:
        op = parsed.operation(operation_name)
        if op is None:
            problem = (
                f"no operation named {operation_name!r}" if operation_name
                else "the document has several operations; name one"
            )
            error = request_error(f"operationName: {problem}", OPERATION_RESOLUTION_FAILURE)
            return 200, [_dumps({"errors": [error]})], "invalid"
        label = parsed.label(operation_name)
        if op.operation == OperationType.SUBSCRIPTION:
            message = "subscriptions need a WebSocket connection to /graphql"
            return 400, [_dumps({"errors": [request_error(message, BAD_REQUEST)]})], label
        if op.operation == OperationType.MUTATION and over_get:
            self.set_header("Allow", "POST")
            error = request_error("mutations must be sent with POST", BAD_REQUEST)
            return 405, [_dumps({"errors": [error]})], label
        access = Access.of_header(self.request.headers.get("Authorization"),
                                  self.service.ctx.auth.check_token)
        try:
            response = self.service.respond(parsed, operation_name, variables, access)
            if isawaitable(response):
                response = await response
        except GraphQLError as exc:
            return 200, [_dumps({"errors": [format_error(exc)]})], label
        assert isinstance(response, list)
        return 200, response, label

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", JSON_TYPE)
        self.finish(json.dumps(body, separators=(",", ":")))

    # -- WebSocket --

    def flush(self, include_footers: bool = False) -> Future[None]:
        """Send the WebSocket handshake headers spelled as RFC 6455 spells them.

        Tornado normalises header names (``Sec-Websocket-Protocol``); names are
        case-insensitive, but some clients (``gql``) look the subprotocol up with the
        exact RFC spelling and silently fall back to the legacy protocol.
        """
        if self.get_status() == 101:
            spell_websocket_headers_as_rfc(self)
        return super().flush(include_footers)

    @property
    def ping_interval(self) -> float | None:
        """Ping idle sockets (default every 30 s) so vanished clients are noticed."""
        value = self.settings.get("websocket_ping_interval", 30.0)
        return float(value) if value else None

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        """Pick ``graphql-transport-ws`` or ``graphql-ws``, in the client's order."""
        return choose_subprotocol(subprotocols)

    def check_origin(self, origin: str) -> bool:
        """Same-origin browsers and the configured CORS origins may open a socket."""
        if origin in self.service.ctx.settings.cors_origins:
            return True
        return bool(super().check_origin(origin))

    def open(self, *args: str, **kwargs: str) -> None:
        """Start the protocol; a missing subprotocol means ``graphql-transport-ws``."""
        service = self.service
        ctx = service.ctx
        protocol = self.selected_subprotocol or DEFAULT_SUBPROTOCOL
        self.set_nodelay(True)
        bound_send_buffer(self, WS_SEND_BUFFER)
        self.connection = SubscriptionConnection(
            protocol,
            send=self._send_text,
            busy=self._socket_busy,
            close=self.close,
            schema=service.schema,
            cache=service.cache,
            manager=service.subscriptions,
            executor=service.execute_async,
            check_token=ctx.auth.check_token,
            queue_limit=ctx.settings.subscriber_queue,
            access=Access.of_header(self.request.headers.get("Authorization"),
                                    ctx.auth.check_token),
            streams=service.streams,
            max_subscriptions=ctx.settings.max_connection_subscriptions,
        )
        self.connection.opened()

    def _send_text(self, text: str) -> None:
        """Write one text frame (the fast path of :func:`tps.compat.tornado.write_text_frame`)."""
        write_text_frame(self, text)

    def _socket_busy(self) -> bool:
        """True while earlier frames still wait in the stream's write buffer."""
        return socket_busy(self)

    async def on_message(self, message: str | bytes) -> None:
        """Hand one client message to the protocol state machine.

        Tornado hands over every frame already buffered without returning to the IO
        loop, so a client that sends thousands of messages at once would hold it for
        their whole burst; after ``MESSAGE_SLICE`` of them the loop gets a turn.
        """
        if self.connection is not None:
            waiting = self.connection.on_message(message)
            if waiting is not None:  # a new long document, validated off the loop
                await waiting
        now = time.perf_counter()
        if now - self._last_turn >= MESSAGE_SLICE:
            await asyncio.sleep(0)
            self._last_turn = time.perf_counter()

    def on_close(self) -> None:
        """Drop this connection's subscriptions."""
        if self.connection is not None:
            self.connection.connection_lost()


def _variables(raw: Any, from_text: bool = False) -> dict[str, Any] | None:
    """``variables`` as a mapping (GET passes it as JSON text)."""
    if raw is None or raw == "":
        return None
    if from_text:
        try:
            raw = loads_bounded(raw)
        except JsonTooDeep as exc:
            raise BadRequestError(400, f"variables: {exc}") from None
        except ValueError:
            raise BadRequestError(400, "variables: not valid JSON") from None
    if raw is not None and not isinstance(raw, dict):
        raise BadRequestError(400, "variables: must be a JSON object")
    return raw


def _graphiql_html() -> str:
    """GraphiQL from the dashboard assets, or a short note while they are missing."""
    try:
        from tps.api.ui import graphiql_html  # optional: built by the UI work
    except ImportError:
        return (
            "<!doctype html><title>TPS GraphQL</title><h1>TPS GraphQL</h1>"
            "<p>POST a JSON body <code>{\"query\": \"{ currentTemperature { time value } }\"}"
            "</code> to this URL, or GET <code>?query=...</code>.</p>"
        )
    html: str = graphiql_html()
    return html


def routes(ctx: ApiContext) -> list[tuple[str, type, dict[str, Any]]]:
    """The /graphql route for the application's route table."""
    service = GraphQLService(ctx)
    ctx.on_close.append(service.close)
    return [(r"/graphql", GraphQLHandler, {"service": service})]
