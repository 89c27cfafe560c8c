"""Query actors and the pool that spreads read-only store work over them.

Each :class:`QueryActor` owns one store connection (opened in ``on_start``) and runs
the functions it is handed one at a time. :class:`QueryPool` picks the least-busy
actor for each submission, so a query stuck inside a stalled InfluxDB connection only
occupies its own actor: every other request goes to an idle one.

Results never come back through a blocking ``pykka.Future.get()`` on the IO loop
(Mopidy's weak spot): the actor calls the submitter's callback, and the pool hands
that call to the IO loop through ``IOLoop.add_callback``, the one thread-safe door
into the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pykka
from tornado.ioloop import IOLoop

from tps.errors import StoreUnavailable
from tps.store.base import Store, StoreFactory

logger = logging.getLogger(__name__)

T = TypeVar("T")

QueryCallback = Callable[[Any], None]
"""Receives the function's result, or the exception it raised."""

# An actor whose oldest query has run longer than this is treated as stuck and only
# chosen when every actor is stuck; in-flight counts alone would tie with it.
STUCK_AFTER = 0.05

# Identical questions asked within this many seconds of a call in flight share it.
JOIN_WITHIN = 0.1
# The index the store probe (see QueryPool.ping) logs as; query actors count from 0.
PROBE_INDEX = -1

MAX_ANSWERS = 1024
"""Answers kept for ``answer_ttl`` at most (identical questions asked again)."""
MAX_REMEMBERED_ROWS = 1000
"""Longer answers (lists of readings) are never kept for reuse: reuse is for the small
questions dashboards repeat, and a kept 100,000-row answer would hold its memory long
after it expired."""
PURGE_AT = 64
"""Expired answers are dropped whenever this many are kept."""


@dataclass(frozen=True, slots=True)
class RunQuery(Generic[T]):
    """Run ``fn`` against the actor's store and report to ``done`` (pool -> actor)."""

    fn: Callable[[Store], T]
    done: Callable[[T | BaseException], None]


