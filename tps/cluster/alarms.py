"""Alarms in cluster mode: one event log on JetStream, evaluated where the readings are.

Limits are evaluated where a stream's readings arrive in order: in the instance that
holds the stream's feed lease (its :class:`~tps.actors.alarms.AlarmKeeper`, unchanged).
What cluster mode adds is around it:

* **The event log is JetStream** (stream ``TPS_ALARMS``, subject ``tps.alarms.<stream>``,
  the event as JSON). The keeper hands its events to an :class:`AlarmEventPublisher`
  instead of a local journal; an event *counts* - subscribers, listings, Alertmanager,
  an operator's acknowledgement being answered - only once JetStream acknowledged it,
  so a ``kill -9`` of the owner (and of its disk) loses nothing anyone saw. Each
  publish names the subject's last sequence it expects
  (``Nats-Expected-Last-Subject-Sequence``): a stream's events form one chain, and an
  instance that is not (or no longer) the stream's owner cannot add to it - its event
  is refused and it re-reads the chain. It also publishes only while it holds the
  stream's lease.
* **Every instance follows the log** (:class:`ClusterAlarmView`: an ordered consumer
  from the first retained event): it keeps each alarm's newest state, publishes the
  :class:`~tps.actors.alarms.AlarmView` that REST, GraphQL and ``/metrics`` read, and
  hands each new event, once, to the instance's :class:`~tps.actors.alarms.AlarmHub`
  (``alarmEvents`` subscriptions, the Alertmanager sender).
* **A new owner continues the alarms** (:class:`AlarmOwnership`): when it takes a
  stream's lease - before its reader starts - it reads the subject's last sequence,
  waits until its view has applied it, and gives the keeper the stream's latest events:
  open alarms continue with the same ids and sequence numbers, and the limit checker
  starts at the level of the open alarm (deadband included). Handing the stream over
  forgets its alarms there without an event; removing the stream returns them.
* **Acknowledge and shelve on any instance** are NATS requests to the owner's
  :class:`AlarmControlServer` (``tps.control.alarms.<instance>``), answered once the
  resulting event is durable; no owner, no answer or a hand-over in progress is
  ``AlarmsUnavailable`` (503 / ``SERVICE_UNAVAILABLE``).
* **Writers store the events** (:class:`AlarmEventStorer`: a durable consumer shared
  by the writer instances, into the store's alarm log) for the history queries.
* **One Alertmanager sender** (:class:`AlertSenderWork`): instances configured with
  ``TPS_ALERTMANAGER_URL`` / ``TPS_ALARM_WEBHOOK_URL`` follow the alarms, but only the
  holder of the ``alert-sender`` lease posts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import nats.errors
import nats.js.errors
import pykka
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api

from tps.actors.alarms import AlarmBoard, AlarmHub, AlarmKeeperProxy, AlarmView
from tps.alarms.alertmanager import AlertmanagerSender, WebhookSender
from tps.alarms.lifecycle import check_shelve_seconds
from tps.alarms.limits import Limits
from tps.alarms.model import AlarmEvent, AlarmSnapshot, Severity, StreamAlarmState
from tps.cluster.jetstream import ERR_WRONG_LAST_SEQUENCE, TRANSIENT_ERRORS, ensure_alarms_stream
from tps.cluster.link import NatsLink
from tps.cluster.names import (
    ALARM_WRITERS_CONSUMER,
    ALARMS_STREAM,
    ALARMS_SUBJECTS,
    alarm_control_subject,
    alarm_subject,
)
from tps.errors import (
    AlarmClosed,
    AlarmsUnavailable,
    ClusterUnavailable,
    InvalidArgument,
    StoreError,
    StoreUnavailable,
    TPSError,
    UnknownAlarm,
    UnknownStream,
)
from tps.ingest.backoff import Backoff
from tps.store.alarm_log import AlarmLog

logger = logging.getLogger(__name__)

MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
RECENT_CLEARED = 1000
ADOPT_TIMEOUT = 10.0
"""Seconds a new owner waits for its view to reach a stream's newest event."""
REQUEST_TIMEOUT = 5.0


def encode_event(event: AlarmEvent) -> bytes:
    """An event as the log carries it (the store's exact JSON record)."""
    return json.dumps(event.to_record(), separators=(",", ":"), allow_nan=False).encode()


