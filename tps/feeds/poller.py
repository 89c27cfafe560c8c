"""One thread that waits on every feed socket at once.

With a thread per feed, each arriving frame wakes its own thread, and with hundreds of
slow feeds CPython spends most of its time handing the GIL from one woken thread to the
next (bench/scale.py: ~24% of a core for 200 feeds at 10 readings/s doing nothing but
receive). A single epoll thread instead wakes once for every socket that became
readable in the same instant, and a short pause after each round lets arrivals gather.

The stream reader actors keep everything else - connecting, backoff, state, stop,
failure - and only *lend* their connection to the poller while connected: between
:meth:`FeedPoller.register` and :meth:`FeedPoller.unregister` the poller thread calls
the reader's ``on_readable`` when data is there and ``on_tick`` about twice a second
(so a silent server is noticed without any data arriving), and nothing else touches
that connection. ``unregister`` ends the loan: when it returns, the poller thread is
not inside either callback and never calls them again, so the owner may close the
socket. A callback may also end its own loan (the connection is lost) by calling
``unregister`` itself; that takes effect at once.
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
import time
from collections.abc import Callable

from tps.ratelimit import RateLimitedLog

logger = logging.getLogger(__name__)

TICK_INTERVAL = 0.5
"""Seconds between ``on_tick`` calls to every registered reader."""
GATHER = 0.002
"""Seconds the poller pauses after a round, so frames arriving together share a wake."""


class Registration:
    """One socket lent to the poller, and what to call for it (see :meth:`FeedPoller.register`)."""

    __slots__ = ("fd", "on_readable", "on_tick")

    def __init__(self, fd: int, on_readable: Callable[[], None],
                 on_tick: Callable[[], None]) -> None:
        self.fd = fd
        self.on_readable = on_readable
        self.on_tick = on_tick


class FeedPoller:
    """Runs readers' callbacks when their sockets are readable (one daemon thread).

    Its lock guards the registrations and which one's callback runs right now; it is
    never held while a callback runs, so callbacks may take any other lock.
    """

    def __init__(self, gather: float = GATHER, tick_interval: float = TICK_INTERVAL) -> None:
        self._gather = gather
        self._tick_interval = tick_interval
        self._epoll = select.epoll()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._by_fd: dict[int, Registration] = {}
        self._running: Registration | None = None  # whose callback the thread is in
        self._waiters = 0
        self._failures = RateLimitedLog()
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

    def register(self, registration: Registration) -> Registration:
        """Watch ``registration.fd``; its callbacks run on the poller thread (perhaps
        before this returns) and must not block long. Returns ``registration``.

        Until :meth:`unregister`, the poller thread owns the connection behind the fd.
        """
        with self._lock:
            self._by_fd[registration.fd] = registration
            self._epoll.register(registration.fd, select.EPOLLIN)
        return registration

    def unregister(self, registration: Registration) -> None:
        """Stop watching; idempotent. Call before closing the socket.

        From any other thread this returns only once the poller thread is outside the
        registration's callbacks, which it then never calls again. From the poller
        thread (a callback giving its connection back) it takes effect at once.
        """
        with self._lock:
            if self._by_fd.get(registration.fd) is registration:
                del self._by_fd[registration.fd]
                # The kernel has already dropped a closed fd from the set.
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.unregister(registration.fd)
            if threading.get_ident() == self._thread.ident:
                return
            self._waiters += 1
            try:
                while self._running is registration:
                    self._idle.wait()
            finally:
                self._waiters -= 1

    def watching(self) -> int:
        """Number of sockets watched (for tests)."""
        with self._lock:
            return len(self._by_fd)

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
                self._call(fd, None, readable=True)
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + self._tick_interval
                with self._lock:
                    registrations = list(self._by_fd.values())
                for registration in registrations:
                    self._call(registration.fd, registration, readable=False)
            if events and self._gather > 0:
                time.sleep(self._gather)

    def _call(self, fd: int, expected: Registration | None, *, readable: bool) -> None:
        """Run one callback of the registration of ``fd``, if it is still registered."""
        with self._lock:
            registration = self._by_fd.get(fd)
            if registration is None or (expected is not None and registration is not expected):
                return
            self._running = registration
        callback = registration.on_readable if readable else registration.on_tick
        try:
            callback()
        except Exception:
            # A reader reports its own failures to its actor; this is a last resort so
            # one broken callback cannot stop every other feed.
            if self._failures.allow("callback") is not None:
                logger.exception("Feed poller callback %r failed; the poller carries on",
                                 callback)
        finally:
            with self._lock:
                self._running = None
                if self._waiters:
                    self._idle.notify_all()
