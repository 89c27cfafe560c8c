"""Test helpers for the GraphQL API: a real Tornado server on a bound loopback socket,
a small HTTP client, and a TCP proxy that can stall one InfluxDB connection.

The server runs its IO loop on its own thread, as the HTTP frontend actor does in the
service, so tests talk to it over real sockets from the test thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http.client
import json
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web

from tps.actors.board import StatsBoard
from tps.actors.query import QueryPool
from tps.actors.stats import StreamStats
from tps.api.context import ApiContext, TokenAuth
from tps.api.graphql.handler import routes
from tps.config import Settings
from tps.live import LiveHub
from tps.store.influx import InfluxStore

TOKEN = "test-control-token"


class RecordingMetrics:
    """Collects ``observe_query`` calls (the real Metrics class has the same method)."""

    def __init__(self) -> None:
        self.observed: list[tuple[str, float]] = []

    def observe_query(self, operation: str, seconds: float) -> None:
        self.observed.append((operation, seconds))

    def render(self) -> bytes:
        return b""


class ApiServer:
    """/graphql (plus ``extra`` routes) served on 127.0.0.1 from a private IO-loop thread."""

    def __init__(
        self, ctx: ApiContext, extra: list[tuple[str, type, dict[str, Any]]] | None = None
    ) -> None:
        self.ctx = ctx
        self._extra = extra or []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self._thread: threading.Thread | None = None
        self._server: tornado.httpserver.HTTPServer | None = None

    def start(self) -> ApiServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            app = tornado.web.Application([*routes(self.ctx), *self._extra])
            sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
            self.port = sockets[0].getsockname()[1]
            self._server = tornado.httpserver.HTTPServer(app)
            self._server.add_sockets(sockets)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="test-api-loop", daemon=True)
        self._thread.start()
        assert ready.wait(10), "API server did not start"
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/graphql"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def call(self, fn: Callable[[], Any], timeout: float = 10) -> Any:
        """Run ``fn`` on the server's loop and return its result."""
        assert self.loop is not None
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def wrapped() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:  # noqa: BLE001
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(wrapped)
        return done.result(timeout)

    def stop(self) -> None:
        loop = self.loop
        if loop is None:
            return

        def shutdown() -> None:
            if self._server is not None:
                self._server.stop()
            for close in self.ctx.on_close:
                close()
            loop.stop()

        loop.call_soon_threadsafe(shutdown)
        if self._thread is not None:
            self._thread.join(10)
        self.loop = None


class Client:
    """A keep-alive HTTP client for /graphql (one connection, used by one thread)."""

    def __init__(self, port: int, timeout: float = 30) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def request(
        self, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        self._conn.request(method, path, body=body, headers=headers or {})
        response = self._conn.getresponse()
        data = response.read()
        ctype = response.getheader("Content-Type", "")
        parsed: Any = json.loads(data) if "json" in ctype else data.decode()
        return response.status, parsed

    def post(
        self, query: str, variables: dict[str, Any] | None = None,
        token: str | None = None, operation_name: str | None = None,
    ) -> tuple[int, Any]:
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = variables
        if operation_name is not None:
            body["operationName"] = operation_name
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.request("POST", "/graphql", json.dumps(body).encode(), headers)

    def close(self) -> None:
        self._conn.close()


def make_context(
    store_url: str,
    db: str,
    *,
    hub: LiveHub | None,
    pool_size: int = 4,
    pool_timeout: float = 15.0,
    subscriber_queue: int = 1000,
    answer_ttl: float = 0.0,
    streams: Sequence[str] = (),
) -> ApiContext:
    """An ApiContext over a real InfluxDB (through ``store_url``) with a started pool.

    ``streams`` are configured streams (on a stats board, as the supervisor registers
    them): GraphQL knows them before their first reading.
    """
    settings = Settings(influx_url=store_url, influx_db=db, query_pool_size=pool_size,
                        subscriber_queue=subscriber_queue)

    def factory() -> InfluxStore:
        return InfluxStore(store_url, db, timeout=30)

    pool = QueryPool(factory, pool_size, timeout=pool_timeout, answer_ttl=answer_ttl)
    pool.start()
    board = None
    if streams:
        board = StatsBoard()
        for name in streams:
            board.add_stream(StreamStats(name, f"ws://127.0.0.1:1/{name}", "auto",
                                         "subscription { temperature }"))
    ctx = ApiContext(settings=settings, auth=TokenAuth(TOKEN), queries=pool,
                     metrics=RecordingMetrics(), hub=hub, board=board)
    ctx.on_close.append(pool.stop)
    return ctx


class StallingProxy:
    """A loopback TCP proxy to ``target`` that holds back a request containing a marker.

    Once ``stall_on`` is set, the first client-to-server data containing that byte
    string is not forwarded until :meth:`release`: that one InfluxDB connection is
    stuck exactly like a server that stopped answering, while every other connection
    through the proxy flows normally.
    """

    def __init__(self, target_port: int, port: int = 0) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self.stall_on: bytes | None = None
        self.stalled = threading.Event()
        self._release = threading.Event()
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def release(self) -> None:
        self._release.set()

    def close(self) -> None:
        self._closed = True
        self._release.set()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                # Forward each chunk at once: Nagle + delayed ACK would add 40 ms.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        tail = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if outbound and self.stall_on is not None and not self.stalled.is_set():
                    tail = (tail + data)[-8192:]
                    if self.stall_on in tail:
                        self.stalled.set()
                        self._release.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

