"""The one owner of the NATS connection: an asyncio loop on its own thread.

nats-py is asyncio; TPS actors are threads. Rather than give every actor its own
event loop (and connection), one :class:`NatsLink` runs one loop in a daemon thread and
everything that talks to NATS runs *on that loop*: the registry watch, the ownership
logic, the readings consumer, the live subscription. Other threads reach the loop the
way Tornado code reaches its IO loop - through one door:

* :meth:`NatsLink.submit` schedules a coroutine and returns a
  ``concurrent.futures.Future`` at once. Actors use it tell-style: they attach a
  callback that *tells* them the outcome (the callback runs on the loop thread and must
  only hand over), so an actor's mailbox never waits on NATS.
* :meth:`NatsLink.call` is the blocking form, bounded by a timeout, for code whose
  contract is blocking anyway (``Store.write`` on the writer's thread, the CLI, tests).

Connection policy: the first connection is retried with exponential backoff until it
succeeds or the link is stopped (TPS starts without NATS and spools meanwhile); a lost
connection is reconnected by nats-py forever, with our backoff (0.05 s doubling to 5 s,
jittered) chosen by ``reconnect_to_server_handler`` and reset after each success. The
state (``connecting``, ``connected``, ``reconnecting``, ``closed``), the server, the
number of disconnects and the last error are readable from any thread
(:meth:`NatsLink.status`) for ``/health``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import nats
import nats.errors
from nats.aio.client import Client, Server
from nats.js import JetStreamContext

from tps.errors import ClusterUnavailable
from tps.ingest.backoff import Backoff

logger = logging.getLogger(__name__)

T = TypeVar("T")

CONNECTING = "connecting"
CONNECTED = "connected"
RECONNECTING = "reconnecting"
CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """A snapshot of the connection, safe to read from any thread."""

    state: str = CONNECTING
    server: str | None = None
    since: float = 0.0  # time.monotonic() of the last state change
    disconnects: int = 0
    last_error: str | None = None

    @property
    def connected(self) -> bool:
        """True while connected to a NATS server."""
        return self.state == CONNECTED

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``/health``."""
        return {"state": self.state, "server": self.server,
                "for_seconds": round(time.monotonic() - self.since, 1),
                "disconnects": self.disconnects, "last_error": self.last_error}