def decode_event(data: bytes) -> AlarmEvent:
    """The inverse of :func:`encode_event`; ValueError for anything else."""
    try:
        return AlarmEvent.from_record(json.loads(data))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not an alarm event: {exc}") from None


# --- the owner's publisher ------------------------------------------------------------


@dataclass
class _Barrier:
    index: int
    stream: str
    since: int
    future: asyncio.Future[bool]


class AlarmEventPublisher:
    """The keeper's event sink in cluster mode: events to JetStream, in order, fenced.

    ``append`` (the keeper's thread) only queues and wakes the publishing task on the
    link's loop; ``holds(stream)`` (loop thread) says whether this instance still owns
    the stream; ``on_conflict(stream)`` is called (loop thread) when JetStream refused
    an event because the stream's chain moved on without us - the owner re-reads it.
    """

    def __init__(self, link: NatsLink, holds: Callable[[str], bool],
                 on_conflict: Callable[[str], None]) -> None:
        self._link = link
        self._holds = holds
        self._on_conflict = on_conflict
        self._lock = threading.Lock()
        self._incoming: collections.deque[tuple[int, AlarmEvent]] = collections.deque()
        self._appended = 0
        self._wake: asyncio.Event | None = None
        self._expected: dict[str, int | None] = {}  # loop thread
        self._done = 0  # events handled (published or dropped), loop thread
        self._dropped: dict[str, int] = {}  # stream -> index of its last dropped event
        self._barriers: list[_Barrier] = []
        self.published = 0
        self.dropped = 0
        self.failures = 0

    # --- the keeper's thread ------------------------------------------------------------

    def append(self, events: Sequence[AlarmEvent]) -> None:
        """Queue events for JetStream (never blocks)."""
        if not events:
            return
        with self._lock:
            for event in events:
                self._incoming.append((self._appended, event))
                self._appended += 1
        wake = self._wake
        if wake is not None:
            self._link.loop.call_soon_threadsafe(wake.set)

    @property
    def appended(self) -> int:
        """How many events were appended so far (an index for :meth:`barrier`)."""
        with self._lock:
            return self._appended

    def pending(self) -> int:
        """Events not yet published (any thread)."""
        with self._lock:
            return self._appended - self._done

    # --- the loop -----------------------------------------------------------------------

    def start(self) -> AlarmEventPublisher:
        """Start the publishing task (any thread)."""
        self._link.submit_task(self._run)
        return self

    def expect(self, stream: str, last: int | None) -> None:
        """``stream``'s chain ends at sequence ``last`` (0: empty; None: unknown, publish
        without the fence). Loop thread."""
        self._expected[stream] = last

    def forget(self, stream: str) -> None:
        """No longer ours: drop what we would still publish for it (loop thread)."""
        self._expected.pop(stream, None)

    async def barrier(self, stream: str, since: int) -> bool:
        """Wait until every event appended before now is handled; True when none of
        ``stream``'s events appended at or after index ``since`` was dropped."""
        target = self.appended
        if self._done >= target:
            return self._dropped.get(stream, -1) < since
        future: asyncio.Future[bool] = self._link.loop.create_future()
        self._barriers.append(_Barrier(target, stream, since, future))
        return await future

    async def _run(self) -> None:
        self._wake = asyncio.Event()
        self._wake.set()
        await self._link.connected()
        backoff = Backoff(initial=0.2, cap=5.0)
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                with self._lock:
                    head = self._incoming[0] if self._incoming else None
                if head is None:
                    break
                index, event = head
                try:
                    await self._publish(index, event)
                except TRANSIENT_ERRORS as exc:
                    self.failures += 1
                    delay = backoff.next_delay()
                    if backoff.attempts == 1 or backoff.attempts % 20 == 0:
                        logger.warning("Cannot publish alarm events to JetStream (%r); %d "
                                       "waiting, retrying in %.1f s", exc, self.pending(), delay)
                    await asyncio.sleep(delay)
                    continue
                backoff.reset()
                with self._lock:
                    self._incoming.popleft()
                self._done = index + 1
                self._release_barriers()

    async def _publish(self, index: int, event: AlarmEvent) -> None:
        stream = event.alarm.stream
        if stream not in self._expected or not self._holds(stream):
            self._drop(index, stream, "this instance no longer reads the stream")
            return
        headers = {MSG_ID: f"{event.alarm.id}:{event.seq}"}
        expected = self._expected[stream]
        if expected is not None:
            headers[EXPECTED_LAST] = str(expected)
        try:
            ack = await self._link.js.publish(alarm_subject(stream), encode_event(event),
                                              headers=headers)
        except nats.js.errors.APIError as exc:
            if exc.err_code != ERR_WRONG_LAST_SEQUENCE:
                raise nats.errors.Error(str(exc)) from None  # retried as transient
            self._expected.pop(stream, None)
            self._drop(index, stream, "another instance added to its alarm log")
            self._on_conflict(stream)
            return
        if ack.duplicate:
            logger.debug("Alarm event %s:%d was already in the log", event.alarm.id, event.seq)
        self._expected[stream] = ack.seq
        self.published += 1

    def _drop(self, index: int, stream: str, why: str) -> None:
        self.dropped += 1
        self._dropped[stream] = index
        logger.warning("Alarm event of stream %s not published: %s (it never counted)",
                       stream, why)

    def _release_barriers(self) -> None:
        waiting = []
        for barrier in self._barriers:
            if self._done >= barrier.index:
                if not barrier.future.done():
                    barrier.future.set_result(
                        self._dropped.get(barrier.stream, -1) < barrier.since)
            else:
                waiting.append(barrier)
        self._barriers = waiting


