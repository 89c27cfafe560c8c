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
import tornado.ioloop
import tornado.netutil
import tornado.web

from tps.api.context import ApiContext

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


def make_app(ctx: ApiContext) -> tornado.web.Application:
    """A Tornado application over ``ctx``."""
    return tornado.web.Application(make_routes(ctx), compress_response=True)


def bind(host: str, port: int) -> list[socket.socket]:
    """Bind the listening sockets now, so a busy port fails start-up, not later."""
    return tornado.netutil.bind_sockets(port, address=host, reuse_port=False)


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
        server = tornado.httpserver.HTTPServer(make_app(self._ctx), xheaders=True)
        server.add_sockets(self._sockets)
        self._loop.add_callback(self._ready.set)
        try:
            self._loop.start()
        finally:
            server.stop()
            self._loop.close(all_fds=False)
