"""REST control endpoint: list, add, remove, stop and start streams.

Handlers never block the IO loop: every supervisor call goes through
:class:`tps.api.control.ControlPlane`, awaited off the loop; a stop or removal is
answered once it has taken effect. Mutating calls need
``Authorization: Bearer <token>``, checked in ``prepare`` before a byte of the body is
read (the handlers stream their bodies), so a caller without the token learns nothing,
changes nothing and cannot make TPS buffer anything; bodies are small (64 KiB to add a
stream, 1 KiB otherwise). Cross-origin browser calls are answered only for origins
listed in ``TPS_CORS_ORIGINS``. The audit lines name the client as
:class:`~tps.api.requests.TrustedProxies` determines it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import pykka
import tornado.web

from tps.api.context import ApiContext
from tps.api.control import CALL_TIMEOUT, StreamControl
from tps.api.errors import ApiError, JsonErrorsMixin, from_tps_error
from tps.api.requests import JsonTooDeep, loads_bounded
from tps.api.stream_shape import NEW_STREAM_FIELDS, json_schema_type, stream_json
from tps.config.settings import FeedConfig
from tps.errors import TPSError

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
"""Largest body of ``POST /api/streams``."""
CONTROL_BODY_BYTES = 1024
"""Largest body of every other control call (they take none)."""
_NEW_STREAM = {spec.name: spec for spec in NEW_STREAM_FIELDS}
Route = tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]
T = TypeVar("T")


def json_object_body(content_type: str | None, body: bytes, max_bytes: int) -> dict[str, Any]:
    """A control call's JSON object body; ApiError 415 (not JSON), 413 (over
    ``max_bytes``), 400 (malformed, nested too deep, not an object)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(415, f"Content-Type must be application/json, got {content_type!r}")
    if len(body) > max_bytes:
        raise ApiError(413, f"body larger than {max_bytes} bytes")
    try:
        data = loads_bounded(body)
    except JsonTooDeep as exc:
        raise ApiError(400, f"body: {exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object")
    return data


def parse_new_stream(content_type: str | None, body: bytes) -> tuple[FeedConfig, bool]:
    """Turn a POST /api/streams request into (feed, started); raise ApiError (400/413/415/422).

    Field values are checked further (URL scheme, allowed host, name pattern) by the
    supervisor, whose InvalidArgument becomes a 422 naming the field.
    """
    data = json_object_body(content_type, body, MAX_BODY_BYTES)
    for key, value in data.items():
        spec = _NEW_STREAM.get(key)
        if spec is None:
            raise ApiError(422, f"unknown field {key!r}", field=key)
        if not isinstance(value, spec.python_type):
            raise ApiError(422, f"must be a {json_schema_type(spec.python_type)}", field=key)
    for spec in NEW_STREAM_FIELDS:
        if spec.required and spec.name not in data:
            raise ApiError(422, "is required", field=spec.name)
    values = {spec.name: data.get(spec.name, spec.default) for spec in NEW_STREAM_FIELDS}
    feed = FeedConfig(name=values["name"], url=values["url"], protocol=values["protocol"],
                      query=values["query"])
    return feed, bool(values["started"])