# --- every instance's view ------------------------------------------------------------


class ClusterAlarmView:
    """Every alarm's newest state, from the cluster's event log (see the module doc).

    Runs on the link's loop; ``board.view`` is replaced whole after changes, ``hub``
    gets each new event once (after the first catch-up, which calls
    ``hub.restored`` with the open alarms instead). ``limits`` gives the limits
    ``AlarmView.limits`` should show; ``base`` (optional, run on a helper thread at
    start) gives events older than JetStream keeps (the store's alarm log).
    """

    def __init__(self, link: NatsLink, board: AlarmBoard, hub: AlarmHub,
                 limits: Callable[[], Mapping[str, Limits]],
                 base: Callable[[], Sequence[AlarmEvent]] | None = None) -> None:
        self._link = link
        self.board = board
        self.hub = hub
        self._limits = limits
        self._base = base
        self._open: dict[str, AlarmEvent] = {}
        self._seq: dict[str, int] = {}
        self._recent: collections.deque[AlarmSnapshot] = collections.deque(
            maxlen=RECENT_CLEARED)
        self._synced = False
        self._dirty = False
        self._sub: Subscription | None = None
        self.applied = 0
        """Stream sequence of the newest event applied (any thread may read)."""
        self.events = 0
        self.malformed = 0

    def start(self) -> ClusterAlarmView:
        """Follow the log (returns at once; any thread)."""
        self._link.submit_task(self._run)
        return self

    async def _run(self) -> None:
        await self._link.connected()
        if self._base is not None:
            base = self._base
            try:
                events = await asyncio.get_running_loop().run_in_executor(None, base)
            except Exception as exc:  # noqa: BLE001 - the log is still complete for 30 days
                logger.warning("Alarm view: could not read the stored alarm history (%s); "
                               "alarms open for longer than JetStream keeps events are "
                               "not listed", exc)
                events = []
            for event in events:
                self._apply(event, publish=False)
        while True:
            try:
                await ensure_alarms_stream(self._link.js)
                self._sub = await self._subscribe(self._link.js)
                return
            except (nats.js.errors.APIError, *TRANSIENT_ERRORS) as exc:
                logger.warning("Alarm view: cannot follow the alarm log yet (%r); retrying "
                               "in 1 s", exc)
                await asyncio.sleep(1.0)

    async def _subscribe(self, js: JetStreamContext) -> Subscription:
        sub = await js.subscribe(ALARMS_SUBJECTS, stream=ALARMS_STREAM, cb=self._on_msg,
                                 ordered_consumer=True, idle_heartbeat=1.0,
                                 deliver_policy=api.DeliverPolicy.ALL,
                                 inactive_threshold=300.0)
        info = await sub.consumer_info()
        if info.num_pending == 0 and (info.delivered is None or not info.delivered.stream_seq):
            self._sync()
        return sub

    async def _on_msg(self, msg: Msg) -> None:
        meta = msg.metadata
        try:
            event = decode_event(msg.data)
        except ValueError as exc:
            self.malformed += 1
            logger.error("Alarm view: skipping message %d on %s: %s", meta.sequence.stream,
                         msg.subject, exc)
        else:
            self._apply(event, publish=self._synced)
        self.applied = max(self.applied, meta.sequence.stream)
        if meta.num_pending == 0:
            self._sync()
        self._changed()

    def _apply(self, event: AlarmEvent, publish: bool) -> None:
        alarm_id = event.alarm.id
        if event.seq <= self._seq.get(alarm_id, 0):
            return  # seen (a re-published event, or the store's copy of one)
        self._seq[alarm_id] = event.seq
        self.events += 1
        if event.alarm.is_open:
            self._open[alarm_id] = event
        else:
            self._open.pop(alarm_id, None)
            self._recent.append(event.alarm)
        if publish:
            self.hub.publish([event])

    def _sync(self) -> None:
        if self._synced:
            return
        self._synced = True
        self._publish_view()
        logger.info("Alarm view: caught up with the cluster's alarm log (%d open alarm(s))",
                    len(self._open))
        self.hub.restored([e.alarm for e in self._open.values()])

    def _changed(self) -> None:
        if not self._dirty:
            self._dirty = True
            self._link.loop.call_soon(self._publish_view)

    def refresh(self) -> None:
        """Publish the view again (limits changed); any thread."""
        self._link.loop.call_soon_threadsafe(self._changed)

    def _publish_view(self) -> None:
        self._dirty = False
        open_alarms = sorted((e.alarm for e in self._open.values()),
                             key=lambda a: (a.triggered_at_ns, a.id))
        states: dict[str, StreamAlarmState] = {}
        counts: dict[tuple[str, str], int] = {}
        for alarm in open_alarms:
            key = (alarm.stream, str(alarm.severity))
            counts[key] = counts.get(key, 0) + 1
            if not alarm.out_of_limits:
                continue
            if alarm.severity is Severity.STALE:
                states[alarm.stream] = StreamAlarmState.STALE
            elif states.get(alarm.stream) is not StreamAlarmState.STALE:
                states[alarm.stream] = StreamAlarmState(str(alarm.severity))
        try:
            limits = dict(self._limits())
        except Exception:  # a view without limits beats none
            logger.exception("Alarm view: reading the limits failed")
            limits = {}
        self.board.view = AlarmView(
            restored=self._synced, open=tuple(open_alarms), recent=tuple(self._recent),
            states=MappingProxyType(states), limits=MappingProxyType(limits),
            counts=MappingProxyType(counts))

    # --- for a new owner -------------------------------------------------------------

    def wait_applied(self, seq: int, timeout: float) -> bool:
        """Block (not on the loop) until the view applied stream sequence ``seq``."""
        deadline = time.monotonic() + timeout
        while self.applied < seq:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    async def latest_events(self, stream: str) -> list[AlarmEvent]:
        """The newest event of each open alarm of ``stream`` (loop thread)."""
        return [e for e in self._open.values() if e.alarm.stream == stream]

    def close(self) -> None:
        """Stop following (any thread)."""
        sub = self._sub
        if sub is not None:
            self._link.submit(lambda: _quiet_unsubscribe(sub))