class NatsLink:
    """One NATS connection and the asyncio loop that owns it (see the module docstring)."""

    def __init__(self, servers: Sequence[str], client_name: str = "tps",
                 request_timeout: float = 2.0) -> None:
        if not servers:
            raise ValueError("NatsLink needs at least one server URL")
        self.servers = list(servers)
        self.client_name = client_name
        self.request_timeout = request_timeout
        self._status = LinkStatus(since=time.monotonic())
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="nats-link", daemon=True)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._connected = asyncio.Event()
        self._stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._backoff = Backoff(initial=0.05, cap=5.0)
        self._connect_task: asyncio.Task[None] | None = None

    # --- lifecycle (any thread) -------------------------------------------------------

    def start(self) -> NatsLink:
        """Start the loop thread and begin connecting (returns at once)."""
        self._thread.start()
        self._connect_task = self.submit_task(self._connect_forever)
        return self

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected (True) or ``timeout`` passes (False). Not for actors."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._status.connected:
                return True
            time.sleep(0.01)
        return self._status.connected

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel the loop's tasks, drain and close the connection, stop the thread."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(self._shutdown(timeout), self._loop).result(
                timeout + 1.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    def status(self) -> LinkStatus:
        """The current connection state (an immutable snapshot)."""
        return self._status

    # --- the door into the loop (any thread) -----------------------------------------

    def submit(self, factory: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        """Run ``factory()`` on the loop; the future completes with its outcome.

        Callbacks added to the future run on the loop thread: they must only hand the
        outcome over (``actor_ref.tell``), never block.
        """
        async def run() -> T:
            return await factory()

        return asyncio.run_coroutine_threadsafe(run(), self._loop)

    def call(self, factory: Callable[[], Awaitable[T]], timeout: float) -> T:
        """Run ``factory()`` on the loop and wait for it (blocking; not on the loop).

        Raises ClusterUnavailable when it does not finish within ``timeout``.
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("NatsLink.call from the loop thread would deadlock")
        future = self.submit(factory)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ClusterUnavailable(f"NATS did not answer within {timeout:g} s") from None

    def submit_task(self, factory: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Task[None]:
        """Start a long-running task on the loop (cancelled by :meth:`stop`).

        From the loop thread the task is created at once; from another thread this
        schedules the creation and returns a handle only once it exists.
        """
        if threading.current_thread() is self._thread:
            return self._spawn(factory())
        return asyncio.run_coroutine_threadsafe(self._spawn_async(factory), self._loop).result(5)

    async def _spawn_async(self, factory: Callable[[], Coroutine[Any, Any, None]]
                           ) -> asyncio.Task[None]:
        return self._spawn(factory())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("NATS task %s failed: %r", task.get_name(), task.exception(),
                         exc_info=task.exception())

    # --- on the loop ------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The link's event loop (schedule onto it only through :meth:`submit`)."""
        return self._loop

    @property
    def nc(self) -> Client:
        """The connection (loop thread only). ClusterUnavailable before the first connect."""
        if self._nc is None:
            raise ClusterUnavailable("not connected to NATS yet")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context (loop thread only)."""
        if self._js is None:
            raise ClusterUnavailable("not connected to NATS yet")
        return self._js

    async def connected(self) -> None:
        """Wait until the first connection is established (loop thread only)."""
        await self._connected.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            # nats-py leaves helper tasks of its subscriptions behind after close():
            # cancel them so the loop closes without "Task was destroyed" warnings.
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    async def _connect_forever(self) -> None:
        backoff = Backoff(initial=0.2, cap=5.0)
        while not self._stopping:
            try:
                self._nc = await nats.connect(
                    servers=self.servers,
                    name=self.client_name,
                    connect_timeout=2,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_to_server_handler=self._next_server,
                    ping_interval=5,
                    max_outstanding_pings=2,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    error_cb=self._on_error,
                    closed_cb=self._on_closed,
                )
            except (TimeoutError, OSError, nats.errors.Error) as exc:
                delay = backoff.next_delay()
                self._set(last_error=f"{type(exc).__name__}: {exc}")
                if backoff.attempts == 1 or backoff.attempts % 10 == 0:
                    logger.warning("Cannot connect to NATS at %s (%s); retrying in %.1f s "
                                   "(readings wait in the local spool meanwhile)",
                                   ", ".join(self.servers), exc or type(exc).__name__, delay)
                await asyncio.sleep(delay)
                continue
            self._js = self._nc.jetstream(timeout=self.request_timeout)
            self._set(state=CONNECTED, server=self._server_name())
            self._connected.set()
            logger.info("Connected to NATS at %s", self._server_name())
            return

    def _next_server(self, servers: list[Server], _info: dict[str, Any]) -> tuple[Server, float]:
        # Spread attempts over the servers and back off between rounds; reset on success.
        server = min(servers, key=lambda s: s.reconnects)
        first = self._backoff.attempts == 0
        delay = self._backoff.next_delay()
        return server, 0.0 if first else delay

    def _server_name(self) -> str | None:
        url = self._nc.connected_url if self._nc is not None else None
        return url.netloc if url is not None else None

    async def _on_disconnected(self) -> None:
        if self._stopping:
            return
        self._set(state=RECONNECTING, disconnects=self._status.disconnects + 1)
        logger.warning("Lost the NATS connection to %s; reconnecting (readings wait in the "
                       "local spool until JetStream acknowledges them)", self._status.server)

    async def _on_reconnected(self) -> None:
        self._backoff.reset()
        self._set(state=CONNECTED, server=self._server_name())
        logger.warning("Reconnected to NATS at %s", self._server_name())

    async def _on_error(self, exc: Exception) -> None:
        self._set(last_error=f"{type(exc).__name__}: {exc}")
        logger.debug("NATS client error: %r", exc)

    async def _on_closed(self) -> None:
        self._set(state=CLOSED)

    def _set(self, **changes: Any) -> None:
        if "state" in changes and changes["state"] != self._status.state:
            changes["since"] = time.monotonic()
        self._status = replace(self._status, **changes)

    async def _shutdown(self, timeout: float) -> None:
        self._stopping = True
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        if self._nc is not None and not self._nc.is_closed:
            try:
                await asyncio.wait_for(self._nc.close(), timeout)
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                logger.warning("Closing the NATS connection failed: %r", exc)
        self._set(state=CLOSED)


def unavailable(exc: BaseException, doing: str) -> ClusterUnavailable:
    """A ClusterUnavailable that says what failed while doing what."""
    return ClusterUnavailable(f"NATS/JetStream unavailable while {doing}: "
                              f"{type(exc).__name__}: {exc}".rstrip(": "))
