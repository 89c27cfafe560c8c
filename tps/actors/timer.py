"""Delayed and periodic messages to actors.

Actors must not sleep (a sleeping actor cannot answer its mailbox), so anything that
should happen later is a message told later by a daemon timer thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pykka

logger = logging.getLogger(__name__)


def tell_later(delay: float, ref: pykka.ActorRef[Any], message: Any) -> Callable[[], None]:
    """Tell ``message`` to ``ref`` after ``delay`` seconds; returns a cancel function.

    A dead actor at delivery time is not an error: the message is dropped.
    """

    def deliver() -> None:
        try:
            ref.tell(message)
        except pykka.ActorDeadError:
            logger.debug("Delayed %r not delivered: %s is stopped", message, ref)

    timer = threading.Timer(delay, deliver)
    timer.daemon = True
    timer.start()
    return timer.cancel


class Ticker:
    """Tells ``message`` to ``ref`` every ``interval`` seconds until stopped or dead."""

    def __init__(self, interval: float, ref: pykka.ActorRef[Any], message: Any) -> None:
        self._interval = interval
        self._ref = ref
        self._message = message
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tick-{ref}", daemon=True)

    def start(self) -> Ticker:
        """Start ticking; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop ticking (idempotent, does not wait)."""
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self._ref.tell(self._message)
            except pykka.ActorDeadError:
                return