@tornado.web.stream_request_body
class ControlHandler(JsonErrorsMixin):
    """Shared plumbing: JSON answers, CORS, auth before the body, awaiting the supervisor."""

    ctx: ApiContext
    body_limit = CONTROL_BODY_BYTES
    """Largest body this resource's POST or PUT accepts (other methods: 1 KiB)."""

    def initialize(self, ctx: ApiContext) -> None:
        """Receive the API context from the route table."""
        self.ctx = ctx

    def set_default_headers(self) -> None:
        """JSON by default, CORS headers only for allowed origins, no caching."""
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        # Tornado calls this before initialize() too; error pages call it again later.
        if hasattr(self, "ctx"):
            self._cors_headers()

    def prepare(self) -> None:
        """CORS headers; then, before any body is read, the token of a mutating call and
        the body limit (413 at once for a larger ``Content-Length``)."""
        self._cors_headers()
        self._body = bytearray()
        method = self.request.method or "GET"
        if method not in ("GET", "HEAD", "OPTIONS"):
            self.require_token()
        limit = self.body_limit if method in ("POST", "PUT", "PATCH") else CONTROL_BODY_BYTES
        declared = self.request.headers.get("Content-Length", "")
        if declared.strip().isdigit() and int(declared) > limit:
            raise ApiError(413, f"body larger than {limit} bytes")
        connection = self.request.connection
        if connection is not None and hasattr(connection, "set_max_body_size"):
            connection.set_max_body_size(limit)

    def data_received(self, chunk: bytes) -> None:
        """Collect the (bounded) body."""
        self._body += chunk

    @property
    def body(self) -> bytes:
        """The request body, read after :meth:`prepare` allowed it."""
        return bytes(self._body)

    def client(self) -> str:
        """Who sent the request, for audit lines (``TPS_TRUSTED_PROXIES``)."""
        return self.ctx.proxies.client_ip(self.request)

    def _cors_headers(self) -> None:
        origin = self.request.headers.get("Origin")
        if origin and origin in self.ctx.settings.cors_origins:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Vary", "Origin")

    def options(self, *_: str) -> None:
        """CORS preflight: allowed origins learn the methods and headers they may use."""
        origin = self.request.headers.get("Origin")
        if origin and origin in self.ctx.settings.cors_origins:
            self.set_header("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
            self.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
            self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

    def require_token(self) -> None:
        """Raise 401 unless the request carries the control token.

        A browser request from a foreign origin that is not allowed by
        TPS_CORS_ORIGINS is refused with 403 even with a token, so a page cannot
        drive TPS through a user's browser.
        """
        if not self.ctx.auth.check_header(self.request.headers.get("Authorization")):
            raise ApiError(401, "missing or wrong bearer token (Authorization: Bearer <token>)")
        origin = self.request.headers.get("Origin")
        if (
            origin
            and origin not in self.ctx.settings.cors_origins
            and urlsplit(origin).netloc != self.request.host
        ):
            raise ApiError(403, f"origin {origin!r} is not allowed by TPS_CORS_ORIGINS")

    def control(self) -> StreamControl:
        """The control plane, or 503 in a process that runs no supervisor."""
        control = self.ctx.control
        if control is None:
            raise ApiError(
                503,
                f"this TPS process runs role={self.ctx.settings.role} and has no streams; "
                "use the control endpoint of the ingest process",
            )
        return control

    async def answer(self, call: Awaitable[T]) -> T:
        """Await a control-plane call (off the IO loop), mapping its errors to HTTP."""
        try:
            return await call
        except TPSError as exc:
            raise from_tps_error(exc) from None
        except pykka.ActorDeadError:
            raise ApiError(503, "the supervisor is not running (TPS is shutting down)") from None
        except pykka.Timeout:
            raise ApiError(
                503, f"the supervisor did not answer within {CALL_TIMEOUT:g} s", code="timeout"
            ) from None

    def write_json(self, data: Any, status: int = 200) -> None:
        """Finish with ``data`` as JSON."""
        self.set_status(status)
        self.finish(json.dumps(data))


class StreamsHandler(ControlHandler):
    """``/api/streams``: list (GET) and add (POST)."""

    body_limit = MAX_BODY_BYTES

    async def get(self) -> None:
        """Every stream."""
        streams = await self.answer(self.control().list_streams())
        self.write_json({"streams": [stream_json(s) for s in streams]})

    async def post(self) -> None:
        """Add a stream and start its reader; 201 with Location."""
        content_type = self.request.headers.get("Content-Type")
        feed, started = parse_new_stream(content_type, self.body)
        stats = await self.answer(self.control().add_stream(feed, started))
        logger.info("REST: stream %r added by %s", feed.name, self.client())
        self.set_header("Location", f"/api/streams/{quote(feed.name, safe='')}")
        self.write_json(stream_json(stats), status=201)


class StreamHandler(ControlHandler):
    """``/api/streams/{name}``: show (GET) and remove (DELETE)."""

    async def get(self, name: str) -> None:
        """One stream."""
        self.write_json(stream_json(await self.answer(self.control().get_stream(name))))

    async def delete(self, name: str) -> None:
        """Stop the reader, flush what it read, forget the stream; 204."""
        await self.answer(self.control().remove_stream(name))
        logger.info("REST: stream %r removed by %s", name, self.client())
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()


class StreamActionHandler(ControlHandler):
    """``/api/streams/{name}/stop`` and ``/start``: pause and resume."""

    async def post(self, name: str, action: str) -> None:
        """Stop or start the stream; 200 with its state."""
        control = self.control()
        change = control.start_stream(name) if action == "start" else control.stop_stream(name)
        stats = await self.answer(change)
        done = "started" if action == "start" else "stopped"
        logger.info("REST: stream %r %s by %s", name, done, self.client())
        self.write_json(stream_json(stats))


def routes(ctx: ApiContext) -> list[Route]:
    """The REST control routes."""
    kwargs: dict[str, Any] = {"ctx": ctx}
    return [
        (r"/api/streams/?", StreamsHandler, kwargs),
        (r"/api/streams/([^/]+)/(stop|start)", StreamActionHandler, kwargs),
        (r"/api/streams/([^/]+)", StreamHandler, kwargs),
    ]
