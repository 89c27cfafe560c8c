"""The Supervisor actor: starts, stops and restarts the pipeline's children.

Children are the batching writer, the query actors and one StreamReader per stream.
A child that crashes only *tells* the supervisor from its failure callback; the
supervisor decides, with :class:`RestartPolicy`, whether to restart it after an
exponential backoff (a ``RestartChild`` told later by a timer thread) or, after too
many restarts in a window, to mark it failed and leave every other child running.

The supervisor never waits inside its mailbox, so it always answers the control plane:

- stopping a reader is a request; the reader reports from the end of its ``on_stop``
  (the ``on_stopped`` callback it is built with) and the supervisor carries on then. A
  start asked for meanwhile is performed once the old reader is gone, so two readers
  of one stream never overlap;
- the writer flush that follows a removal runs on a helper thread, which reports back
  with a message;
- only :meth:`Supervisor.shutdown`, the end of the process, waits (bounded).

Callers that must answer an operator only once a change has taken effect (the REST
and GraphQL control plane) ask :meth:`Supervisor.settled` and await the future it
returns, off the supervisor's thread.

After every change the supervisor publishes a
:class:`~tps.actors.board.SupervisionView` on the :class:`~tps.actors.board.StatsBoard`,
which ``/health``, ``/ready`` and ``/metrics`` read without asking it anything.

The supervisor also owns the stream registry: every runtime change to the set of
streams goes through it and is persisted before the call returns.

Every supervision event is one log line naming the actor, what happened, why, and
what happens next.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from tps.actors.board import (
    QUERY_PREFIX,
    READER_PREFIX,
    WRITER,
    ReaderView,
    StatsBoard,
    SupervisionView,
    health_summary,
)
from tps.actors.messages import ChildFailed, InjectFailure, ReadingSink, RestartChild
from tps.actors.stats import StreamState, StreamStats, WriterStats
from tps.actors.timer import tell_later
from tps.alarms.limits import Limits
from tps.config.registry import StreamRegistry
from tps.config.settings import FeedConfig, Settings, check_feed
from tps.errors import (
    ConfigError,
    FeedRefused,
    InvalidArgument,
    StreamError,
    StreamExists,
    TooManyStreams,
    UnknownStream,
)
from tps.feeds.destinations import FeedDestinations
from tps.live import LiveHub
from tps.redact import redact_url

logger = logging.getLogger(__name__)


class ReaderFactory(Protocol):
    """Starts one reader actor (``StreamReader.start``, perhaps with a poller bound)."""

    def __call__(
        self,
        feed: FeedConfig,
        sink: ReadingSink,
        stats: StreamStats,
        *,
        max_frame_bytes: int,
        on_failure: Callable[[BaseException], None],
        on_stopped: Callable[[], None],
    ) -> pykka.ActorRef[Any]:
        """The started reader; it calls ``on_stopped`` once, at the end of its ``on_stop``."""


class WriterLike(Protocol):
    """What the supervisor needs from :class:`tps.actors.writer.WriterHandle`."""

    def start(self, on_failure: Callable[[BaseException], None]) -> Any:
        """Start (or restart after a crash) the writer actor."""

    def flush(self, timeout: float) -> bool:
        """Write what is buffered; False when it did not finish within ``timeout``.

        Blocks its caller: the supervisor calls it from a helper thread only.
        """

    def stop(self, timeout: float) -> bool:
        """Flush and stop; False when the flush did not finish within ``timeout``."""

    def is_alive(self) -> bool:
        """True while the writer actor runs."""


class AlarmsLike(Protocol):
    """What the supervisor tells the alarm keeper (each call returns at once)."""

    def set_limits(self, stream: str, limits: Limits | None) -> Any:
        """Evaluate ``stream`` against ``limits`` from now on (None: not at all)."""

    def limits_loaded(self, limits: Mapping[str, Limits | None]) -> Any:
        """Every stream's limits at start-up."""

    def forget_stream(self, stream: str) -> Any:
        """The stream is gone."""


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


# --- messages the supervisor tells itself (from callbacks, timers and helper threads) --


