"""The live hub: newest readings in memory, and fan-out to in-process listeners.

Readers publish every accepted batch here (from their own threads) at the moment of
arrival, so ``currentTemperature`` and GraphQL subscriptions see a reading long before
the writer's next flush. Listeners are called on the publishing thread and must only
hand the batch over (e.g. ``io_loop.add_callback``), never do work there.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence

from tps.model import Reading

logger = logging.getLogger(__name__)

Listener = Callable[[Sequence[Reading]], None]


class LiveHub:
    """Thread-safe newest-value cache with a short per-stream history and listeners."""

    def __init__(self, history: int = 1024) -> None:
        self._lock = threading.Lock()
        self._history = history
        self._latest: dict[str, Reading] = {}
        self._recent: dict[str, deque[Reading]] = {}
        self._listeners: list[Listener] = []

    def publish(self, readings: Sequence[Reading]) -> None:
        """Record ``readings`` (one stream's batch, oldest first) and notify listeners."""
        if not readings:
            return
        with self._lock:
            for reading in readings:
                recent = self._recent.get(reading.stream)
                if recent is None:
                    recent = self._recent[reading.stream] = deque(maxlen=self._history)
                recent.append(reading)
                self._latest[reading.stream] = reading
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(readings)
            except Exception:
                logger.exception("Live listener %r failed; it stays subscribed", listener)

    def latest(self, stream: str | None = None) -> Reading | None:
        """The newest reading of ``stream`` (or of any stream), or None."""
        with self._lock:
            if stream is not None:
                return self._latest.get(stream)
            return max(self._latest.values(), key=lambda r: r.time_ns, default=None)

    def recent(self, stream: str, count: int) -> list[Reading]:
        """Up to ``count`` newest readings of ``stream``, oldest first."""
        with self._lock:
            recent = self._recent.get(stream)
            if not recent:
                return []
            return list(recent)[-count:]

    def forget(self, stream: str) -> None:
        """Drop what is held for a removed stream."""
        with self._lock:
            self._latest.pop(stream, None)
            self._recent.pop(stream, None)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; returns the function that removes it."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe
