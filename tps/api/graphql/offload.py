"""Big GraphQL answers are built off the IO loop, and serialized in small pieces.

Completing and serializing 100,000 readings is about a second of Python: on the IO
loop that is a second in which ``/ready`` and every other request wait. So a request
whose worst case (:mod:`tps.api.graphql.budget`) is large runs on one of a few
:class:`HeavyRequests` threads, each with an asyncio loop of its own, and the answer
is turned into JSON by :func:`dump_chunks` a few hundred rows per ``json.dumps`` call.
Both matter: Python code on another thread hands the interpreter lock back every few
milliseconds, but one ``json.dumps`` of a 20 MB answer is a single C call that holds
it throughout. The HTTP handler then writes the pieces one by one (each flushed, and
compressed, on its own), so the loop is never held for long by one answer either.

At most ``workers`` such requests build at once (the others wait their turn), which
bounds the memory big answers can take; once one has been sent, freed memory is handed
back to the operating system (:meth:`HeavyRequests.release_soon`).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

CHUNK_ITEMS = 256
"""List items (rows) serialized per ``json.dumps`` call."""
RELEASE_DELAY = 0.5
"""Seconds after a big answer before freed memory is handed back to the system."""


def dump_chunks(value: Any, max_items: int = CHUNK_ITEMS) -> list[str]:
    """``json.dumps(value, separators=(",", ":"))`` as a list of pieces whose join is
    that text; lists and objects longer than ``max_items`` are cut into pieces of at
    most ``max_items`` items, so no single C call serializes a large answer."""
    return list(_chunks(value, max_items))


def _big(value: Any, max_items: int) -> bool:
    """True when ``value`` holds a list or object longer than ``max_items`` anywhere."""
    if isinstance(value, list):
        return len(value) > max_items or any(_big(item, max_items) for item in value)
    if isinstance(value, dict):
        return len(value) > max_items or any(_big(item, max_items) for item in value.values())
    return False


def _chunks(value: Any, max_items: int) -> Iterator[str]:
    if isinstance(value, list) and _big(value, max_items):
        yield "["
        for start in range(0, len(value), max_items):
            if start:
                yield ","
            part = value[start:start + max_items]
            if any(_big(item, max_items) for item in part):
                for index, item in enumerate(part):
                    if index:
                        yield ","
                    yield from _chunks(item, max_items)
            elif part:
                yield _dumps(part)[1:-1]
        yield "]"
    elif isinstance(value, dict) and _big(value, max_items):
        yield "{"
        for index, (key, item) in enumerate(value.items()):
            yield ("," if index else "") + _dumps(str(key)) + ":"
            yield from _chunks(item, max_items)
        yield "}"
    else:
        yield _dumps(value)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def release_memory() -> None:
    """Return freed heap memory to the operating system (glibc's ``malloc_trim``; a
    no-op elsewhere). Without it, the memory of one big answer stays in the process."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class HeavyRequests:
    """``workers`` threads, each running an asyncio loop, for requests too big for the
    IO loop. :meth:`run` is awaited on the IO loop; at most ``workers`` run at once."""

    def __init__(self, workers: int = 2) -> None:
        self._workers = workers
        self._loops: list[asyncio.AbstractEventLoop] = []
        self._threads: list[threading.Thread] = []
        self._next = 0
        self._slots: asyncio.Semaphore | None = None
        self._lock = threading.Lock()
        self._release_pending = False

    def _start(self) -> None:
        with self._lock:
            if self._loops:
                return
            for index in range(self._workers):
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=_serve, args=(loop,), daemon=True,
                                          name=f"tps-graphql-heavy-{index}")
                thread.start()
                self._loops.append(loop)
                self._threads.append(thread)

    async def run(self, make: Callable[[], Awaitable[T]]) -> T:
        """The result of the coroutine ``make()`` creates, run on a worker's loop.

        ``make`` is called on the worker's thread (its coroutine belongs to that loop).
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._workers)
        async with self._slots:
            self._start()
            loop = self._loops[self._next % len(self._loops)]
            self._next += 1

            done = asyncio.run_coroutine_threadsafe(_call(make), loop)
            return await asyncio.wrap_future(done)

    def release_soon(self, delay: float = RELEASE_DELAY) -> None:
        """Hand freed memory back to the operating system ``delay`` seconds from now,
        on a worker's thread (the answer must be written and dropped first; the trim
        itself takes a few ms that the IO loop should not wait for)."""
        with self._lock:
            if not self._loops or self._release_pending:
                return
            self._release_pending = True
            loop = self._loops[0]

        def release() -> None:
            with self._lock:
                self._release_pending = False
            release_memory()

        loop.call_soon_threadsafe(loop.call_later, delay, release)

    def close(self) -> None:
        """Stop the worker loops (requests still running are abandoned)."""
        with self._lock:
            for loop in self._loops:
                loop.call_soon_threadsafe(loop.stop)
            for thread in self._threads:
                thread.join(2)
            self._loops.clear()
            self._threads.clear()


async def _call(job: Callable[[], Awaitable[T]]) -> T:
    return await job()


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()