@dataclass(frozen=True, slots=True)
class _ReaderStopped:
    """Reader number ``serial`` of stream ``name`` finished its ``on_stop``."""

    name: str
    serial: int


@dataclass(frozen=True, slots=True)
class _ReaderCrashed:
    """Reader number ``serial`` of stream ``name`` died with an exception."""

    name: str
    serial: int
    error: str


@dataclass(frozen=True, slots=True)
class _StopOverdue:
    """Reader number ``serial`` of stream ``name`` was asked to stop a while ago."""

    name: str
    serial: int


@dataclass(frozen=True, slots=True)
class _RemovalFlushed:
    """The writer flush after stream ``name`` was removed has finished."""

    name: str
    received: int
    flushed: bool


# --- bookkeeping ------------------------------------------------------------------------


@dataclass
class _Reader:
    """The supervisor's bookkeeping for one stream."""

    feed: FeedConfig
    stats: StreamStats
    want_running: bool
    ref: pykka.ActorRef[Any] | None = None
    serial: int = 0
    """Which reader ``ref`` is (every reader started gets a new number)."""
    generation: int = 0
    """Bumped by every start and stop: a restart timer of an older generation is stale."""
    start_pending: bool = False
    """Start a reader as soon as the previous one has stopped."""


@dataclass
class _Stopping:
    """A reader asked to stop that has not reported back yet."""

    ref: pykka.ActorRef[Any]
    serial: int
    stats: StreamStats
    why: str
    asked_at: float
    done: pykka.Future[bool]
    """pykka's stop future: set once ``on_stop`` returned (never waited on, only peeked)."""
    then: list[Callable[[], None]] = field(default_factory=list)
    """What to do once it has stopped (a removal forgets and flushes the stream)."""
    cancel_overdue: Callable[[], None] | None = None
    warned: bool = False


@dataclass
class _Settling:
    """A control-plane caller waiting until ``names`` have no stop or flush in progress."""

    names: set[str]
    future: concurrent.futures.Future[None]


def _error_text(args: tuple[Any, ...]) -> str:
    """Describe the exception among ``args`` (callbacks pass it alone or as exc_info)."""
    for arg in args:
        if isinstance(arg, BaseException):
            return f"{type(arg).__name__}: {arg}"
    return "unknown error" if not args else repr(args[0])


def _resolved(future: pykka.Future[Any]) -> bool:
    """True when ``future`` has its value (peeks without waiting)."""
    try:
        future.get(timeout=0)
    except pykka.Timeout:
        return False
    except Exception:  # noqa: BLE001 - set with an exception is resolved too
        return True
    return True


def _default_reader_factory(destinations: FeedDestinations) -> ReaderFactory:
    from tps.actors.reader import StreamReader  # only processes that ingest need it

    factory: ReaderFactory = functools.partial(StreamReader.start, destinations=destinations)
    return factory