async def _quiet_unsubscribe(sub: Subscription) -> None:
    with contextlib.suppress(*TRANSIENT_ERRORS):
        await sub.unsubscribe()


# --- the owner: adopting and handing over streams ---------------------------------------


class AlarmOwnership:
    """What the reader control does about alarms when this instance takes or hands
    over a stream, or its limits change (blocking calls, all on the reader control's
    one worker thread, so the keeper gets a stream's adoption and limit changes in the
    order they happened and always ends with the registry's newest limits)."""

    def __init__(self, link: NatsLink, keeper: AlarmKeeperProxy, view: ClusterAlarmView,
                 publisher: AlarmEventPublisher,
                 limits_of: Callable[[str], Limits | None]) -> None:
        self._link = link
        self._keeper = keeper
        self._view = view
        self._publisher = publisher
        self._limits_of = limits_of
        self._adopted: frozenset[str] = frozenset()
        self._given: dict[str, Limits | None] = {}  # worker thread: limits the keeper has
        self.adopted_streams = 0

    def owns(self, stream: str) -> bool:
        """True once ``stream`` was adopted here and until it is released (any thread)."""
        return stream in self._adopted

    def adopt(self, stream: str) -> None:
        """Continue ``stream``'s alarms here (before its reader starts)."""
        last: int | None = None
        deadline = time.monotonic() + ADOPT_TIMEOUT
        while last is None and time.monotonic() < deadline:
            try:
                last = self._link.call(lambda: _last_sequence(self._link.js, stream),
                                       REQUEST_TIMEOUT)
            except (ClusterUnavailable, *TRANSIENT_ERRORS) as exc:
                logger.warning("Stream %s: cannot read its alarm log yet (%r); retrying", stream,
                               exc)
                time.sleep(0.5)
        if last is None:
            logger.error("Stream %s: its alarm log could not be read; evaluating its limits "
                         "from scratch (an alarm open elsewhere may be raised again)", stream)
        elif not self._view.wait_applied(last, max(0.5, deadline - time.monotonic())):
            logger.error("Stream %s: this instance's alarm view did not reach the log's "
                         "newest event in time; continuing from what it has", stream)
        events = self._link.call(lambda: self._view.latest_events(stream), REQUEST_TIMEOUT)

        async def expect() -> None:
            self._publisher.expect(stream, last)
        self._link.call(expect, REQUEST_TIMEOUT)
        limits = self._limits_of(stream)
        self._keeper.adopt_stream(stream, events, limits).get(timeout=10)
        self._given[stream] = limits
        self._adopted = self._adopted | {stream}
        self.adopted_streams += 1

    def release(self, stream: str, removed: bool) -> None:
        """Stop evaluating ``stream`` here: its alarms return when it was removed (those
        events are durable before this returns), else they stay as they are, for the
        next owner."""
        self._adopted = self._adopted - {stream}
        self._given.pop(stream, None)
        try:
            if removed:
                since = self._publisher.appended
                self._keeper.forget_stream(stream).get(timeout=10)
                self._link.call(lambda: self._publisher.barrier(stream, since),
                                REQUEST_TIMEOUT * 2)
            else:
                self._keeper.release_stream(stream).get(timeout=10)
        except (pykka.Timeout, pykka.ActorDeadError, ClusterUnavailable) as exc:
            logger.warning("Stream %s: handing its alarms over did not finish (%s)", stream,
                           exc)

        async def forget() -> None:
            self._publisher.forget(stream)
        with contextlib.suppress(ClusterUnavailable):
            self._link.call(forget, REQUEST_TIMEOUT)

    def limits_changed(self, stream: str) -> None:
        """The registry changed ``stream``'s entry: give the keeper its newest limits if
        we own it and they differ from what the keeper has (worker thread: a change seen
        while the stream is being adopted is applied right after the adoption, never
        before it nor lost; an entry change that leaves the limits alone does not reset
        the stream's checker)."""
        if stream not in self._adopted:
            return
        try:
            limits = self._limits_of(stream)
        except UnknownStream:
            return  # removed: its release follows on this thread
        if stream in self._given and self._given[stream] == limits:
            return
        self._given[stream] = limits
        self._keeper.set_limits(stream, limits)


