"""The Supervisor actor: starts, stops and restarts the pipeline's children.

Children are the batching writer, the query actors and one StreamReader per stream.
A child that crashes only *tells* the supervisor (``ChildFailed``) from its failure
callback; the supervisor decides, with :class:`RestartPolicy`, whether to restart it
after an exponential backoff (a ``RestartChild`` told later by a timer thread - the
supervisor never sleeps, so it keeps answering the API) or, after too many restarts
in a window, to mark it failed and leave every other child running.

The supervisor also owns the stream registry: every runtime change to the set of
streams goes through it and is persisted before the call returns.

Every supervision event is one log line naming the actor, what happened, why, and
what happens next.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import pykka

from tps.actors.messages import ChildFailed, InjectFailure, ReadingSink, RestartChild
from tps.actors.stats import StreamState, StreamStats, SupervisorStats, WriterStats
from tps.actors.timer import tell_later
from tps.config.registry import StreamRegistry, check_feed
from tps.config.settings import FeedConfig, Settings
from tps.errors import ConfigError, StreamError, StreamExists, UnknownStream
from tps.live import LiveHub

logger = logging.getLogger(__name__)

WRITER = "writer"
READER_PREFIX = "reader:"
QUERY_PREFIX = "query:"

ReaderFactory = Callable[..., "pykka.ActorRef[Any]"]
"""Starts a reader: ``factory(feed, sink, stats, *, max_frame_bytes, on_failure) -> ref``.

A pykka actor class (``StreamReader``) is accepted too; its ``start`` is used.
"""


class WriterLike(Protocol):
    """What the supervisor needs from :class:`tps.actors.writer.WriterHandle`."""

    def start(self, on_failure: Callable[..., None]) -> Any:
        """Start (or restart after a crash) the writer actor."""

    def flush(self, timeout: float) -> bool:
        """Write what is buffered; False when it did not finish within ``timeout``."""

    def stop(self, timeout: float) -> bool:
        """Flush and stop; False when the flush did not finish within ``timeout``."""

    def is_alive(self) -> bool:
        """True while the writer actor runs."""


class QueryPoolLike(Protocol):
    """What the supervisor needs from :class:`tps.actors.query.QueryPool`."""

    def start(self, on_failure: Callable[[int, BaseException], None]) -> Any:
        """Start every query actor."""

    def restart(self, index: int) -> Any:
        """Replace the crashed query actor ``index``."""

    def stop(self) -> Any:
        """Stop every query actor."""


class RestartPolicy:
    """When to restart a crashed child, and when to give up on it.

    Plain and deterministic (no threads, injectable clock) so it is tested directly.
    The n-th failure within ``window`` seconds is restarted after
    ``initial_delay * 2**(n-1)`` seconds (capped at ``max_delay``); failure number
    ``max_restarts + 1`` within the window means the child is failed for good.
    """

    def __init__(
        self,
        max_restarts: int = 5,
        window: float = 60.0,
        initial_delay: float = 0.5,
        max_delay: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_restarts = max_restarts
        self.window = window
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def on_failure(self, key: str) -> float | None:
        """Record a failure of ``key``; the delay before restarting it, or None (give up)."""
        now = self._clock()
        history = self._failures.setdefault(key, deque())
        while history and now - history[0] > self.window:
            history.popleft()
        history.append(now)
        if len(history) > self.max_restarts:
            return None
        return float(min(self.max_delay, self.initial_delay * 2 ** (len(history) - 1)))

    def failures(self, key: str) -> int:
        """Failures of ``key`` recorded within the current window."""
        history = self._failures.get(key)
        if not history:
            return 0
        now = self._clock()
        return sum(1 for t in history if now - t <= self.window)

    def forget(self, key: str) -> None:
        """Start counting ``key`` afresh (an operator restarted or removed it)."""
        self._failures.pop(key, None)


class StatsBoard:
    """Every stats object, readable from any thread (for /metrics and /health).

    The supervisor creates the stream stats and registers them here; readers update
    them; the HTTP thread reads them without messaging any actor, so a busy actor
    never delays a scrape.
    """

    def __init__(
        self, writer: WriterStats | None = None, supervisor: SupervisorStats | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._streams: dict[str, StreamStats] = {}
        self._writer = writer
        self._supervisor = supervisor or SupervisorStats()

    def streams(self) -> list[StreamStats]:
        """Stats of every registered stream."""
        with self._lock:
            return list(self._streams.values())

    def writer(self) -> WriterStats | None:
        """The writer's stats (None in a process without a writer)."""
        return self._writer

    def supervisor(self) -> SupervisorStats:
        """The supervisor's restart and failure counters."""
        return self._supervisor

    def attach_writer(self, stats: WriterStats | None) -> None:
        """Set the writer's stats when the board was built before the writer."""
        self._writer = stats

    def add_stream(self, stats: StreamStats) -> None:
        """Register a stream's stats (supervisor only)."""
        with self._lock:
            self._streams[stats.name] = stats

    def drop_stream(self, name: str) -> None:
        """Forget a removed stream's stats (supervisor only)."""
        with self._lock:
            self._streams.pop(name, None)