class Supervisor(pykka.ThreadingActor):
    """Supervises the writer, the query pool and one reader per stream.

    Build it for a role: ``all`` passes everything; ``ingest`` passes no ``queries``;
    ``api`` passes only ``queries`` (no sink means this process ingests
    nothing, and adding a stream raises :class:`StreamError`).

    ``sink`` is the one sink every reader writes into (the service composes it from
    ``WriterHandle.submit`` and ``LiveHub.publish``). ``registry=None`` runs the
    configured feeds without persisting changes. ``board`` receives every stats object
    and the published view for /health, /ready and /metrics. ``stop_timeout`` is how
    long a reader may take to stop before it is reported (and, at shutdown, left
    behind); ``flush_timeout`` bounds the flush after a removal.

    ``destinations`` is the feed-destination policy (default: built from ``settings``):
    a new stream whose URL it refuses without DNS is refused at once, and the default
    reader factory hands it to every reader, which checks it before every connect (a
    ``reader_factory`` passed in brings its own). At most ``settings.max_streams``
    streams are registered.

    Use it through :class:`SupervisorProxy` (:func:`supervisor_proxy`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        sink: ReadingSink | None = None,
        writer: WriterLike | None = None,
        queries: QueryPoolLike | None = None,
        registry: StreamRegistry | None = None,
        hub: LiveHub | None = None,
        board: StatsBoard | None = None,
        reader_factory: ReaderFactory | None = None,
        alarms: AlarmsLike | None = None,
        policy: RestartPolicy | None = None,
        stop_timeout: float = 3.0,
        flush_timeout: float = 2.0,
        destinations: FeedDestinations | None = None,
    ) -> None:
        super().__init__()
        self._settings = settings
        self._destinations = destinations or FeedDestinations.from_settings(settings)
        self._sink = sink
        self._writer = writer
        self._queries = queries
        self._registry = registry
        self._hub = hub
        self.board = board or StatsBoard()
        self._reader_factory = reader_factory
        self._alarms = alarms
        self._configured_limits = dict(settings.limits)
        self._runtime_limits: dict[str, Limits | None] = {}
        self._policy = policy or RestartPolicy()
        self._stop_timeout = stop_timeout
        self._flush_timeout = flush_timeout
        self._readers: dict[str, _Reader] = {}
        self._stopping: dict[str, _Stopping] = {}
        self._flushes: Counter[str] = Counter()
        self._settling: list[_Settling] = []
        self._flusher: concurrent.futures.ThreadPoolExecutor | None = None
        self._serial = 0
        self._writer_generation = 0
        self._query_failed: set[int] = set()
        self._timers: dict[str, Callable[[], None]] = {}
        self._shut_down = False

    # --- lifecycle ------------------------------------------------------------------

    def on_start(self) -> None:
        """Start the writer, the query pool and the readers of every running stream."""
        if self._writer is not None:
            self._writer.start(self._writer_reporter)
        if self._queries is not None:
            self._queries.start(self._query_reporter)
        if self._sink is None:
            logger.info("Supervisor started without readers (role=%s)", self._settings.role)
            self._publish()
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
        limit = self._settings.max_streams
        started = 0
        for index, (feed, running) in enumerate(entries):
            reader = self._track(feed, running)
            if index >= limit:
                reader.stats.state = StreamState.REFUSED
                reader.stats.last_error = (f"refused: more than TPS_MAX_STREAMS ({limit}) "
                                           "streams; not started")
            elif running:
                self._start_reader(reader)
                started += 1
        if len(entries) > limit:
            logger.error("%d streams are registered but TPS_MAX_STREAMS is %d; the last %d "
                         "are not started (state refused)", len(entries), limit,
                         len(entries) - limit)
        if self._alarms is not None:
            self._alarms.limits_loaded({name: self._limits_of(name) for name in self._readers})
        self._publish()
        stopped = [feed.name for feed, running in entries if not running]
        logger.info(
            "Supervisor started %d of %d streams (role=%s)%s",
            started,
            len(entries),
            self._settings.role,
            f"; left stopped as an operator stopped them before: {', '.join(stopped)} "
            "('tps streams start NAME' resumes one)" if stopped else "",
        )

    def on_stop(self) -> None:
        """Shut the children down if nobody called :meth:`shutdown` first."""
        if not self._shut_down:
            self.shutdown()

    def on_receive(self, message: Any) -> Any:
        """Handle reports from children, timers and the flush helper."""
        if isinstance(message, _ReaderStopped):
            self._reader_stopped(message)
        elif isinstance(message, _ReaderCrashed):
            self._reader_crashed(message)
        elif isinstance(message, _StopOverdue):
            self._stop_overdue(message)
        elif isinstance(message, _RemovalFlushed):
            self._removal_flushed(message)
        elif isinstance(message, ChildFailed):
            self._child_failed(message)
        elif isinstance(message, RestartChild):
            self._restart_child(message)
        else:
            logger.warning("Supervisor ignored an unexpected message %r", message)
        self._publish()
        return None

    # --- public API (via SupervisorProxy; every call returns quickly) ---------------

    def list_streams(self) -> list[StreamStats]:
        """Stats of every stream, in registration order."""
        return [reader.stats for reader in self._readers.values()]

    def get_stream(self, name: str) -> StreamStats:
        """Stats of stream ``name``; raises UnknownStream."""
        return self._reader(name).stats

    def add_stream(self, feed: FeedConfig, started: bool = True) -> StreamStats:
        """Register a new stream (persisted) and start its reader unless ``started`` is False.

        Raises InvalidArgument (a bad field, naming it; a URL the destination policy
        refuses without DNS), StreamExists, TooManyStreams, or StreamError when this
        process does not ingest.
        """
        if self._sink is None:
            raise StreamError(
                f"this process runs role={self._settings.role} and ingests no streams"
            )
        check_feed(feed)
        try:
            self._destinations.precheck(feed.url)
        except FeedRefused as exc:
            raise InvalidArgument("url", exc.reason) from None
        if feed.name in self._readers:
            raise StreamExists(feed.name)
        limit = self._settings.max_streams
        if len(self._readers) >= limit:
            raise TooManyStreams("TPS_MAX_STREAMS", limit, len(self._readers) + 1, "streams")
        reader = self._track(feed, started)
        self._persist(lambda registry: registry.put(feed, started))
        if self._alarms is not None:
            self._alarms.set_limits(feed.name, self._limits_of(feed.name))
        if started:
            self._start_reader(reader)
        self._publish()
        logger.info(
            "Stream %r added (%s, protocol %s); %s",
            feed.name,
            redact_url(feed.url),
            feed.protocol,
            _start_outcome(reader) if started else "left stopped",
        )
        return reader.stats

    def remove_stream(self, name: str) -> StreamStats:
        """Forget stream ``name`` (persisted) and stop its reader.

        Once the reader has stopped, the stream leaves the live hub and the writer is
        asked to flush what it read; :meth:`settled` covers both.
        """
        reader = self._reader(name)
        reader.want_running = False
        stopping = self._stop_reader(reader, "removed by operator")
        del self._readers[name]
        self.board.drop_stream(name)
        self._clear_failed(READER_PREFIX + name)
        self._policy.forget(READER_PREFIX + name)
        self._persist(lambda registry: registry.remove(name))
        self._runtime_limits.pop(name, None)
        if self._alarms is not None:
            self._alarms.forget_stream(name)

        def forget_and_flush() -> None:
            if self._hub is not None:
                self._hub.forget(name)
            self._flush_after_removal(name, reader.stats)

        if stopping is None:
            forget_and_flush()
        else:
            stopping.then.append(forget_and_flush)
        self._publish()
        return reader.stats

    def stop_stream(self, name: str) -> StreamStats:
        """Pause stream ``name`` (persisted); idempotent. Its reader stops shortly after."""
        reader = self._reader(name)
        reader.want_running = False
        if self._stop_reader(reader, "stopped by operator") is None:
            reader.stats.state = StreamState.STOPPED  # no reader: the stats are ours
        self._clear_failed(READER_PREFIX + name)
        self._persist(lambda registry: registry.set_running(name, False))
        self._publish()
        logger.info("Stream %r stopped by operator; it stays registered", name)
        return reader.stats

    def start_stream(self, name: str) -> StreamStats:
        """Resume stream ``name`` (persisted); also revives a failed reader. Idempotent."""
        reader = self._reader(name)
        if reader.want_running and (
            reader.start_pending or (reader.ref is not None and reader.ref.is_alive())
        ):
            return reader.stats
        reader.want_running = True
        self._cancel_timer(READER_PREFIX + name)
        self._policy.forget(READER_PREFIX + name)
        self._clear_failed(READER_PREFIX + name)
        self._persist(lambda registry: registry.set_running(name, True))
        if reader.ref is not None:
            # Dead but not yet reported: its crash report (sent once its socket is
            # closed) ends it, and the new reader starts then.
            self._stop_reader(reader, "replaced by an operator start")
        self._start_reader(reader)
        self._publish()
        logger.info("Stream %r started by operator; %s", name, _start_outcome(reader))
        return reader.stats

    def set_all(self, running: bool) -> list[StreamStats]:
        """Start or stop every stream; returns their stats."""
        for name in list(self._readers):
            if running:
                self.start_stream(name)
            else:
                self.stop_stream(name)
        return self.list_streams()

    def get_limits(self, name: str) -> Limits | None:
        """The limits stream ``name`` is evaluated against (None: none); UnknownStream."""
        self._reader(name)
        return self._limits_of(name)

    def set_limits(self, name: str, limits: Limits | None) -> Limits | None:
        """Replace (None: clear) the limits of stream ``name``, persisted in the registry.

        Raises UnknownStream, or StreamError in a process that evaluates no limits.
        ``limits`` are validated already (:func:`tps.alarms.limits.parse_limits`).
        """
        self._reader(name)
        if self._alarms is None:
            raise StreamError(f"this process runs role={self._settings.role} and "
                              "evaluates no limits")
        self._persist(lambda registry: registry.set_limits(name, limits))
        self._runtime_limits[name] = limits
        self._alarms.set_limits(name, limits)
        logger.info("Stream %r: limits %s", name,
                    "cleared" if limits is None else limits.to_json())
        return limits

    def _limits_of(self, name: str) -> Limits | None:
        if name in self._runtime_limits:
            return self._runtime_limits[name]
        entry = self._registry.get(name) if self._registry is not None else None
        if entry is not None and entry.limits_set:
            return entry.limits
        return self._configured_limits.get(name)

    def settled(self, names: Sequence[str] | None = None) -> concurrent.futures.Future[None]:
        """A future that completes once ``names`` (default: every stream) have no reader
        stopping and no flush after a removal in progress.

        Ask it right after a change (the mailbox is FIFO, so it sees that change) and
        await the future off the supervisor's thread: the control plane answers an
        operator once the change has taken effect, and the supervisor waits for nothing.
        """
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        wanted = self._busy_names() if names is None else set(names)
        busy = {name for name in wanted if self._busy(name)}
        if busy and not self._shut_down:
            self._settling.append(_Settling(busy, future))
        else:
            future.set_result(None)
        return future

    def writer_stats(self) -> WriterStats | None:
        """The writer's counters (None when this process has no writer)."""
        return self.board.writer()

    def health(self) -> dict[str, Any]:
        """Which children are alive, failed or restarting; stream states.

        The same summary ``/health`` builds from the board without asking.
        """
        self._publish()
        return health_summary(self.board)

    def inject_failure(self, name: str, reason: str = "injected failure") -> None:
        """Make the reader of ``name`` crash through its real failure path (tests, drills)."""
        reader = self._reader(name)
        if reader.ref is None or not reader.ref.is_alive():
            raise StreamError(f"stream {name!r} has no running reader")
        logger.warning("Injecting a failure into the reader of stream %r: %s", name, reason)
        reader.ref.tell(InjectFailure(reason))

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop readers, flush and stop the writer, stop the query pool: the one call
        that waits, each step bounded (readers: ``stop_timeout`` in all; the writer:
        ``timeout``, default ``settings.shutdown_timeout``).

        True when the writer flushed everything within ``timeout``. Idempotent.
        """
        if self._shut_down:
            return True
        self._shut_down = True
        for key in list(self._timers):
            self._cancel_timer(key)
        if self._flusher is not None:
            self._flusher.shutdown(wait=False, cancel_futures=True)
        waiting: list[tuple[str, pykka.Future[bool]]] = []
        for name, reader in self._readers.items():
            reader.generation += 1
            reader.start_pending = False
            if reader.ref is not None:
                waiting.append((name, reader.ref.stop(block=False)))
                reader.ref = None
        for name, stopping in self._stopping.items():
            if stopping.cancel_overdue is not None:
                stopping.cancel_overdue()
            waiting.append((name, stopping.done))
        self._stopping.clear()
        deadline = time.monotonic() + self._stop_timeout
        for name, future in waiting:
            try:
                future.get(timeout=max(0.0, deadline - time.monotonic()))
            except pykka.Timeout:
                logger.warning("Reader of stream %r did not stop within %.1f s of the "
                               "shutdown; leaving it behind", name, self._stop_timeout)
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
        for settling in self._settling:
            settling.future.set_result(None)
        self._settling.clear()
        self._publish()
        logger.info("Supervisor shut down its children (writer flushed: %s)", flushed)
        return flushed

    # --- children reporting ----------------------------------------------------------

    def _writer_reporter(self, error: BaseException) -> None:
        """The writer's failure callback: it only tells the supervisor."""
        self._tell_self(ChildFailed(WRITER, _error_text((error,))))

    def _query_reporter(self, index: int, error: BaseException) -> None:
        self._tell_self(ChildFailed(f"{QUERY_PREFIX}{index}", _error_text((error,))))

    def _reader_callbacks(
        self, name: str, serial: int
    ) -> tuple[Callable[[BaseException], None], Callable[[], None]]:
        """(on_failure, on_stopped) for reader number ``serial`` of ``name``: both only
        tell the supervisor, from the reader's thread."""

        def crashed(*args: Any) -> None:
            self._tell_self(_ReaderCrashed(name, serial, _error_text(args)))

        def stopped() -> None:
            self._tell_self(_ReaderStopped(name, serial))

        return crashed, stopped

    def _tell_self(self, message: Any) -> None:
        try:
            self.actor_ref.tell(message)
        except pykka.ActorDeadError:
            logger.debug("%r arrived after the supervisor stopped", message)

    # --- stopping readers -------------------------------------------------------------

    def _stop_reader(self, reader: _Reader, why: str) -> _Stopping | None:
        """Ask the reader to stop (without waiting); the stop still in progress, if any."""
        name = reader.feed.name
        reader.generation += 1
        reader.start_pending = False
        self._cancel_timer(READER_PREFIX + name)
        ref, reader.ref = reader.ref, None
        if ref is None:
            return self._stopping.get(name)  # an earlier reader may still be stopping
        assert name not in self._stopping, "two readers of one stream"
        stopping = _Stopping(ref, reader.serial, reader.stats, why, time.monotonic(),
                             ref.stop(block=False))
        stopping.cancel_overdue = tell_later(self._stop_timeout, self.actor_ref,
                                             _StopOverdue(name, reader.serial))
        self._stopping[name] = stopping
        return stopping

    def _reader_stopped(self, message: _ReaderStopped) -> None:
        stopping = self._stopping.get(message.name)
        if stopping is None or stopping.serial != message.serial:
            logger.debug("Reader %d of stream %r stopped without being asked to",
                         message.serial, message.name)
            return
        self._reader_gone(message.name)

    def _stop_overdue(self, message: _StopOverdue) -> None:
        name = message.name
        stopping = self._stopping.get(name)
        if stopping is None or stopping.serial != message.serial:
            return
        if _resolved(stopping.done):
            logger.warning("Reader of stream %r stopped without reporting it; carrying on "
                           "without its report", name)
            self._reader_gone(name)
            return
        if not stopping.warned:
            stopping.warned = True
            logger.warning(
                "Reader of stream %r has not stopped %.1f s after it was asked (%s); a new "
                "reader of that stream waits until it has",
                name, time.monotonic() - stopping.asked_at, stopping.why,
            )
        stopping.cancel_overdue = tell_later(self._stop_timeout, self.actor_ref, message)

    def _reader_gone(self, name: str) -> None:
        """The stopping reader of ``name`` is gone: finish what waited for it."""
        stopping = self._stopping.pop(name)
        if stopping.cancel_overdue is not None:
            stopping.cancel_overdue()
        logger.debug("Reader of stream %r stopped %.2f s after it was asked (%s)",
                     name, time.monotonic() - stopping.asked_at, stopping.why)
        for then in stopping.then:
            then()
        reader = self._readers.get(name)
        if reader is not None and reader.stats is stopping.stats and not reader.want_running:
            reader.stats.state = StreamState.STOPPED  # no reader any more: the stats are ours
        if reader is not None and reader.start_pending:
            self._start_reader_from_message(reader)
        self._check_settled(name)

    def _flush_after_removal(self, name: str, stats: StreamStats) -> None:
        """Ask the writer to flush what the removed stream read; the answer comes back as
        a message (the handle's flush blocks, so a helper thread waits for it)."""
        writer = self._writer
        if writer is None or not writer.is_alive() or self._shut_down:
            self._log_removed(name, stats.received, flushed=False)
            return
        if self._flusher is None:
            self._flusher = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="tps-removal-flush")
        self._flushes[name] += 1
        received, timeout = stats.received, self._flush_timeout

        def flush() -> None:
            try:
                flushed = writer.flush(timeout)
            except Exception as exc:  # noqa: BLE001 - a failed flush must not fail the removal
                logger.warning("Writer flush after removing stream %r failed: %s", name, exc)
                flushed = False
            self._tell_self(_RemovalFlushed(name, received, flushed))

        self._flusher.submit(flush)

    def _removal_flushed(self, message: _RemovalFlushed) -> None:
        self._flushes[message.name] -= 1
        if self._flushes[message.name] <= 0:
            del self._flushes[message.name]
        self._log_removed(message.name, message.received, message.flushed)
        self._check_settled(message.name)

    @staticmethod
    def _log_removed(name: str, received: int, flushed: bool) -> None:
        logger.info(
            "Stream %r removed by operator after %d readings; %s",
            name,
            received,
            "its readings are flushed" if flushed else "its readings stay queued for writing",
        )

    def _busy(self, name: str) -> bool:
        return name in self._stopping or self._flushes[name] > 0

    def _busy_names(self) -> set[str]:
        return set(self._stopping) | {name for name, n in self._flushes.items() if n > 0}

    def _check_settled(self, name: str) -> None:
        if self._busy(name):
            return
        for settling in list(self._settling):
            settling.names.discard(name)
            if not settling.names:
                self._settling.remove(settling)
                settling.future.set_result(None)

    # --- supervision ----------------------------------------------------------------

    def _child_failed(self, message: ChildFailed) -> None:
        key = message.key
        if self._shut_down:
            logger.info("%s crashed during shutdown (%s); not restarting it", key, message.error)
            return
        if key == WRITER:
            self._writer_crashed(message.error)
        elif key.startswith(QUERY_PREFIX):
            self._query_crashed(int(key[len(QUERY_PREFIX) :]), message.error)
        else:
            logger.warning("Supervisor got a failure report from unknown child %r", key)

    def _reader_crashed(self, message: _ReaderCrashed) -> None:
        name, error = message.name, message.error
        stopping = self._stopping.get(name)
        if stopping is not None and stopping.serial == message.serial:
            logger.info("Reader of stream %r crashed (%s) while it was stopping; it is gone",
                        name, error)
            self._reader_gone(name)
            return
        if self._shut_down:
            logger.info("Reader of stream %r crashed during shutdown (%s); not restarting it",
                        name, error)
            return
        key = READER_PREFIX + name
        reader = self._readers.get(name)
        if reader is None or not reader.want_running or reader.serial != message.serial:
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
            self._mark_failed(key)
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
            self._mark_failed(WRITER)
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
            self._mark_failed(key)
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
        if key.startswith(READER_PREFIX):
            reader = self._readers.get(key[len(READER_PREFIX) :])
            if reader is None or not reader.want_running or reader.generation != message.generation:
                logger.debug("Dropping stale restart of %s", key)
                return
            if reader.ref is not None or reader.start_pending:
                return
            reader.stats.restarts += 1
            self._count_restart(key)
            if not self._start_reader_from_message(reader):
                return
            logger.info(
                "Reader of stream %r restarted (restart %d); ingest resumes",
                reader.feed.name,
                reader.stats.restarts,
            )
        elif key == WRITER and self._writer is not None:
            if message.generation != self._writer_generation:
                return
            self._writer_generation += 1
            count = self._count_restart(key)
            self._writer.start(self._writer_reporter)
            logger.info("Writer restarted (restart %d); it resumes from the spool", count)
        elif key.startswith(QUERY_PREFIX) and self._queries is not None:
            index = int(key[len(QUERY_PREFIX) :])
            count = self._count_restart(key)
            self._queries.restart(index)
            logger.info("Query actor %d restarted (restart %d)", index, count)

    # --- SupervisorStats: copy-on-write, so readers on other threads may iterate ------

    def _count_restart(self, key: str) -> int:
        return self.board.supervisor().count_restart(key)

    def _mark_failed(self, key: str) -> None:
        self.board.supervisor().mark_failed(key)

    def _clear_failed(self, key: str) -> None:
        self.board.supervisor().clear_failed(key)

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
        """Start a reader for the stream, or once its previous reader has stopped."""
        name = reader.feed.name
        if name in self._stopping:
            reader.start_pending = True
            return
        assert self._sink is not None
        reader.start_pending = False
        reader.generation += 1
        self._serial += 1
        reader.serial = self._serial
        reader.stats.state = StreamState.CONNECTING
        on_failure, on_stopped = self._reader_callbacks(name, reader.serial)
        factory = self._reader_factory or _default_reader_factory(self._destinations)
        reader.ref = factory(
            reader.feed,
            self._sink,
            reader.stats,
            max_frame_bytes=self._settings.max_frame_bytes,
            on_failure=on_failure,
            on_stopped=on_stopped,
        )

    def _start_reader_from_message(self, reader: _Reader) -> bool:
        """:meth:`_start_reader` where no caller can receive its error (a restart, a start
        that waited for a stop): a reader that cannot start marks its stream failed
        instead of crashing the supervisor. True when it started (or waits to)."""
        try:
            self._start_reader(reader)
        except Exception as exc:  # noqa: BLE001 - one stream must not stop the supervisor
            name = reader.feed.name
            reader.ref = None
            reader.stats.state = StreamState.FAILED
            reader.stats.last_error = _error_text((exc,))
            self._mark_failed(READER_PREFIX + name)
            logger.error("Could not start the reader of stream %r (%s); marked failed "
                         "(POST /api/streams/%s/start tries again)",
                         name, reader.stats.last_error, name)
            return False
        return True

    def _publish(self) -> None:
        """Show the current state of the children to other threads (see board.py)."""
        self.board.publish(SupervisionView(
            role=self._settings.role,
            running=not self._shut_down,
            supervisor=self.actor_ref,
            readers={name: ReaderView(r.want_running, r.ref) for name, r in self._readers.items()},
            writer=self._writer,
            has_queries=self._queries is not None,
            failed_queries=frozenset(self._query_failed),
        ))

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


