"""A feed server whose values the test controls: ``push(31.5)`` sends one reading.

A Tornado websocket server on its own IO-loop thread, on a free loopback port. It picks
no subprotocol, so a TPS reader speaks plain JSON to it (``{"value": 31.5}`` frames),
and it sends nothing until told to. Used by the alarm acceptance tests and
``bench/alarms.py``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket


class _Socket(tornado.websocket.WebSocketHandler):
    def initialize(self, feed: ControlledFeed) -> None:
        self.feed = feed

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return None

    def open(self, *args: str, **kwargs: str) -> None:
        self.feed._clients.add(self)

    def on_message(self, message: str | bytes) -> None:
        pass

    def on_close(self) -> None:
        self.feed._clients.discard(self)


class ControlledFeed:
    """Plain-JSON websocket feed at ``url``; values go out only when pushed."""

    def __init__(self) -> None:
        self._clients: set[_Socket] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: tornado.httpserver.HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.sent = 0

    def start(self) -> ControlledFeed:
        """Listen on a free loopback port (returns self)."""
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            app = tornado.web.Application([(r"/graphql", _Socket, {"feed": self})])
            sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
            self.port = int(sockets[0].getsockname()[1])
            self._server = tornado.httpserver.HTTPServer(app)
            self._server.add_sockets(sockets)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="controlled-feed", daemon=True)
        self._thread.start()
        assert ready.wait(10), "controlled feed did not start"
        return self

    @property
    def url(self) -> str:
        """ws:// URL for a TPS feed."""
        return f"ws://127.0.0.1:{self.port}/graphql"

    def clients(self) -> int:
        """Connected readers."""
        return len(self._clients)

    def push(self, *values: float) -> None:
        """Send each value as one frame to every connected client, in order."""
        assert self._loop is not None
        done = threading.Event()

        def send() -> None:
            for value in values:
                frame = json.dumps({"value": value})
                for client in list(self._clients):
                    client.write_message(frame)
                self.sent += 1
            done.set()

        self._loop.call_soon_threadsafe(send)
        assert done.wait(10), "controlled feed did not send"

    def wait_connected(self, timeout: float = 20.0) -> None:
        """Block until a reader is connected."""
        deadline = time.monotonic() + timeout
        while not self._clients:
            if time.monotonic() > deadline:
                raise AssertionError(f"no reader connected to {self.url} in {timeout} s")
            time.sleep(0.02)

    def close(self) -> None:
        """Close every connection and stop the loop."""
        loop = self._loop
        if loop is None:
            return

        def shutdown() -> None:
            if self._server is not None:
                self._server.stop()
            for client in list(self._clients):
                client.close()
            loop.call_later(0.05, loop.stop)

        loop.call_soon_threadsafe(shutdown)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None
