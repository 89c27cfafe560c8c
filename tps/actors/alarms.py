"""The alarm keeper: the one owner of alarm state, and the hooks around it.

Who owns what:

- :class:`LimitsTable` maps a stream to its :class:`~tps.alarms.checker.LimitChecker`.
  The keeper replaces the map whole (copy on write) when limits change; the ingest sink
  only reads it. A checker's fields are touched by the one thread delivering that
  stream's batches (``last_seen_ns`` is also read by the keeper's staleness tick).
- :class:`AlarmKeeper` (an actor) owns the :class:`~tps.alarms.lifecycle.AlarmBook`.
  Checker reports, the staleness tick, and operators' acknowledge/shelve reach it as
  messages; it never waits on a socket (the history is loaded by a helper thread that
  tells it the result, and the store is written by the journal's shipper thread).
- For each change it makes, the keeper appends the events to the
  :class:`~tps.alarms.journal.AlarmJournal` (durable before anyone sees them), then
  publishes them on the :class:`AlarmHub` (GraphQL subscriptions, Alertmanager, the
  webhook), then replaces the :class:`AlarmBoard`'s immutable :class:`AlarmView`, which
  the HTTP layer reads without asking the actor.

:func:`checking_sink` is the ingest hook: per batch, a dict look-up and the checker's
fast path; a message to the keeper only when something changed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Protocol, cast

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from tps.actors.timer import Ticker
from tps.alarms.alertmanager import AlertmanagerSender, WebhookSender
from tps.alarms.checker import CRITICAL, WARNING, LimitChecker, Report
from tps.alarms.journal import JOURNAL_FILE, AlarmJournal, AlarmLogShipper
from tps.alarms.lifecycle import AlarmBook
from tps.alarms.limits import Limits
from tps.alarms.model import AlarmEvent, AlarmSnapshot, Severity, StreamAlarmState
from tps.config.settings import Settings
from tps.errors import AlarmsUnavailable
from tps.ingest.backoff import Backoff
from tps.model import Reading
from tps.store.alarm_log import AlarmLog, open_alarm_log

logger = logging.getLogger(__name__)

MAX_BACKLOG = 10_000
"""Checker reports held while the history loads (beyond: the oldest are dropped)."""

EventListener = Callable[[Sequence[AlarmEvent]], None]
RestoreListener = Callable[[Sequence[AlarmSnapshot]], None]


class EventSink(Protocol):
    """Where the keeper makes its events durable before anyone sees them: the local
    :class:`~tps.alarms.journal.AlarmJournal` (single-node mode) or the cluster's
    JetStream publisher (:mod:`tps.cluster.alarms`). ``append`` must not block on the
    network."""

    def append(self, events: Sequence[AlarmEvent]) -> None:
        """Take ``events`` (the keeper's thread; in order)."""


@dataclass(frozen=True, slots=True)
class CheckerReported:
    """A checker saw something change (ingest sink -> keeper)."""

    checker: LimitChecker
    reports: tuple[Report, ...]


@dataclass(frozen=True, slots=True)
class AlarmTick:
    """Time to look for silent streams and ended shelves (ticker -> keeper)."""


@dataclass(frozen=True, slots=True)
class HistoryLoaded:
    """The latest event of every alarm in the store, plus the journal's (loader -> keeper)."""

    events: tuple[AlarmEvent, ...]


class LimitsTable:
    """stream -> checker, read by ingest threads, replaced whole by the keeper."""

    def __init__(self) -> None:
        self._checkers: Mapping[str, LimitChecker] = MappingProxyType({})

    def get(self, stream: str) -> LimitChecker | None:
        """The checker of ``stream`` (None: no limits)."""
        return self._checkers.get(stream)

    def items(self) -> list[tuple[str, LimitChecker]]:
        """A snapshot of every (stream, checker)."""
        return list(self._checkers.items())

    def replace(self, stream: str, checker: LimitChecker | None) -> None:
        """Install (or with None remove) ``stream``'s checker. Keeper thread only."""
        checkers = dict(self._checkers)
        if checker is None:
            checkers.pop(stream, None)
        else:
            checkers[stream] = checker
        self._checkers = MappingProxyType(checkers)


def checking_sink(table: LimitsTable, keeper: pykka.ActorRef[Any]) -> Callable[
        [Sequence[Reading]], None]:
    """The ingest hook: evaluate one stream's batch, tell the keeper what changed."""
    get = table.get

    def check(readings: Sequence[Reading]) -> None:
        if not readings:
            return
        checker = get(readings[0].stream)
        if checker is None:
            return
        reports = checker.check(readings)
        if reports:
            try:
                keeper.tell(CheckerReported(checker, tuple(reports)))
            except pykka.ActorDeadError:
                logger.debug("Alarm keeper stopped; %d report(s) dropped", len(reports))

    return check


class AlarmHub:
    """Thread-safe listener lists; listeners must only hand work over, never block."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[EventListener] = []
        self._restores: list[RestoreListener] = []

    def subscribe(self, listener: EventListener) -> Callable[[], None]:
        """Add an event listener; returns the function that removes it."""
        with self._lock:
            self._events.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._events:
                    self._events.remove(listener)

        return unsubscribe

    def on_restore(self, listener: RestoreListener) -> None:
        """Call ``listener`` with the open alarms once they are restored after start."""
        with self._lock:
            self._restores.append(listener)

    def publish(self, events: Sequence[AlarmEvent]) -> None:
        """Hand ``events`` to every listener (a failing listener stays subscribed)."""
        with self._lock:
            listeners = list(self._events)
        for listener in listeners:
            try:
                listener(events)
            except Exception:
                logger.exception("Alarm listener %r failed; it stays subscribed", listener)

    def restored(self, snapshots: Sequence[AlarmSnapshot]) -> None:
        """Tell the restore listeners which alarms are open after a restart."""
        with self._lock:
            listeners = list(self._restores)
        for listener in listeners:
            try:
                listener(snapshots)
            except Exception:
                logger.exception("Alarm restore listener %r failed", listener)


@dataclass(frozen=True, slots=True)
class AlarmView:
    """Alarms as the keeper last published them (immutable; replaced on each change)."""

    restored: bool = False
    open: tuple[AlarmSnapshot, ...] = ()
    recent: tuple[AlarmSnapshot, ...] = ()
    states: Mapping[str, StreamAlarmState] = field(default_factory=dict)
    limits: Mapping[str, Limits] = field(default_factory=dict)
    counts: Mapping[tuple[str, str], int] = field(default_factory=dict)

    def find(self, alarm_id: str) -> AlarmSnapshot | None:
        """An open or recently cleared alarm by id."""
        for snapshot in (*self.open, *self.recent):
            if snapshot.id == alarm_id:
                return snapshot
        return None

    def state_of(self, stream: str) -> StreamAlarmState:
        """``Stream.alarmState``."""
        return self.states.get(stream, StreamAlarmState.OK)


class AlarmBoard:
    """Holds the current :class:`AlarmView`; any thread reads ``view``."""

    def __init__(self) -> None:
        self.view = AlarmView()


class AlarmKeeper(pykka.ThreadingActor):
    """The alarm-owning actor (see the module docstring).

    ``load_history`` runs on a helper thread (retried with backoff until it succeeds or
    the keeper stops) and returns the events to rebuild from; ``clock`` gives monotonic
    ns (staleness), the book has its own wall clock.
    """

    def __init__(
        self,
        *,
        book: AlarmBook,
        journal: EventSink,
        table: LimitsTable,
        board: AlarmBoard,
        hub: AlarmHub,
        load_history: Callable[[], Sequence[AlarmEvent]],
        limits: Mapping[str, Limits | None] | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
        tick_interval: float = 0.25,
    ) -> None:
        super().__init__()
        self._book = book
        self._journal = journal
        self._table = table
        self._board = board
        self._hub = hub
        self._load_history = load_history
        self._clock = clock
        self._tick_interval = tick_interval
        self._limits: dict[str, Limits] = {}
        self._initial_limits: dict[str, Limits | None] = dict(limits or {})
        self._limits_ready = limits is not None
        self._installed_at: dict[str, int] = {}
        self._restored = False
        self._backlog: list[CheckerReported] = []
        self._ticker: Ticker | None = None
        self._stop_loading = threading.Event()

    # --- lifecycle --------------------------------------------------------------------

    def on_start(self) -> None:
        """Install the start-up limits, start the tick and the history loader."""
        for stream, limits in self._initial_limits.items():
            self._install(stream, limits)
        self._publish_view()
        self._ticker = Ticker(self._tick_interval, self.actor_ref, AlarmTick()).start()
        threading.Thread(target=self._load, name="alarm-history-loader", daemon=True).start()

    def on_stop(self) -> None:
        """Stop the tick and the loader."""
        self._shutdown()

    def on_failure(self, exception_type: type[BaseException] | None,
                   exception_value: BaseException | None,
                   traceback: TracebackType | None) -> None:
        """Log and release the timers (alarm state lives on in the journal and store)."""
        logger.error("Alarm keeper crashed: %s", exception_value)
        self._shutdown()

    def _shutdown(self) -> None:
        self._stop_loading.set()
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None

    def _load(self) -> None:
        backoff = Backoff(initial=0.5, cap=10.0)
        while not self._stop_loading.is_set():
            try:
                events = tuple(self._load_history())
            except Exception as exc:  # noqa: BLE001 - any failure: retry, the store may return
                delay = backoff.next_delay()
                logger.warning("Loading the alarm history failed (%s); alarms cannot be "
                               "acknowledged until it loads; retrying in %.1f s", exc, delay)
                self._stop_loading.wait(delay)
                continue
            with contextlib.suppress(pykka.ActorDeadError):
                self.actor_ref.tell(HistoryLoaded(events))
            return

    # --- messages -------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        """Dispatch the keeper's messages."""
        if isinstance(message, CheckerReported):
            if self._table.get(message.checker.stream) is not message.checker:
                return None  # from checker replaced since: its limits no longer apply
            if not self._restored:
                self._backlog.append(message)
                if len(self._backlog) > MAX_BACKLOG:
                    del self._backlog[0]
                return None
            events: list[AlarmEvent] = []
            for report in message.reports:
                events += self._book.on_report(report)
            self._commit(events, changed=True)
        elif isinstance(message, AlarmTick):
            if self._restored:
                self._commit(self._check_silence() + self._book.expire_shelves())
        elif isinstance(message, HistoryLoaded):
            self._restore(message.events)
        else:
            logger.warning("Alarm keeper ignored unexpected message %r", message)
        return None

    def _restore(self, events: Sequence[AlarmEvent]) -> None:
        count = self._book.restore(events)
        self._restored = True
        logger.info("Alarm history loaded: %d open alarm(s) restored from %d event(s)",
                    count, len(events))
        self._hub.restored(self._book.open_alarms())
        restored_events = self._release_orphans()
        backlog, self._backlog = self._backlog, []
        for message in backlog:
            if self._table.get(message.checker.stream) is message.checker:
                for report in message.reports:
                    restored_events += self._book.on_report(report)
        self._commit(restored_events, changed=True)

    def _release_orphans(self) -> list[AlarmEvent]:
        """Alarms of streams whose limits went away while TPS was down can never return
        by themselves: once both the history and the limits are known, they return."""
        if not (self._restored and self._limits_ready):
            return []
        events: list[AlarmEvent] = []
        for stream in sorted({alarm.stream for alarm in self._book.open_alarms()}):
            events += self._release_uncovered(stream, "limits removed")
        return events

    def _check_silence(self) -> list[AlarmEvent]:
        now = self._clock()
        events: list[AlarmEvent] = []
        for stream, checker in self._table.items():
            stale_ns = checker.stale_after_ns
            if stale_ns is None or self._book.is_stale(stream):
                continue
            last = checker.last_seen_ns
            if last is None:
                last = self._installed_at.get(stream, now)
            if now - last > stale_ns:
                events += self._book.on_stale(stream, (now - last) / 1e9,
                                              stale_ns / 1e9)
        return events

    def _commit(self, events: list[AlarmEvent], changed: bool = False) -> None:
        """Make events durable, publish them, then the new view."""
        if events:
            self._journal.append(events)
            self._hub.publish(events)
        if events or changed:
            self._publish_view()

    def _publish_view(self) -> None:
        book = self._book
        streams = set(self._limits) | {a.stream for a in book.open_alarms()}
        self._board.view = AlarmView(
            restored=self._restored,
            open=tuple(book.open_alarms()),
            recent=tuple(book.recent_cleared()),
            states=MappingProxyType({s: book.stream_state(s) for s in streams}),
            limits=MappingProxyType(dict(self._limits)),
            counts=MappingProxyType(book.active_counts()),
        )

    # --- the proxy API (each answers at once) ------------------------------------------

    def set_limits(self, stream: str, limits: Limits | None) -> None:
        """Evaluate ``stream`` against ``limits`` from now on (None: stop).

        The new checker starts undecided, so its first reading tells where the stream
        stands under the new limits. Alarms the new limits no longer cover (no value
        limits, no ``staleAfter``, or no limits at all) count as returned.
        """
        self._install(stream, limits)
        events = self._release_uncovered(stream, "limits changed" if limits else
                                         "limits removed")
        self._commit(events, changed=True)

    def _install(self, stream: str, limits: Limits | None, resume: bool = False) -> None:
        if limits is None:
            self._limits.pop(stream, None)
        else:
            self._limits[stream] = limits
        if limits is None or limits.is_empty:
            self._installed_at.pop(stream, None)
            self._table.replace(stream, None)
            return
        self._installed_at[stream] = self._clock()
        checker = LimitChecker(stream, limits, clock=self._clock)
        if resume:
            alarm = self._book.open_value_alarm(stream)
            if alarm is not None and alarm.out_of_limits:
                checker.resume(CRITICAL if alarm.severity is Severity.CRITICAL else WARNING,
                               alarm.most_severe_value)
        self._table.replace(stream, checker)

    def adopt_stream(self, stream: str, events: Sequence[AlarmEvent],
                     limits: Limits | None) -> int:
        """Cluster mode: this process now reads ``stream``. Continue its alarms from
        ``events`` (their latest events in the cluster's log) - same ids, same
        sequence - and evaluate it against ``limits`` from where its open alarm stands.
        Returns how many open alarms were taken over."""
        self._book.drop_stream(stream)
        count = self._book.restore(e for e in events if e.alarm.stream == stream)
        self._install(stream, limits, resume=True)
        self._commit(self._release_uncovered(stream, "limits changed" if limits
                                             else "limits removed"), changed=True)
        if count:
            logger.info("Stream %s: continuing %d open alarm(s) taken over from the cluster's "
                        "event log", stream, count)
        return count

    def release_stream(self, stream: str) -> None:
        """Cluster mode: another process reads ``stream`` from now on. Stop evaluating
        it and forget its alarms here, without any event (they live on there)."""
        self._install(stream, None)
        self._book.drop_stream(stream)
        self._publish_view()

    def _release_uncovered(self, stream: str, why: str) -> list[AlarmEvent]:
        limits = self._limits.get(stream)
        values = limits is None or not limits.has_levels
        silence = limits is None or limits.stale_after is None
        if not (values or silence):
            return []
        return self._book.release_stream(stream, why, values=values, silence=silence)

    def limits_loaded(self, limits: Mapping[str, Limits | None]) -> None:
        """Every stream's limits at start-up (from the supervisor, once it has read the
        registry); until then no restored alarm is taken for an orphan."""
        for stream, stream_limits in limits.items():
            self._install(stream, stream_limits)
        self._limits_ready = True
        self._commit(self._release_orphans(), changed=True)

    def forget_stream(self, stream: str) -> None:
        """The stream was removed: stop evaluating it; its alarms return."""
        self._install(stream, None)
        self._commit(self._book.release_stream(stream, "stream removed"), changed=True)

    def acknowledge(self, alarm_id: str, comment: str | None = None) -> AlarmSnapshot:
        """Acknowledge an alarm; UnknownAlarm, AlarmClosed, InvalidArgument, AlarmsUnavailable."""
        self._require_restored()
        snapshot, events = self._book.acknowledge(alarm_id, comment)
        self._commit(events)
        return snapshot

    def shelve(self, alarm_id: str, seconds: int, comment: str | None = None) -> AlarmSnapshot:
        """Shelve an alarm for ``seconds``; errors as :meth:`acknowledge`."""
        self._require_restored()
        snapshot, events = self._book.shelve(alarm_id, seconds, comment)
        self._commit(events)
        return snapshot

    def sync(self) -> bool:
        """Answered from the mailbox: every message sent before has been handled."""
        return self._restored

    def _require_restored(self) -> None:
        if not self._restored:
            raise AlarmsUnavailable("the alarm history is still being loaded from the store; "
                                    "try again in a moment")


class AlarmKeeperProxy(ActorMemberMixin, pykka.ActorProxy[AlarmKeeper]):
    """The keeper's public API as a typed pykka proxy (every call returns a future)."""

    set_limits = proxy_method(AlarmKeeper.set_limits)
    limits_loaded = proxy_method(AlarmKeeper.limits_loaded)
    forget_stream = proxy_method(AlarmKeeper.forget_stream)
    acknowledge = proxy_method(AlarmKeeper.acknowledge)
    shelve = proxy_method(AlarmKeeper.shelve)
    sync = proxy_method(AlarmKeeper.sync)
    adopt_stream = proxy_method(AlarmKeeper.adopt_stream)
    release_stream = proxy_method(AlarmKeeper.release_stream)


def keeper_proxy(ref: pykka.ActorRef[AlarmKeeper]) -> AlarmKeeperProxy:
    """The typed proxy of a started keeper."""
    return cast(AlarmKeeperProxy, ref.proxy())


class AlarmParts:
    """The alarm subsystem of an ingesting process, wired (the service builds one).

    ``check`` goes into the ingest sink; ``keeper`` is handed to the supervisor (limits)
    and the HTTP layer (acknowledge, shelve); ``board`` and ``hub`` are read by the HTTP
    layer and metrics. In cluster mode (:meth:`start_cluster`) the keeper's events go
    to JetStream instead of the local journal, and ``board``/``hub`` are the keeper's
    own: the HTTP layer reads the cluster's view of every instance's events.
    """

    def __init__(self, *, journal: AlarmJournal | None, shipper: AlarmLogShipper | None,
                 ref: pykka.ActorRef[AlarmKeeper], table: LimitsTable, board: AlarmBoard,
                 hub: AlarmHub, senders: Sequence[AlertmanagerSender | WebhookSender]) -> None:
        self.journal = journal
        self.shipper = shipper
        self.ref = ref
        self.keeper = keeper_proxy(ref)
        self.table = table
        self.board = board
        self.hub = hub
        self.senders = list(senders)
        self.check = checking_sink(table, ref)

    @classmethod
    def start(cls, settings: Settings) -> AlarmParts:
        """Open the journal, start the shipper, the senders and the keeper."""
        journal = AlarmJournal(settings.data_dir / JOURNAL_FILE)
        pending = journal.open()

        def open_log() -> AlarmLog:
            return open_alarm_log(settings)

        def load_history() -> list[AlarmEvent]:
            log = open_log()
            try:
                return [*log.latest(), *pending]
            finally:
                log.close()

        shipper = AlarmLogShipper(journal, open_log).start()
        hub = AlarmHub()
        senders = start_senders(settings, hub)
        table, board = LimitsTable(), AlarmBoard()
        ref = AlarmKeeper.start(book=AlarmBook(), journal=journal, table=table, board=board,
                                hub=hub, load_history=load_history)
        return cls(journal=journal, shipper=shipper, ref=ref, table=table, board=board,
                   hub=hub, senders=senders)

    @classmethod
    def start_cluster(cls, sink: EventSink) -> AlarmParts:
        """The keeper of a cluster instance that reads feeds: it starts owning no stream
        (each is adopted with its lease) and makes its events durable in ``sink``."""
        table, board, hub = LimitsTable(), AlarmBoard(), AlarmHub()
        ref = AlarmKeeper.start(book=AlarmBook(), journal=sink, table=table, board=board,
                                hub=hub, load_history=list, limits={})
        return cls(journal=None, shipper=None, ref=ref, table=table, board=board, hub=hub,
                   senders=())

    def health(self) -> dict[str, Any]:
        """For /health: history loaded, open alarms, events waiting for the store, senders."""
        view = self.board.view
        info: dict[str, Any] = {"restored": view.restored, "open": len(view.open)}
        if self.journal is not None and self.shipper is not None:
            info["journalPending"] = self.journal.pending()
            info["storeWriteFailures"] = self.shipper.failures
            info["storeLastError"] = (self.shipper.last_error if self.journal.pending()
                                      else None)
        info.update(senders_health(self.senders))
        return info

    def stop(self) -> None:
        """Stop the keeper, the senders, then ship what is left (bounded) and close."""
        try:
            self.ref.stop(timeout=10)
        except pykka.Timeout:
            logger.warning("Alarm keeper did not stop within 10 s")
        for sender in self.senders:
            sender.stop()
        if self.shipper is not None and self.journal is not None:
            if not self.shipper.stop(timeout=5):
                logger.warning("%d alarm event(s) not yet in the store stay in the journal "
                               "%s for the next start", self.journal.pending(),
                               self.journal.path)
            self.journal.close()


def start_senders(settings: Settings, hub: AlarmHub
                  ) -> list[AlertmanagerSender | WebhookSender]:
    """The Alertmanager and webhook senders the settings ask for, fed by ``hub``."""
    senders: list[AlertmanagerSender | WebhookSender] = []
    if settings.alertmanager_url:
        alertmanager = AlertmanagerSender(
            settings.alertmanager_url, resend_interval=settings.alertmanager_resend).start()
        hub.subscribe(alertmanager.submit)
        hub.on_restore(alertmanager.restore)
        senders.append(alertmanager)
    if settings.alarm_webhook_url:
        webhook = WebhookSender(settings.alarm_webhook_url).start()
        hub.subscribe(webhook.submit)
        senders.append(webhook)
    return senders


def senders_health(senders: Sequence[AlertmanagerSender | WebhookSender]) -> dict[str, Any]:
    """The ``alertmanager`` and ``webhook`` parts of the alarm health."""
    info: dict[str, Any] = {}
    for sender in senders:
        if isinstance(sender, AlertmanagerSender):
            info["alertmanager"] = sender.health()
        else:
            info["webhook"] = {"url": sender.shown_url, "posts": sender.posts,
                               "failures": sender.failures, "dropped": sender.dropped,
                               "lastError": sender.last_error}
    return info