class SupervisorProxy(ActorMemberMixin, pykka.ActorProxy[Supervisor]):
    """The supervisor's public API as a typed pykka proxy: mypy checks every call.

    Every method returns a pykka future at once; the supervisor answers quickly. Get
    one with :func:`supervisor_proxy`.
    """

    list_streams = proxy_method(Supervisor.list_streams)
    get_stream = proxy_method(Supervisor.get_stream)
    add_stream = proxy_method(Supervisor.add_stream)
    remove_stream = proxy_method(Supervisor.remove_stream)
    stop_stream = proxy_method(Supervisor.stop_stream)
    start_stream = proxy_method(Supervisor.start_stream)
    set_all = proxy_method(Supervisor.set_all)
    settled = proxy_method(Supervisor.settled)
    get_limits = proxy_method(Supervisor.get_limits)
    set_limits = proxy_method(Supervisor.set_limits)
    writer_stats = proxy_method(Supervisor.writer_stats)
    health = proxy_method(Supervisor.health)
    inject_failure = proxy_method(Supervisor.inject_failure)
    shutdown = proxy_method(Supervisor.shutdown)


def supervisor_proxy(ref: pykka.ActorRef[Supervisor]) -> SupervisorProxy:
    """The typed proxy of a started supervisor."""
    return cast(SupervisorProxy, ref.proxy())


def _start_outcome(reader: _Reader) -> str:
    if reader.start_pending:
        return "its reader starts once the previous one has stopped"
    return "reader started"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