@dataclass
class _Reader:
    """The supervisor's bookkeeping for one stream."""

    feed: FeedConfig
    stats: StreamStats
    want_running: bool
    ref: pykka.ActorRef[Any] | None = None
    generation: int = 0
    cancel_restart: Callable[[], None] | None = None


def _error_text(args: tuple[Any, ...]) -> str:
    """Describe the exception among ``args`` (callbacks pass it alone or as exc_info)."""
    for arg in args:
        if isinstance(arg, BaseException):
            return f"{type(arg).__name__}: {arg}"
    return "unknown error" if not args else repr(args[0])


class Supervisor(pykka.ThreadingActor):
    """Supervises the writer, the query pool and one reader per stream.

    Build it for a role: ``all`` passes everything; ``ingest`` passes no ``queries``;
    ``api`` passes only ``queries`` (no sink means this process ingests
    nothing, and adding a stream raises :class:`StreamError`).

    ``sink`` is the one sink every reader writes into (the service composes it from
    ``WriterHandle.submit`` and ``LiveHub.publish``); ``sink_for(name)`` instead gives
    each stream its own. ``registry=None`` runs the configured feeds without
    persisting changes. ``board`` receives every stats object for /metrics.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        sink: ReadingSink | None = None,
        sink_for: Callable[[str], ReadingSink] | None = None,
        writer: WriterLike | None = None,
        queries: QueryPoolLike | None = None,
        registry: StreamRegistry | None = None,
        hub: LiveHub | None = None,
        board: StatsBoard | None = None,
        reader_factory: ReaderFactory | type[pykka.Actor] | None = None,
        policy: RestartPolicy | None = None,
        stop_timeout: float = 3.0,
        flush_timeout: float = 2.0,
    ) -> None:
        super().__init__()
        self._settings = settings
        if sink_for is None and sink is not None:
            shared = sink

            def sink_for(_: str) -> ReadingSink:
                return shared

        self._sink_for = sink_for
        self._writer = writer
        self._queries = queries
        self._registry = registry
        self._hub = hub
        self.board = board or StatsBoard()
        if self.board.writer() is None and writer is not None:
            # WriterHandle exposes its stats; a board built without them still reports them.
            self.board.attach_writer(getattr(writer, "stats", None))
        self._reader_factory = reader_factory
        self._policy = policy or RestartPolicy()
        self._stop_timeout = stop_timeout
        self._flush_timeout = flush_timeout
        self._readers: dict[str, _Reader] = {}
        self._writer_generation = 0
        self._writer_failed = False
        self._query_failed: set[int] = set()
        self._timers: dict[str, Callable[[], None]] = {}
        self._shut_down = False

    # --- lifecycle ------------------------------------------------------------------

    def on_start(self) -> None:
        """Start the writer, the query pool and the readers of every running stream."""
        if self._writer is not None:
            self._writer.start(self._reporter(WRITER))
        if self._queries is not None:
            self._queries.start(self._query_reporter)
        if self._sink_for is None:
            logger.info("Supervisor started without readers (role=%s)", self._settings.role)
            return
        entries = [(feed, True) for feed in self._settings.feeds]
        if self._registry is not None:
            try:
                entries = [(e.feed, e.running) for e in self._registry.load(self._settings.feeds)]
            except (ConfigError, OSError) as exc:
                logger.error(
                    "Cannot use the stream registry %s (%s); running the configured feeds "
                    "and not persisting stream changes until TPS restarts",
                    self._registry.path,
                    exc,
                )
                self._registry = None
        for feed, running in entries:
            self._track(feed, running)
            if running:
                self._start_reader(self._readers[feed.name])
        logger.info(
            "Supervisor started %d of %d streams (role=%s)",
            sum(1 for _, running in entries if running),
            len(entries),
            self._settings.role,
        )

    def on_stop(self) -> None:
        """Shut the children down if nobody called :meth:`shutdown` first."""
        if not self._shut_down:
            self.shutdown()

    def on_receive(self, message: Any) -> Any:
        """Handle failure reports from children and delayed restarts."""
        if isinstance(message, ChildFailed):
            self._child_failed(message)
        elif isinstance(message, RestartChild):
            self._restart_child(message)
        else:
            logger.warning("Supervisor ignored an unexpected message %r", message)
        return None

    # --- public API (via proxy; every call returns quickly) --------------------------

    def list_streams(self) -> list[StreamStats]:
        """Stats of every stream, in registration order."""
        return [reader.stats for reader in self._readers.values()]

    def get_stream(self, name: str) -> StreamStats:
        """Stats of stream ``name``; raises UnknownStream."""
        return self._reader(name).stats

    def add_stream(self, feed: FeedConfig, started: bool = True) -> StreamStats:
        """Register a new stream (persisted) and start its reader unless ``started`` is False.

        Raises InvalidArgument (a bad field, naming it), StreamExists, or StreamError
        when this process does not ingest.
        """
        if self._sink_for is None:
            raise StreamError(
                f"this process runs role={self._settings.role} and ingests no streams"
            )
        check_feed(feed, self._settings.feed_allow)
        if feed.name in self._readers:
            raise StreamExists(feed.name)
        reader = self._track(feed, started)
        self._persist(lambda registry: registry.put(feed, started))
        if started:
            self._start_reader(reader)
        logger.info(
            "Stream %r added (%s, protocol %s); %s",
            feed.name,
            feed.url,
            feed.protocol,
            "reader started" if started else "left stopped",
        )
        return reader.stats

    def remove_stream(self, name: str) -> StreamStats:
        """Stop the reader, flush what it read (bounded), forget the stream (persisted)."""
        reader = self._reader(name)
        reader.want_running = False
        self._stop_reader(reader, "removed by operator")
        del self._readers[name]
        self.board.drop_stream(name)
        self.board.supervisor().failed.discard(READER_PREFIX + name)
        self._policy.forget(READER_PREFIX + name)
        self._persist(lambda registry: registry.remove(name))
        if self._hub is not None:
            self._hub.forget(name)
        flushed = self._flush_writer()
        logger.info(
            "Stream %r removed by operator after %d readings; %s",
            name,
            reader.stats.received,
            "its readings are flushed" if flushed else "its readings stay queued for writing",
        )
        return reader.stats

    def stop_stream(self, name: str) -> StreamStats:
        """Pause stream ``name`` (persisted); idempotent."""
        reader = self._reader(name)
        reader.want_running = False
        self._stop_reader(reader, "stopped by operator")
        reader.stats.state = StreamState.STOPPED
        self.board.supervisor().failed.discard(READER_PREFIX + name)
        self._persist(lambda registry: registry.set_running(name, False))
        logger.info("Stream %r stopped by operator; it stays registered", name)
        return reader.stats

    def start_stream(self, name: str) -> StreamStats:
        """Resume stream ``name`` (persisted); also revives a failed reader. Idempotent."""
        reader = self._reader(name)
        if reader.want_running and reader.ref is not None and reader.ref.is_alive():
            return reader.stats
        reader.want_running = True
        self._cancel_timer(READER_PREFIX + name)
        self._policy.forget(READER_PREFIX + name)
        self.board.supervisor().failed.discard(READER_PREFIX + name)
        self._persist(lambda registry: registry.set_running(name, True))
        self._start_reader(reader)
        logger.info("Stream %r started by operator", name)
        return reader.stats

    def set_all(self, running: bool) -> list[StreamStats]:
        """Start or stop every stream; returns their stats."""
        for name in list(self._readers):
            if running:
                self.start_stream(name)
            else:
                self.stop_stream(name)
        return self.list_streams()

    def writer_stats(self) -> WriterStats | None:
        """The writer's counters (None when this process has no writer)."""
        return self.board.writer()

    def supervisor_stats(self) -> SupervisorStats:
        """Restart and failure counters."""
        return self.board.supervisor()

    def health(self) -> dict[str, Any]:
        """Which children are alive, failed or restarting; stream states."""
        failed = self.board.supervisor().failed
        restarts = self.board.supervisor().restarts
        actors: dict[str, dict[str, Any]] = {}
        if self._writer is not None:
            actors[WRITER] = {
                "alive": self._writer.is_alive(),
                "failed": WRITER in failed,
                "restarts": restarts.get(WRITER, 0),
            }
        for name, reader in self._readers.items():
            key = READER_PREFIX + name
            actors[key] = {
                "alive": reader.ref is not None and reader.ref.is_alive(),
                "running": reader.want_running,
                "failed": key in failed,
                "restarts": restarts.get(key, 0),
            }
        if self._queries is not None:
            actors["queries"] = {
                "alive": not self._query_failed,
                "failed": sorted(f"{QUERY_PREFIX}{i}" for i in self._query_failed),
                "restarts": sum(n for k, n in restarts.items() if k.startswith(QUERY_PREFIX)),
            }
        return {
            "alive": not self._shut_down,
            "role": self._settings.role,
            "actors": actors,
            "streams": {name: str(r.stats.state) for name, r in self._readers.items()},
            "failed": sorted(failed),
        }

    def inject_failure(self, name: str, reason: str = "injected failure") -> None:
        """Make the reader of ``name`` crash through its real failure path (tests, drills)."""
        reader = self._reader(name)
        if reader.ref is None or not reader.ref.is_alive():
            raise StreamError(f"stream {name!r} has no running reader")
        logger.warning("Injecting a failure into the reader of stream %r: %s", name, reason)
        reader.ref.tell(InjectFailure(reason))

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop readers, flush and stop the writer (bounded), stop the query pool.

        True when the writer flushed everything within ``timeout`` (default
        ``settings.shutdown_timeout``). Idempotent.
        """
        if self._shut_down:
            return True
        self._shut_down = True
        for key in list(self._timers):
            self._cancel_timer(key)
        futures = []
        for reader in self._readers.values():
            reader.generation += 1
            if reader.ref is not None:
                futures.append((reader, reader.ref.stop(block=False)))
        for reader, future in futures:
            try:
                future.get(timeout=self._stop_timeout)
            except pykka.Timeout:
                logger.warning("Reader of stream %r did not stop in time", reader.feed.name)
            reader.ref = None
        flushed = True
        if self._writer is not None and self._writer.is_alive():
            budget = self._settings.shutdown_timeout if timeout is None else timeout
            flushed = self._writer.stop(budget)
            if not flushed:
                logger.warning(
                    "Writer did not flush within %.1f s at shutdown; unwritten readings "
                    "stay in the spool for the next start",
                    budget,
                )
        if self._queries is not None:
            self._queries.stop()
        logger.info("Supervisor shut down its children (writer flushed: %s)", flushed)
        return flushed

    # --- supervision ----------------------------------------------------------------

    def _reporter(self, key: str) -> Callable[..., None]:
        """The failure callback handed to a child: it only tells the supervisor."""
        ref = self.actor_ref

        def report(*args: Any) -> None:
            try:
                ref.tell(ChildFailed(key, _error_text(args)))
            except pykka.ActorDeadError:
                logger.debug("%s failed after the supervisor stopped: %s", key, args)

        return report

    def _query_reporter(self, index: int, error: BaseException) -> None:
        try:
            self.actor_ref.tell(ChildFailed(f"{QUERY_PREFIX}{index}", _error_text((error,))))
        except pykka.ActorDeadError:
            logger.debug("query actor %d failed after the supervisor stopped", index)

    def _child_failed(self, message: ChildFailed) -> None:
        key = message.key
        if self._shut_down:
            logger.info("%s crashed during shutdown (%s); not restarting it", key, message.error)
            return
        if key.startswith(READER_PREFIX):
            self._reader_failed(key[len(READER_PREFIX) :], message.error)
        elif key == WRITER:
            self._writer_crashed(message.error)
        elif key.startswith(QUERY_PREFIX):
            self._query_crashed(int(key[len(QUERY_PREFIX) :]), message.error)
        else:
            logger.warning("Supervisor got a failure report from unknown child %r", key)

    def _reader_failed(self, name: str, error: str) -> None:
        key = READER_PREFIX + name
        reader = self._readers.get(name)
        if reader is None or not reader.want_running:
            logger.info(
                "Reader of stream %r crashed (%s) after it was stopped or removed; "
                "nothing to restart",
                name,
                error,
            )
            return
        reader.ref = None
        reader.stats.last_error = error
        delay = self._policy.on_failure(key)
        if delay is None:
            reader.stats.state = StreamState.FAILED
            self.board.supervisor().failed.add(key)
            logger.error(
                "Reader of stream %r crashed (%s) for the %s time within %.0f s; marked "
                "failed, other streams keep running (POST /api/streams/%s/start revives it)",
                name,
                error,
                _ordinal(self._policy.failures(key)),
                self._policy.window,
                name,
            )
            return
        reader.stats.state = StreamState.BACKOFF
        self._schedule(key, delay, reader.generation)
        logger.error(
            "Reader of stream %r crashed (%s); restarting it in %.1f s (failure %d of %d "
            "allowed within %.0f s)",
            name,
            error,
            delay,
            self._policy.failures(key),
            self._policy.max_restarts,
            self._policy.window,
        )

    def _writer_crashed(self, error: str) -> None:
        delay = self._policy.on_failure(WRITER)
        if delay is None:
            self._writer_failed = True
            self.board.supervisor().failed.add(WRITER)
            logger.error(
                "Writer crashed (%s) %d times within %.0f s; marked failed: readings "
                "stay in the spool but nothing is written until TPS restarts",
                error,
                self._policy.failures(WRITER),
                self._policy.window,
            )
            return
        self._schedule(WRITER, delay, self._writer_generation)
        logger.error(
            "Writer crashed (%s); restarting it in %.1f s (failure %d of %d allowed "
            "within %.0f s); readers keep submitting meanwhile",
            error,
            delay,
            self._policy.failures(WRITER),
            self._policy.max_restarts,
            self._policy.window,
        )

    def _query_crashed(self, index: int, error: str) -> None:
        key = f"{QUERY_PREFIX}{index}"
        delay = self._policy.on_failure(key)
        if delay is None:
            self._query_failed.add(index)
            self.board.supervisor().failed.add(key)
            logger.error(
                "Query actor %d crashed (%s) %d times within %.0f s; marked failed, the "
                "other query actors keep serving",
                index,
                error,
                self._policy.failures(key),
                self._policy.window,
            )
            return
        self._schedule(key, delay, 0)
        logger.error("Query actor %d crashed (%s); restarting it in %.1f s", index, error, delay)

    def _schedule(self, key: str, delay: float, generation: int) -> None:
        self._cancel_timer(key)
        self._timers[key] = tell_later(delay, self.actor_ref, RestartChild(key, generation))

    def _cancel_timer(self, key: str) -> None:
        cancel = self._timers.pop(key, None)
        if cancel is not None:
            cancel()

    def _restart_child(self, message: RestartChild) -> None:
        key = message.key
        self._timers.pop(key, None)
        if self._shut_down:
            return
        restarts = self.board.supervisor().restarts
        if key.startswith(READER_PREFIX):
            reader = self._readers.get(key[len(READER_PREFIX) :])
            if reader is None or not reader.want_running or reader.generation != message.generation:
                logger.debug("Dropping stale restart of %s", key)
                return
            if reader.ref is not None and reader.ref.is_alive():
                return
            reader.stats.restarts += 1
            restarts[key] = restarts.get(key, 0) + 1
            self._start_reader(reader)
            logger.info(
                "Reader of stream %r restarted (restart %d); ingest resumes",
                reader.feed.name,
                reader.stats.restarts,
            )
        elif key == WRITER and self._writer is not None:
            if message.generation != self._writer_generation:
                return
            self._writer_generation += 1
            restarts[key] = restarts.get(key, 0) + 1
            self._writer.start(self._reporter(WRITER))
            logger.info("Writer restarted (restart %d); it resumes from the spool", restarts[key])
        elif key.startswith(QUERY_PREFIX) and self._queries is not None:
            index = int(key[len(QUERY_PREFIX) :])
            restarts[key] = restarts.get(key, 0) + 1
            self._queries.restart(index)
            logger.info("Query actor %d restarted (restart %d)", index, restarts[key])

    # --- helpers --------------------------------------------------------------------

    def _reader(self, name: str) -> _Reader:
        reader = self._readers.get(name)
        if reader is None:
            raise UnknownStream(name)
        return reader

    def _track(self, feed: FeedConfig, running: bool) -> _Reader:
        stats = StreamStats(
            name=feed.name,
            url=feed.url,
            protocol=feed.protocol,
            query=feed.query,
            state=StreamState.CONNECTING if running else StreamState.STOPPED,
        )
        reader = _Reader(feed=feed, stats=stats, want_running=running)
        self._readers[feed.name] = reader
        self.board.add_stream(stats)
        return reader

    def _start_reader(self, reader: _Reader) -> None:
        assert self._sink_for is not None
        reader.generation += 1
        reader.stats.state = StreamState.CONNECTING
        factory = self._reader_factory
        if factory is None:
            from tps.actors.reader import StreamReader

            factory = StreamReader
        start = cast(
            ReaderFactory,
            factory.start if isinstance(factory, type) and issubclass(factory, pykka.Actor)
            else factory,
        )
        reader.ref = start(
            reader.feed,
            self._sink_for(reader.feed.name),
            reader.stats,
            max_frame_bytes=self._settings.max_frame_bytes,
            on_failure=self._reporter(READER_PREFIX + reader.feed.name),
        )

    def _stop_reader(self, reader: _Reader, why: str) -> None:
        """Stop the reader actor, waiting a bounded time so a new one never overlaps it."""
        reader.generation += 1
        self._cancel_timer(READER_PREFIX + reader.feed.name)
        ref, reader.ref = reader.ref, None
        if ref is None:
            return
        try:
            ref.stop(block=True, timeout=self._stop_timeout)
        except pykka.Timeout:
            logger.warning(
                "Reader of stream %r did not stop within %.1f s (%s); it is abandoned and "
                "stops on its own when it next reads its mailbox",
                reader.feed.name,
                self._stop_timeout,
                why,
            )

    def _flush_writer(self) -> bool:
        if self._writer is None or not self._writer.is_alive():
            return False
        try:
            return self._writer.flush(self._flush_timeout)
        except Exception as exc:  # noqa: BLE001 - a flush failure must not fail the removal
            logger.warning("Writer flush after a stream removal failed: %s", exc)
            return False

    def _persist(self, change: Callable[[StreamRegistry], None]) -> None:
        if self._registry is None:
            return
        try:
            change(self._registry)
        except OSError as exc:
            logger.error(
                "Could not save the stream registry %s (%s); the change is live but will "
                "not survive a restart",
                self._registry.path,
                exc,
            )


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
