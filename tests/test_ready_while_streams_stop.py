"""/ready never waits for the control plane: stopping 50 streams leaves it fast.

The readers here are slow to stop (closing each one takes ``STOP_TAKES`` seconds, as
a reader closing a socket to an unresponsive server may), so a supervisor that waited
for its readers inside its mailbox would hold every health check behind the stops.
Everything else is real: the supervisor, the writer and the query pool on the
embedded store, and the HTTP application served by the HTTP frontend actor.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pykka
import pytest

from tests.support.wait import wait_until
from tps.actors.board import StatsBoard
from tps.actors.messages import ReadingSink
from tps.actors.query import QueryPool
from tps.actors.stats import StreamState, StreamStats, WriterStats
from tps.actors.supervisor import Supervisor, supervisor_proxy
from tps.actors.writer import WriterHandle
from tps.api.app import HttpFrontend, bind
from tps.api.context import ApiContext, TokenAuth
from tps.api.metrics import Metrics
from tps.config.settings import FeedConfig, Settings
from tps.store import open_store

STREAMS = 50
STOP_TAKES = 0.3
"""Seconds each reader spends in ``on_stop`` (3x the /ready bound)."""
READY_BOUND = 0.1
POLL_EVERY = 0.05
TOKEN = "ready-test-token-0123456789abcdef"


class SlowToStopReader(pykka.ThreadingActor):
    """Subscribes at once; closing takes ``STOP_TAKES`` seconds, then reports it."""

    def __init__(self, stats: StreamStats, on_stopped: Callable[[], None] | None) -> None:
        super().__init__()
        self.stats = stats
        self.on_stopped = on_stopped

    def on_start(self) -> None:
        self.stats.state = StreamState.SUBSCRIBED

    def on_stop(self) -> None:
        time.sleep(STOP_TAKES)  # a socket that takes its time to close
        self.stats.state = StreamState.STOPPED
        if self.on_stopped is not None:
            self.on_stopped()


def slow_reader(feed: FeedConfig, sink: ReadingSink, stats: StreamStats,
                **kwargs: Any) -> pykka.ActorRef[Any]:
    return SlowToStopReader.start(stats, kwargs.get("on_stopped"))


class Stack:
    """Supervisor, writer and query pool on SQLite, served by the real HTTP frontend."""

    def __init__(self, data_dir: Path) -> None:
        feeds = tuple(FeedConfig(f"s{i}", f"ws://127.0.0.1:9/s{i}") for i in range(STREAMS))
        settings = Settings(feeds=feeds, data_dir=data_dir, http_port=0, control_token=TOKEN,
                            query_pool_size=2, shutdown_timeout=5.0)

        def store() -> Any:
            return open_store(settings)

        writer_stats = WriterStats()
        self.writer = WriterHandle(settings, store, writer_stats)
        self.queries = QueryPool(store, 2, timeout=5.0)
        self.board = StatsBoard(writer_stats)
        self.supervisor = Supervisor.start(
            settings, sink=self.writer.submit, writer=self.writer, queries=self.queries,
            board=self.board, reader_factory=slow_reader)
        ctx = ApiContext(settings=settings, auth=TokenAuth(TOKEN), queries=self.queries,
                         metrics=Metrics.from_board(self.board),
                         supervisor=supervisor_proxy(self.supervisor), board=self.board)
        sockets = bind("127.0.0.1", 0)
        self.port = int(sockets[0].getsockname()[1])
        self.http = HttpFrontend.start(ctx, sockets)

    def close(self) -> None:
        self.http.stop(timeout=10)
        self.supervisor.proxy().shutdown(5.0).get(timeout=60)
        self.supervisor.stop(timeout=10)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    yield s
    s.close()


class ReadyPoller:
    """GETs /ready every ``POLL_EVERY`` seconds on one keep-alive connection."""

    def __init__(self, port: int) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self._done = threading.Event()
        self.answers: list[tuple[float, float, int]] = []  # (sent at, seconds, status)
        self._thread = threading.Thread(target=self._run, name="ready-poller", daemon=True)

    def __enter__(self) -> ReadyPoller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join(30)
        self._conn.close()

    def _run(self) -> None:
        while not self._done.is_set():
            sent = time.monotonic()
            self._conn.request("GET", "/ready")
            response = self._conn.getresponse()
            response.read()
            self.answers.append((sent, time.monotonic() - sent, response.status))
            self._done.wait(max(0.0, POLL_EVERY - (time.monotonic() - sent)))


def stop_over_rest(port: int, name: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", f"/api/streams/{name}/stop",
                     headers={"Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_ready_answers_within_100_ms_while_50_slow_streams_are_stopped(stack: Stack) -> None:
    wait_until(lambda: len(stack.board.streams()) == STREAMS and all(
        s.state == StreamState.SUBSCRIBED for s in stack.board.streams()),
        what="every stream subscribed")
    names = [s.name for s in stack.board.streams()]
    with ReadyPoller(stack.port) as poller:
        wait_until(lambda: len(poller.answers) >= 2, what="/ready answering")
        first_stop = time.monotonic()
        with ThreadPoolExecutor(max_workers=10) as clients:
            statuses = list(clients.map(lambda name: stop_over_rest(stack.port, name), names))
        wait_until(lambda: all(s.state == StreamState.STOPPED for s in stack.board.streams()),
                   timeout=60, what="every reader stopped")
        last_stop = time.monotonic()
        wait_until(lambda: any(sent > last_stop for sent, _, _ in poller.answers),
                   what="a /ready answer after the last stop")
    assert statuses == [200] * STREAMS
    during = [(took, status) for sent, took, status in poller.answers
              if first_stop <= sent <= last_stop]
    # The stops overlap many polls, so /ready was asked while they were in progress.
    assert len(during) >= 5, f"only {len(during)} /ready calls while stopping"
    slowest = max(took for took, _ in during)
    assert slowest < READY_BOUND, f"a /ready call took {slowest * 1000:.0f} ms"
    assert {status for _, status in during} == {200}