async def _last_sequence(js: JetStreamContext, stream: str) -> int:
    try:
        msg = await js.get_last_msg(ALARMS_STREAM, alarm_subject(stream))
    except nats.js.errors.NotFoundError:
        return 0
    return int(msg.seq or 0)


# --- acknowledge and shelve, routed to the owner ----------------------------------------

_ERRORS: dict[str, type[TPSError]] = {
    "UnknownAlarm": UnknownAlarm, "AlarmClosed": AlarmClosed,
    "InvalidArgument": InvalidArgument, "AlarmsUnavailable": AlarmsUnavailable,
}


def error_reply(exc: TPSError) -> dict[str, Any]:
    """An error as the control reply carries it."""
    return {"error": type(exc).__name__ if type(exc).__name__ in _ERRORS else
            "AlarmsUnavailable", "message": str(exc),
            "argument": getattr(exc, "argument", None),
            "problem": getattr(exc, "problem", None),
            "id": getattr(exc, "alarm_id", None)}


def raise_reply(reply: Mapping[str, Any]) -> AlarmSnapshot:
    """The snapshot of a successful reply; the reply's error raised otherwise."""
    error = reply.get("error")
    if error is None:
        try:
            return AlarmSnapshot.from_record(dict(reply["alarm"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise AlarmsUnavailable(f"the owner answered something else: {exc}") from None
    if error in ("UnknownAlarm", "AlarmClosed"):
        raise _ERRORS[error](str(reply.get("id") or ""))
    if error == "InvalidArgument":
        raise InvalidArgument(str(reply.get("argument") or "argument"),
                              str(reply.get("problem") or reply.get("message")))
    raise AlarmsUnavailable(str(reply.get("message") or "the stream's owner refused"))


class AlarmControlServer:
    """Answers acknowledge/shelve requests for the streams this instance owns."""

    def __init__(self, link: NatsLink, instance: str, keeper: AlarmKeeperProxy,
                 publisher: AlarmEventPublisher, owns: Callable[[str], bool]) -> None:
        self._link = link
        self._subject = alarm_control_subject(instance)
        self._keeper = keeper
        self._publisher = publisher
        self._owns = owns
        self._sub: Subscription | None = None
        self.answered = 0

    def start(self) -> AlarmControlServer:
        """Subscribe once connected (any thread)."""
        async def subscribe() -> None:
            await self._link.connected()
            self._sub = await self._link.nc.subscribe(self._subject, cb=self._on_request)
        self._link.submit_task(subscribe)
        return self

    async def _on_request(self, msg: Msg) -> None:
        try:
            request = json.loads(msg.data)
            action, alarm_id, stream = request["action"], request["id"], request["stream"]
            if action not in ("acknowledge", "shelve"):
                raise ValueError(f"unknown action {action!r}")
        except (ValueError, KeyError, TypeError) as exc:
            await self._respond(msg, {"error": "AlarmsUnavailable",
                                      "message": f"malformed alarm request: {exc}"})
            return
        # Answered in a task: a slow keeper must not hold up the subscription.
        self._link.submit_task(lambda: self._answer(msg, action, alarm_id, stream, request))

    async def _answer(self, msg: Msg, action: str, alarm_id: str, stream: str,
                      request: Mapping[str, Any]) -> None:
        if not self._owns(stream):
            await self._respond(msg, {"error": "AlarmsUnavailable", "message":
                                      f"stream {stream} is being handed over; try again"})
            return
        since = self._publisher.appended
        keeper = self._keeper
        comment = request.get("comment")

        def call() -> AlarmSnapshot:
            if action == "acknowledge":
                future = keeper.acknowledge(alarm_id, comment)
            else:
                future = keeper.shelve(alarm_id, check_shelve_seconds(request.get("seconds")),
                                       comment)
            snapshot: AlarmSnapshot = future.get(timeout=REQUEST_TIMEOUT)
            return snapshot

        try:
            snapshot = await asyncio.get_running_loop().run_in_executor(None, call)
        except TPSError as exc:
            await self._respond(msg, error_reply(exc))
            return
        except (pykka.Timeout, pykka.ActorDeadError) as exc:
            await self._respond(msg, {"error": "AlarmsUnavailable",
                                      "message": f"the alarm keeper did not answer ({exc})"})
            return
        if not await self._publisher.barrier(stream, since):
            await self._respond(msg, {"error": "AlarmsUnavailable", "message":
                                      f"stream {stream} was handed over meanwhile; try again"})
            return
        self.answered += 1
        await self._respond(msg, {"alarm": snapshot.to_record()})

    async def _respond(self, msg: Msg, body: Mapping[str, Any]) -> None:
        with contextlib.suppress(*TRANSIENT_ERRORS):
            await msg.respond(json.dumps(body, allow_nan=False).encode())

    def stop(self) -> None:
        """Unsubscribe (any thread)."""
        sub = self._sub
        if sub is not None:
            self._link.submit(lambda: _quiet_unsubscribe(sub))


async def request_action(link: NatsLink, owner: str, body: Mapping[str, Any]
                         ) -> Mapping[str, Any]:
    """Ask ``owner`` to acknowledge or shelve (loop thread); AlarmsUnavailable when it
    does not answer."""
    try:
        reply = await link.nc.request(alarm_control_subject(owner),
                                      json.dumps(body).encode(), timeout=REQUEST_TIMEOUT)
    except nats.errors.NoRespondersError:
        raise AlarmsUnavailable(f"instance {owner}, which reads the alarm's stream, does not "
                                "answer (stopping or taken over); try again") from None
    except TRANSIENT_ERRORS as exc:
        raise AlarmsUnavailable(f"instance {owner}, which reads the alarm's stream, did not "
                                f"answer ({type(exc).__name__}); try again") from None
    try:
        answer = json.loads(reply.data)
    except ValueError:
        raise AlarmsUnavailable(f"instance {owner} answered something else") from None
    if not isinstance(answer, dict):
        raise AlarmsUnavailable(f"instance {owner} answered something else")
    return answer


# --- writers: the log into the store -----------------------------------------------------


class AlarmEventStorer:
    """One thread moving the cluster's alarm events into the store's alarm log.

    Consumes the durable ``tps-alarm-writers`` consumer every writer instance shares;
    a message is acknowledged once the store has its event. Writes are idempotent per
    (alarm id, seq), so an event stored twice (a writer killed before its
    acknowledgement) is stored once.
    """

    def __init__(self, link: NatsLink, open_log: Callable[[], AlarmLog],
                 batch: int = 200) -> None:
        self._link = link
        self._open_log = open_log
        self._batch = batch
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alarm-event-storer",
                                        daemon=True)
        self._sub: JetStreamContext.PullSubscription | None = None  # loop thread
        self._log: AlarmLog | None = None
        self.stored = 0
        self.failures = 0
        self.last_error: str | None = None

    def start(self) -> AlarmEventStorer:
        """Start the thread."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop (what is not acknowledged is redelivered to another writer)."""
        self._stopped.set()
        self._thread.join(timeout)

    async def _fetch(self) -> list[Msg]:
        await self._link.connected()
        if self._sub is None:
            await ensure_alarms_stream(self._link.js)
            self._sub = await self._link.js.pull_subscribe_bind(
                durable=ALARM_WRITERS_CONSUMER, stream=ALARMS_STREAM)
        try:
            return await self._sub.fetch(self._batch, timeout=1.0)
        except TimeoutError:
            return []

    def _run(self) -> None:
        backoff = Backoff(initial=0.5, cap=5.0)
        while not self._stopped.is_set():
            try:
                msgs = self._link.call(self._fetch, 10.0)
            except (ClusterUnavailable, nats.js.errors.APIError, *TRANSIENT_ERRORS) as exc:
                self.last_error = str(exc)
                self._stopped.wait(backoff.next_delay())
                continue
            backoff.reset()
            if msgs:
                self._store(msgs)
        if self._log is not None:
            self._log.close()

    def _store(self, msgs: list[Msg]) -> None:
        events: list[AlarmEvent] = []
        for msg in msgs:
            try:
                events.append(decode_event(msg.data))
            except ValueError as exc:
                logger.error("Alarm log: dropping a message that is not an alarm event (%s)",
                             exc)
        backoff = Backoff(initial=0.5, cap=5.0)
        while events and not self._stopped.is_set():
            try:
                if self._log is None:
                    self._log = self._open_log()
                    self._log.ensure_ready()
                self._log.write(events)
                break
            except (StoreUnavailable, StoreError, OSError) as exc:
                self.failures += 1
                self.last_error = str(exc)
                delay = backoff.next_delay()
                logger.warning("Writing %d alarm event(s) to the store failed (%s); retrying "
                               "in %.1f s", len(events), exc, delay)
                if not isinstance(exc, StoreUnavailable) and self._log is not None:
                    self._log.close()
                    self._log = None
                self._stopped.wait(delay)
        else:
            if events:
                return  # stopping: JetStream redelivers them to another writer
        self.stored += len(events)

        async def ack() -> None:
            for msg in msgs:
                with contextlib.suppress(*TRANSIENT_ERRORS):
                    await msg.ack()
        with contextlib.suppress(ClusterUnavailable):
            self._link.call(ack, 10.0)


# --- the alert sender lease ----------------------------------------------------------


class AlertSenderWork:
    """The ``alert-sender`` lease's work: the senders post while it is held."""

    def __init__(self, senders: Sequence[AlertmanagerSender | WebhookSender]) -> None:
        self._senders = list(senders)
        self.active = False

    def start(self, key: str) -> None:
        """LeaseWork: this instance sends from now on."""
        self._set(True)

    def stop(self, key: str, on_stopped: Callable[[], None], lost: bool) -> None:
        """LeaseWork: stop sending (at once: Alertmanager deduplicates a short overlap)."""
        self._set(False)
        on_stopped()

    def _set(self, active: bool) -> None:
        self.active = active
        for sender in self._senders:
            if isinstance(sender, AlertmanagerSender):
                sender.set_active(active)
            else:
                sender.active = active
        logger.info("Alert sender: this instance %s", "sends alerts now" if active
                    else "no longer sends alerts")
