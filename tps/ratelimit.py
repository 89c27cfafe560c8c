"""Rate-limited logging: at most one line per kind of repeated event per interval.

A feed that sends a bad frame ten thousand times a second, a store that stays down, a
full disk: each would flood the log with the same line. Every such warning in TPS goes
through one :class:`RateLimitedLog`, which lets the first event of a kind through, then
at most one per ``interval`` seconds, and says how many it held back in between.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 10.0
"""Seconds between two log lines about the same kind of event."""


class RateLimitedLog:
    """Decides whether a repeated event may be logged: at most once per ``interval``
    seconds per key, reporting how many were suppressed in between.

    Thread-safe: its own lock guards only its own two dicts and is never held while
    logging, so any thread may use it while holding any other lock.
    """

    def __init__(self, interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str = "", now: float | None = None) -> int | None:
        """None if this event should be suppressed; else the count suppressed since the
        last logged one (0 for the first)."""
        now = self._clock() if now is None else now
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._suppressed.pop(key, 0)

    def reset(self, key: str = "") -> None:
        """Forget ``key``: its next event is logged at once (e.g. a new outage)."""
        with self._lock:
            self._last.pop(key, None)
            self._suppressed.pop(key, None)

    def log(self, log: logging.Logger, level: int, key: str, message: str,
            *args: object) -> bool:
        """Log ``message % args`` at ``level`` unless ``key`` was logged within the
        interval; a line after suppressed ones says how many. True if it was logged."""
        suppressed = self.allow(key)
        if suppressed is None:
            return False
        if suppressed:
            message += " (%d more like it suppressed)"
            args = (*args, suppressed)
        log.log(level, message, *args)
        return True
