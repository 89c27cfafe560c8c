"""The one way tests wait for something to happen.

Tests wait for the event they need, never for a fixed time: ``wait_until`` polls a
condition and fails the test with a description of what did not happen. Before a
*negative* assertion ("nothing else was started"), do not sleep: make a synchronous
call through the same actor's mailbox (``proxy.some_method().get()``); a pykka
mailbox is FIFO, so every message sent before it has then been handled.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DEFAULT_STEP = 0.01


def wait_until(condition: Callable[[], object], timeout: float = 10.0,
               what: str = "the condition", step: float = DEFAULT_STEP) -> float:
    """Poll ``condition`` until it is truthy; return the seconds it took.

    Fails the test (AssertionError naming ``what``) after ``timeout`` seconds.
    """
    start = time.monotonic()
    deadline = start + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - start


def eventually(condition: Callable[[], object], timeout: float = 10.0,
               step: float = DEFAULT_STEP) -> bool:
    """Poll ``condition`` until it is truthy or ``timeout`` passes; its last value as bool.

    For the rare test that must report rather than fail (a fault test collecting
    several observations before asserting on all of them).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())
