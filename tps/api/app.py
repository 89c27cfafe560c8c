"""The Tornado application and the HTTP frontend actor.

As in Mopidy, the HTTP frontend is an actor whose only job is to run Tornado's IO loop
on its own thread; everything else reaches the loop through ``io_loop.add_callback``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

import pykka
import tornado.httpserver
import tornado.httputil
import tornado.ioloop
import tornado.netutil
import tornado.routing
import tornado.web

from tps.api.context import ApiContext
from tps.api.errors import ApiError, JsonErrorsMixin
from tps.api.requests import AllowedHosts

logger = logging.getLogger(__name__)

Route = tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]


def make_routes(ctx: ApiContext) -> list[Route]:
    """The route table for the role in ``ctx.settings.role``.

    The ``ingest`` role serves the control plane, health and metrics but no GraphQL;
    the ``api`` and ``all`` roles serve everything.
    """
    from tps.api import health, metrics, openapi, rest

    routes: list[Route] = []
    routes += health.routes(ctx)
    routes += metrics.routes(ctx)
    routes += rest.routes(ctx)
    if ctx.alarms is not None:
        from tps.api import alarms

        routes += alarms.routes(ctx, ctx.alarms)
    routes += openapi.routes(ctx)
    if ctx.settings.role != "ingest":
        from tps.api import ui
        from tps.api.graphql import handler

        routes += handler.routes(ctx)
        routes += ui.routes(ctx)
    return routes


class MisdirectedHandler(JsonErrorsMixin):
    """Answers a request whose ``Host`` is not in ``TPS_ALLOWED_HOSTS`` with 421."""

    def initialize(self, hosts: AllowedHosts) -> None:
        """Receive the allowed hosts from the route table."""
        self.hosts = hosts

    def prepare(self) -> None:
        """421 for a foreign host; 404 for an unknown path on an allowed one."""
        if self.hosts.allows(self.request.host_name):
            raise ApiError(404, f"no such resource: {self.request.path}")
        raise ApiError(421, f"host {self.request.host_name!r} is not served here "
                       "(TPS_ALLOWED_HOSTS)", code="misdirected")


class _HostIn(tornado.routing.Matcher):
    """Matches requests whose ``Host`` is allowed (see :class:`AllowedHosts`)."""

    def __init__(self, hosts: AllowedHosts) -> None:
        self.hosts = hosts

    def match(self, request: tornado.httputil.HTTPServerRequest) -> dict[str, Any] | None:
        """Match (with no arguments) when the host is allowed."""
        return {} if self.hosts.allows(request.host_name) else None


def make_app(ctx: ApiContext) -> tornado.web.Application:
    """A Tornado application over ``ctx``.

    With ``TPS_ALLOWED_HOSTS`` set, only ``/health`` and ``/ready`` (which probes reach
    by address) answer any ``Host``; everything else answers allowed hosts only.
    """
    settings = ctx.settings
    options: dict[str, Any] = {
        "compress_response": True,
        "websocket_max_message_size": settings.max_request_bytes,
    }
    routes = make_routes(ctx)
    hosts = AllowedHosts(settings.allowed_hosts)
    if not hosts.restricted:
        return tornado.web.Application(routes, **options)
    open_paths = {"/health", "/ready"}
    rules: list[Any] = [route for route in routes if route[0] in open_paths]
    rules.append(tornado.routing.Rule(
        _HostIn(hosts), [route for route in routes if route[0] not in open_paths]))
    rules.append((r".*", MisdirectedHandler, {"hosts": hosts}))
    return tornado.web.Application(rules, **options)


def make_server(ctx: ApiContext) -> tornado.httpserver.HTTPServer:
    """The HTTP server over :func:`make_app`, with the request limits of the settings.

    ``X-Forwarded-For`` is never applied by Tornado (``xheaders``): it names a client
    only when ``TPS_TRUSTED_PROXIES`` trusts the peer (:class:`TrustedProxies`). A client
    has ``TPS_HTTP_HEADER_TIMEOUT`` for its headers (a slow-header socket is closed)
    and ``TPS_HTTP_BODY_TIMEOUT`` for a body of at most ``TPS_MAX_REQUEST_BYTES``;
    control calls check the token and lower the limit before any body is read.
    """
    settings = ctx.settings
    return tornado.httpserver.HTTPServer(
        make_app(ctx),
        xheaders=False,
        idle_connection_timeout=settings.http_header_timeout,
        body_timeout=settings.http_body_timeout,
        max_body_size=settings.max_request_bytes,
    )


LISTEN_BACKLOG = 1024


def bind(host: str, port: int) -> list[socket.socket]:
    """Bind the listening sockets now, so a busy port fails start-up, not later."""
    # Tornado's default backlog (128) makes the 129th of a burst of connections wait
    # for a SYN retry (about 1 s); 1024 absorbs bursts of clients reconnecting at once.
    return tornado.netutil.bind_sockets(port, address=host, reuse_port=False,
                                        backlog=LISTEN_BACKLOG)


class HttpFrontend(pykka.ThreadingActor):
    """Runs the Tornado IO loop serving ``ctx`` on already-bound ``sockets``."""

    def __init__(self, ctx: ApiContext, sockets: list[socket.socket]) -> None:
        super().__init__()
        self._ctx = ctx
        self._sockets = sockets
        self._loop: tornado.ioloop.IOLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tps-http", daemon=True)

    def on_start(self) -> None:
        """Start the IO loop thread and wait until it serves."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("HTTP server did not start within 10 s")
        ports = sorted({s.getsockname()[1] for s in self._sockets})
        logger.info("HTTP API listening on %s", ", ".join(
            f"http://{self._ctx.settings.http_host}:{port}/" for port in ports))

    def on_stop(self) -> None:
        """Stop the IO loop and wait for its thread."""
        loop = self._loop
        if loop is not None:
            loop.add_callback(loop.stop)
        self._thread.join(5)
        for close in self._ctx.on_close:
            close()
        self._ctx.waiter.close()
        logger.info("HTTP API stopped")

    def io_loop(self) -> tornado.ioloop.IOLoop | None:
        """The running IO loop (for ``add_callback`` from other threads)."""
        return self._loop

    def _run(self) -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        self._loop = tornado.ioloop.IOLoop.current()
        server = make_server(self._ctx)
        server.add_sockets(self._sockets)
        self._loop.add_callback(self._ready.set)
        try:
            self._loop.start()
        finally:
            server.stop()
            self._loop.close(all_fds=False)
