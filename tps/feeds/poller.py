"""One thread that waits on every feed socket at once.

With a thread per feed, each arriving frame wakes its own thread, and with hundreds of
slow feeds CPython spends most of its time handing the GIL from one woken thread to the
next (bench/scale.py: ~24% of a core for 200 feeds at 10 readings/s doing nothing but
receive). A single epoll thread instead wakes once for every socket that became
readable in the same instant, and a short pause after each round lets arrivals gather.

The stream reader actors keep everything else - connecting, backoff, state, stop,
failure - and only lend their socket to the poller while connected: the poller calls
the reader's ``on_readable`` when data is there and ``on_tick`` about twice a second
(so a silent server is noticed without any data arriving).
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

TICK_INTERVAL = 0.5
"""Seconds between ``on_tick`` calls to every registered reader."""
GATHER = 0.002
"""Seconds the poller pauses after a round, so frames arriving together share a wake."""


@dataclass(frozen=True, slots=True)
class _Handler:
    on_readable: Callable[[], None]
    on_tick: Callable[[], None]


class FeedPoller:
    """Runs readers' callbacks when their sockets are readable (one daemon thread)."""

    def __init__(self, gather: float = GATHER, tick_interval: float = TICK_INTERVAL) -> None:
        self._gather = gather
        self._tick_interval = tick_interval
        self._epoll = select.epoll()
        self._lock = threading.Lock()
        self._handlers: dict[int, _Handler] = {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tps-feed-poller", daemon=True)

    def start(self) -> FeedPoller:
        """Start the poller thread; returns self."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (registered sockets are left to their owners)."""
        self._stopped.set()
        self._thread.join(timeout)
        self._epoll.close()

    def register(self, fd: int, on_readable: Callable[[], None],
                 on_tick: Callable[[], None]) -> None:
        """Watch ``fd``; the callbacks run on the poller thread and must not block long."""
        with self._lock:
            self._handlers[fd] = _Handler(on_readable, on_tick)
            self._epoll.register(fd, select.EPOLLIN)

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd`` (call before closing it). Unknown fds are ignored."""
        with self._lock:
            # An already closed fd was dropped from the set by the kernel: nothing to do.
            if self._handlers.pop(fd, None) is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.unregister(fd)

    def watching(self) -> int:
        """Number of sockets watched (for tests)."""
        with self._lock:
            return len(self._handlers)

    def _run(self) -> None:
        next_tick = time.monotonic() + self._tick_interval
        while not self._stopped.is_set():
            try:
                events = self._epoll.poll(self._tick_interval / 2)
            except InterruptedError:
                continue
            except (OSError, ValueError):
                return  # closed by stop()
            for fd, _mask in events:
                handler = self._handlers.get(fd)
                if handler is not None:
                    self._call(handler.on_readable)
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + self._tick_interval
                with self._lock:
                    handlers = list(self._handlers.values())
                for handler in handlers:
                    self._call(handler.on_tick)
            if events and self._gather > 0:
                time.sleep(self._gather)

    @staticmethod
    def _call(callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            # A reader reports its own failures to its actor; this is a last resort so
            # one broken callback cannot stop every other feed.
            logger.exception("Feed poller callback %r failed; the poller carries on",
                             callback)
