"""Exponential backoff with jitter - a plain policy object, no threads, no sleeping.

Readers use it between reconnects and the writer between failed writes: the caller asks
for the next delay and schedules a message that far ahead (``tps.actors.timer``).
"""

from __future__ import annotations

import random


class Backoff:
    """Delays ``initial``, ``initial*factor``, ... capped at ``cap``, each spread by
    +/- ``jitter`` (a fraction) so that many clients that failed together do not all
    retry in the same instant. ``reset()`` after a healthy period starts over.
    """

    def __init__(
        self,
        initial: float = 0.5,
        cap: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or cap < initial or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("need 0 < initial <= cap, factor >= 1 and 0 <= jitter < 1")
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self.jitter = jitter
        self.attempts = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay before the next attempt (seconds); counts the attempt."""
        base = min(self.cap, self.initial * self.factor ** min(self.attempts, 64))
        self.attempts += 1
        spread = base * self.jitter * (2 * self._rng.random() - 1)
        return min(self.cap, max(0.0, base + spread))

    def reset(self) -> None:
        """Start again from ``initial`` (call after a healthy period)."""
        self.attempts = 0