class QueryActor(pykka.ThreadingActor):
    """Runs store reads for the API; one store connection per actor.

    The actor is a thin shell: it opens its store, runs what it is told and passes
    every outcome, including exceptions, to the submitter. A failing query therefore
    never kills the actor; only a failure to open the store does.
    """

    def __init__(
        self,
        index: int,
        store_factory: StoreFactory,
        on_failure: Callable[[int, BaseException], None] | None = None,
    ) -> None:
        super().__init__()
        self.index = index
        self._store_factory = store_factory
        self._on_failure = on_failure
        self._store: Store | None = None

    def on_start(self) -> None:
        """Open this actor's own store connection."""
        try:
            self._store = self._store_factory()
        except Exception as exc:
            # pykka does not call on_failure for on_start; report it the same way.
            logger.error("Query actor %d cannot open its store: %s", self.index, exc)
            if self._on_failure is not None:
                self._on_failure(self.index, exc)
            raise
        logger.debug("Query actor %d started", self.index)

    def on_stop(self) -> None:
        """Close the store connection."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        """Tell the owner (the supervisor) that this actor died, then close the store."""
        self.on_stop()
        if self._on_failure is not None and isinstance(exception_value, BaseException):
            self._on_failure(self.index, exception_value)

    def on_receive(self, message: Any) -> Any:
        """Run a :class:`RunQuery`; anything else is ignored with a warning."""
        if not isinstance(message, RunQuery):
            logger.warning("Query actor %d ignored unexpected message %r", self.index, message)
            return None
        store = self._store
        outcome: Any
        if store is None:
            outcome = StoreUnavailable("query actor has no store")
        else:
            try:
                outcome = message.fn(store)
            except Exception as exc:  # noqa: BLE001 - every failure goes to the caller
                outcome = exc
        message.done(outcome)
        return None


class _Slot:
    """Book-keeping for one actor: its ref and the start times of in-flight queries."""

    __slots__ = ("actor", "generation", "started")

    def __init__(self, actor: pykka.ActorRef[QueryActor] | None) -> None:
        self.actor = actor
        self.generation = 0
        self.started: dict[int, float] = {}


class QueryPool:
    """A fixed number of :class:`QueryActor` s with least-busy dispatch.

    ``submit`` may be called from any thread. When called on a thread running an
    IO loop, the callback runs on that loop; otherwise it runs on the actor thread.
    """

    def __init__(
        self, store_factory: StoreFactory, size: int, timeout: float = 15.0,
        answer_ttl: float = 0.0,
    ) -> None:
        if size < 1:
            raise ValueError("a query pool needs at least one actor")
        self._store_factory = store_factory
        self._size = size
        self.timeout = timeout
        self.answer_ttl = answer_ttl
        # key -> (answer, monotonic time the store gave it); only touched on the loop
        self._answers: dict[tuple[int, Hashable], tuple[Any, float]] = {}
        self._lock = threading.Lock()
        self._slots = [_Slot(None) for _ in range(size)]
        self._tickets = 0
        self._on_failure: Callable[[int, BaseException], None] | None = None
        self._running = False
        self._shared: dict[tuple[int, Hashable], tuple[asyncio.Future[Any], float]] = {}
        # The store probe for /ready (created on the IO loop's first ping; loop only).
        self._probe: pykka.ActorRef[QueryActor] | None = None

    @property
    def size(self) -> int:
        """Number of query actors."""
        return self._size

    def in_flight(self) -> list[int]:
        """Queries currently running or queued, per actor (for metrics and tests)."""
        with self._lock:
            return [len(slot.started) for slot in self._slots]

    def start(self, on_failure: Callable[[int, BaseException], None] | None = None) -> None:
        """Start every actor; ``on_failure(index, error)`` is told when one dies."""
        self._on_failure = on_failure
        self._running = True
        for index in range(self._size):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        ref = QueryActor.start(index, self._store_factory, self._on_failure)
        with self._lock:
            slot = self._slots[index]
            slot.actor = ref
            slot.generation += 1
            slot.started = {}

    def restart(self, index: int) -> None:
        """Replace actor ``index`` (after a failure) with a fresh one and a fresh store.

        Queries queued on the old actor are answered with StoreUnavailable by their
        timeout; the old actor is stopped without waiting for a stuck query.
        """
        with self._lock:
            old = self._slots[index].actor
            self._slots[index].actor = None
        if old is not None and old.is_alive():
            old.stop(block=False)
        if self._running:
            self._spawn(index)
            logger.info("Query actor %d restarted", index)

    async def ping(self, timeout: float) -> bool:
        """Whether the store answers a ping, asked on the pool's own probe actor.

        The probe has its own store connection and never takes queries, so a pool whose
        actors are all busy with heavy answers still answers /ready at once (a ping
        queued behind them would time out and turn the process unready).
        """
        with self._lock:  # against a concurrent stop(): no probe outlives the pool
            probe = self._probe
            if probe is None or not probe.is_alive():
                if not self._running:
                    raise StoreUnavailable("the query pool is not running")
                probe = self._probe = QueryActor.start(PROBE_INDEX, self._store_factory, None)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        io_loop = IOLoop.current()

        def settle(outcome: Any) -> None:
            if not future.done():
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

        try:
            probe.tell(RunQuery(lambda store: store.ping(),
                                _Once(lambda outcome: io_loop.add_callback(settle, outcome))))
        except pykka.ActorDeadError:
            raise StoreUnavailable("the store probe stopped") from None
        try:
            return bool(await asyncio.wait_for(future, timeout))
        except TimeoutError:
            raise StoreUnavailable(f"no answer within {timeout:g} s") from None

    def stop(self) -> None:
        """Stop every actor (does not wait for a query stuck in a socket)."""
        with self._lock:
            self._running = False
            probe, self._probe = self._probe, None
        if probe is not None and probe.is_alive():
            with contextlib.suppress(pykka.ActorDeadError):
                probe.stop(block=False)
        with self._lock:
            refs = [slot.actor for slot in self._slots]
            for slot in self._slots:
                slot.actor = None
        for ref in refs:
            if ref is not None and ref.is_alive():
                with contextlib.suppress(pykka.ActorDeadError):
                    ref.stop(block=False)

    def _choose(self) -> tuple[int, int, int, pykka.ActorRef[QueryActor]] | None:
        """Pick the least-busy live actor and book a ticket on it (caller holds no lock)."""
        now = time.monotonic()
        with self._lock:
            best: tuple[bool, int, int] | None = None
            best_index = -1
            for index, slot in enumerate(self._slots):
                if slot.actor is None or not slot.actor.is_alive():
                    continue
                oldest = min(slot.started.values(), default=now)
                # Ties rotate, so idle actors share the work and keep warm connections.
                key = (now - oldest > STUCK_AFTER, len(slot.started),
                       (index - self._tickets) % self._size)
                if best is None or key < best:
                    best, best_index = key, index
            if best is None:
                return None
            slot = self._slots[best_index]
            assert slot.actor is not None
            self._tickets += 1
            slot.started[self._tickets] = now
            return best_index, slot.generation, self._tickets, slot.actor

    def _release(self, index: int, generation: int, ticket: int) -> None:
        with self._lock:
            slot = self._slots[index]
            if slot.generation == generation:
                slot.started.pop(ticket, None)

    def submit(
        self, fn: Callable[[Store], T], callback: Callable[[T | BaseException], None]
    ) -> None:
        """Run ``fn(store)`` on the least-busy actor; ``callback`` gets the outcome.

        The callback runs on the submitting thread's IO loop when there is one
        (``IOLoop.add_callback``), never blocking it; otherwise on the actor thread.
        """
        loop = _current_loop()
        deliver: Callable[[T | BaseException], None]
        if loop is None:
            deliver = callback
        else:

            def deliver(outcome: T | BaseException) -> None:
                loop.add_callback(callback, outcome)

        chosen = self._choose()
        if chosen is None:
            deliver(StoreUnavailable("the query pool is not running"))
            return
        index, generation, ticket, ref = chosen

        def done(outcome: T | BaseException) -> None:
            self._release(index, generation, ticket)
            deliver(outcome)

        try:
            ref.tell(RunQuery(fn, _Once(done)))
        except pykka.ActorDeadError:
            self._release(index, generation, ticket)
            deliver(StoreUnavailable("query actor stopped"))

    async def run(
        self,
        fn: Callable[[Store], T],
        timeout: float | None = None,
        key: Hashable | None = None,
    ) -> T:
        """Await ``fn(store)`` from a coroutine on the IO loop without blocking it.

        Raises what ``fn`` raised, or StoreUnavailable when no answer comes within
        ``timeout`` seconds (default: the pool's), so a hung store cannot hang the
        request forever.

        ``key`` names the question ``fn`` asks (e.g. ``("statistics", after, before,
        stream)``): callers asking the same question while it is being answered share
        that one store call instead of queueing identical work (request coalescing).
        With ``answer_ttl`` > 0 (``TPS_QUERY_CACHE_TTL``) the answer is also reused for
        that many seconds after the store gave it, so a dashboard's repeated question
        costs one store call per TTL; errors are never reused.
        """
        if key is None:
            return await self._run(fn, timeout)
        loop = asyncio.get_running_loop()
        shared_key = (id(loop), key)
        now = time.monotonic()
        if self.answer_ttl > 0:
            answered = self._answers.get(shared_key)
            if answered is not None and now - answered[1] <= self.answer_ttl:
                cached: T = answered[0]
                return cached
        entry = self._shared.get(shared_key)
        # Join only a young call: one that is taking long may be stuck in a stalled
        # connection, and must not drag every identical request down with it.
        if entry is not None and now - entry[1] <= JOIN_WITHIN:
            shared = entry[0]
        else:
            shared = loop.create_task(self._run(fn, timeout))
            self._shared[shared_key] = (shared, now)

            def forget(task: asyncio.Future[Any]) -> None:
                current = self._shared.get(shared_key)
                if current is not None and current[0] is task:
                    del self._shared[shared_key]
                if not task.cancelled() and task.exception() is None and self.answer_ttl > 0:
                    self._remember(shared_key, task.result())

            shared.add_done_callback(forget)
        result: T = await asyncio.shield(shared)
        return result

    def _remember(self, shared_key: tuple[int, Hashable], answer: Any) -> None:
        if isinstance(answer, list) and len(answer) > MAX_REMEMBERED_ROWS:
            return
        now = time.monotonic()
        if len(self._answers) >= PURGE_AT:
            # Expired answers go first; if all are fresh, the cache starts over.
            self._answers = {k: v for k, v in self._answers.items()
                             if now - v[1] <= self.answer_ttl}
            if len(self._answers) >= MAX_ANSWERS:
                self._answers.clear()
        self._answers[shared_key] = (answer, now)

    async def _run(self, fn: Callable[[Store], T], timeout: float | None) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(outcome: T | BaseException) -> None:
            if future.done():
                return
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        self.submit(fn, settle)
        limit = self.timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(future, limit)
        except TimeoutError:
            raise StoreUnavailable(
                f"no answer within {limit:g} s"
            ) from None


class _Once:
    """A callback that forgets its target once called.

    pykka keeps an actor's last message referenced until the next one arrives; a
    message holding the whole callback chain would keep its answer (maybe 100,000
    readings) alive that long too.
    """

    __slots__ = ("_callback",)

    def __init__(self, callback: Callable[[Any], None]) -> None:
        self._callback: Callable[[Any], None] | None = callback

    def __call__(self, outcome: Any) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback(outcome)


def _current_loop() -> IOLoop | None:
    """The IO loop running on this thread, or None (no asyncio loop is running here)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return None
    return IOLoop.current()
