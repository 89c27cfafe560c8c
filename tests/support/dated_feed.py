"""A plain-JSON feed whose first frame carries a hostile time (issue 14).

``python -m tests.support.dated_feed TIME_JSON`` listens on a free loopback port, prints
``PORT <n>``, and sends every connection ``{"time": TIME, "value": 99.0}`` and then
``{"value": n}`` (no time) every 50 ms until the connection closes.
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

    first = "null"

    def open(self, *args: str, **kwargs: str) -> None:
        """Send the dated frame and start the ticks."""
        self.write_message(json.dumps({"time": json.loads(self.first), "value": 99.0}))
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
    DatedFeed.first = sys.argv[1]
    sockets = bind_sockets(0, "127.0.0.1")
    app = tornado.web.Application([(r"/.*", DatedFeed)])
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    print(f"PORT {sockets[0].getsockname()[1]}", flush=True)
    tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
