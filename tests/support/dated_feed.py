"""A plain-JSON feed whose first frames are hostile (issue 14).

``python -m tests.support.dated_feed FRAME_JSON [COUNT]`` listens on a free loopback
port, prints ``PORT <n>``, and sends every connection FRAME_JSON (e.g.
``{"time": 1e30, "value": 99.0}``) COUNT times (default 1), then ``{"value": n}`` (no
time) every 50 ms until the connection closes.
"""

from __future__ import annotations

import json
import sys

import tornado.httpserver
import tornado.ioloop
import tornado.web
import tornado.websocket
from tornado.netutil import bind_sockets


class DatedFeed(tornado.websocket.WebSocketHandler):
    """One connection: the dated frame, then undated readings."""

    first = "{}"
    count = 1

    def open(self, *args: str, **kwargs: str) -> None:
        """Send the hostile frames and start the ticks."""
        for _ in range(self.count):
            self.write_message(self.first)
        self.count = 0
        self.ticker = tornado.ioloop.PeriodicCallback(self.tick, 50)
        self.ticker.start()

    def tick(self) -> None:
        """One undated reading."""
        self.count += 1
        try:
            self.write_message(json.dumps({"value": float(self.count)}))
        except tornado.websocket.WebSocketClosedError:
            self.ticker.stop()

    def on_close(self) -> None:
        """Stop ticking."""
        self.ticker.stop()


def main() -> None:
    DatedFeed.first = json.dumps(json.loads(sys.argv[1]))
    DatedFeed.count = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    sockets = bind_sockets(0, "127.0.0.1")
    app = tornado.web.Application([(r"/.*", DatedFeed)])
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    print(f"PORT {sockets[0].getsockname()[1]}", flush=True)
    tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
