"""The alarm lifecycle: what the checker's reports and operators' actions do to alarms.

:class:`AlarmBook` is plain and deterministic (an injectable wall clock and id
factory, no threads): the alarm actor owns one and is the only caller. Every method
returns the :class:`~tps.alarms.model.AlarmEvent` objects of the transitions it made,
in order; each transition is also one log line.

Semantics follow Yamcs' ``AlarmServer``/``ActiveAlarm`` (an alarm has a *process*
condition - out of limits or back - and an *acknowledged* flag; it is removed, CLEARED,
once it is both back and acknowledged; shelving is a timed flag on top):

=============  =====================  ==================================================
state          condition              meaning
=============  =====================  ==================================================
ACTIVE         out, not acknowledged  an operator must look
ACKNOWLEDGED   out, acknowledged      known, still out of limits
RETURNED       back, not acknowledged back inside (by the deadband); still to be seen
SHELVED        any, shelved           silenced until ``shelvedUntil``
CLEARED        back and acknowledged  over; no longer in ``alarms(active: true)``
=============  =====================  ==================================================

Where TPS follows Yamcs:

- one open alarm per subject; a stream has two subjects, its value (``WARNING``/
  ``CRITICAL``) and its silence (``STALE``), which can be open at the same time;
- a worse severity escalates the open alarm in place (same id): event ``ESCALATED``;
  the severity never goes down again while the alarm is open (Yamcs'
  ``mostSevereValue``), so a value dropping from red to yellow makes no event;
- a RETURNED alarm that goes out again is the same alarm, out again (event ``RAISED``,
  or ``ESCALATED`` when it comes back worse), not a new one;
- acknowledging a returned alarm clears it; an acknowledged alarm that returns is
  cleared; acknowledging twice changes nothing;
- shelving is orthogonal: a shelved alarm still follows its condition (events keep
  flowing, the snapshot's state shows ``SHELVED``) and ``UNSHELVED`` is an event of its
  own when the time is up.

Where TPS differs, and why:

- escalation makes an acknowledged alarm ACTIVE again: an operator acknowledged a
  WARNING, not the CRITICAL it became (Yamcs keeps the acknowledgement);
- one state change is one event: acknowledging a returned alarm is a single
  ``CLEARED`` event carrying the comment (Yamcs notifies ACKNOWLEDGED then CLEARED);
- a shelve always has an end (at most :data:`MAX_SHELVE_SECONDS`); Yamcs also allows an
  unlimited one;
- no latching alarms and no auto-acknowledge (not asked for).
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tps.alarms.checker import CRITICAL, OK, LevelChanged, PeakChanged, StreamFresh
from tps.alarms.model import (
    AlarmEvent,
    AlarmSnapshot,
    AlarmState,
    EventType,
    Severity,
    StreamAlarmState,
)
from tps.errors import AlarmClosed, InvalidArgument, UnknownAlarm

logger = logging.getLogger(__name__)

MAX_SHELVE_SECONDS = 30 * 86_400
"""Thirty days: a longer silence should be a change of limits, not a shelve."""
MAX_COMMENT_CHARS = 1000
RECENT_CLEARED = 1000
"""Cleared alarms kept in memory (for ``alarm(id)`` look-ups); older ones are in the store."""

VALUE = "value"
SILENCE = "silence"
_SEVERITY_RANK = {Severity.WARNING: 1, Severity.CRITICAL: 2, Severity.STALE: 0}


def _new_id() -> str:
    return secrets.token_hex(8)


@dataclass(slots=True)
class _Alarm:
    """The book's mutable record of one open alarm (never leaves the book)."""

    id: str
    stream: str
    subject: str
    severity: Severity
    value: float
    limit: float | None
    limit_name: str | None
    triggered_at_ns: int
    updated_at_ns: int
    most_severe_value: float
    out: bool = True
    acknowledged: bool = False
    acknowledged_at_ns: int | None = None
    acknowledge_comment: str | None = None
    shelved_until_ns: int | None = None
    shelve_comment: str | None = None
    returned_at_ns: int | None = None
    cleared_at_ns: int | None = None
    seq: int = 0

    def state(self) -> AlarmState:
        if self.cleared_at_ns is not None:
            return AlarmState.CLEARED
        if self.shelved_until_ns is not None:
            return AlarmState.SHELVED
        if self.out:
            return AlarmState.ACKNOWLEDGED if self.acknowledged else AlarmState.ACTIVE
        return AlarmState.RETURNED

    def snapshot(self) -> AlarmSnapshot:
        return AlarmSnapshot(
            id=self.id, stream=self.stream, severity=self.severity, state=self.state(),
            value=self.value, limit=self.limit, limit_name=self.limit_name,
            triggered_at_ns=self.triggered_at_ns, updated_at_ns=self.updated_at_ns,
            most_severe_value=self.most_severe_value, out_of_limits=self.out,
            acknowledged=self.acknowledged, acknowledged_at_ns=self.acknowledged_at_ns,
            acknowledge_comment=self.acknowledge_comment,
            shelved_until_ns=self.shelved_until_ns, shelve_comment=self.shelve_comment,
            returned_at_ns=self.returned_at_ns, cleared_at_ns=self.cleared_at_ns,
        )

    @classmethod
    def from_snapshot(cls, snap: AlarmSnapshot, seq: int) -> _Alarm:
        subject = SILENCE if snap.severity is Severity.STALE else VALUE
        return cls(
            id=snap.id, stream=snap.stream, subject=subject, severity=snap.severity,
            value=snap.value, limit=snap.limit, limit_name=snap.limit_name,
            triggered_at_ns=snap.triggered_at_ns, updated_at_ns=snap.updated_at_ns,
            most_severe_value=snap.most_severe_value, out=snap.out_of_limits,
            acknowledged=snap.acknowledged, acknowledged_at_ns=snap.acknowledged_at_ns,
            acknowledge_comment=snap.acknowledge_comment,
            shelved_until_ns=snap.shelved_until_ns, shelve_comment=snap.shelve_comment,
            returned_at_ns=snap.returned_at_ns, cleared_at_ns=snap.cleared_at_ns, seq=seq,
        )


def check_comment(comment: str | None) -> str | None:
    """The comment, or InvalidArgument when it is not text or too long."""
    if comment is None:
        return None
    if not isinstance(comment, str):
        raise InvalidArgument("comment", "must be a string")
    if len(comment) > MAX_COMMENT_CHARS:
        raise InvalidArgument("comment", f"must be at most {MAX_COMMENT_CHARS} characters, "
                              f"got {len(comment)}")
    return comment


def check_shelve_seconds(seconds: object) -> int:
    """``seconds`` as an int in 1..MAX_SHELVE_SECONDS, or InvalidArgument naming it."""
    if isinstance(seconds, float) and seconds.is_integer():
        seconds = int(seconds)
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise InvalidArgument("seconds", "must be a whole number of seconds")
    if not 1 <= seconds <= MAX_SHELVE_SECONDS:
        raise InvalidArgument("seconds", f"must be between 1 and {MAX_SHELVE_SECONDS} "
                              f"(30 days), got {seconds}")
    return seconds


class AlarmBook:
    """Every open alarm, and the transitions between states (see the module docstring).

    ``clock`` gives wall-clock ns (event times; strictly increasing within the book so
    that no two events share a timestamp), ``new_id`` makes alarm ids.
    """

    def __init__(self, clock: Callable[[], int] = time.time_ns,
                 new_id: Callable[[], str] = _new_id) -> None:
        self._clock = clock
        self._new_id = new_id
        self._last_ns = 0
        self._open: dict[str, _Alarm] = {}
        self._by_subject: dict[tuple[str, str], _Alarm] = {}
        self._recent: deque[AlarmSnapshot] = deque(maxlen=RECENT_CLEARED)
        self._levels: dict[str, int] = {}
        self._stale: set[str] = set()

    # --- queries -------------------------------------------------------------------

    def open_alarms(self, stream: str | None = None) -> list[AlarmSnapshot]:
        """Every alarm not yet CLEARED (of ``stream``), oldest trigger first."""
        alarms = [a for a in self._open.values() if stream is None or a.stream == stream]
        alarms.sort(key=lambda a: (a.triggered_at_ns, a.id))
        return [a.snapshot() for a in alarms]

    def get(self, alarm_id: str) -> AlarmSnapshot:
        """An open or recently cleared alarm; UnknownAlarm when the book has none."""
        alarm = self._open.get(alarm_id)
        if alarm is not None:
            return alarm.snapshot()
        for snapshot in self._recent:
            if snapshot.id == alarm_id:
                return snapshot
        raise UnknownAlarm(alarm_id)

    def recent_cleared(self) -> list[AlarmSnapshot]:
        """The newest cleared alarms this process saw (at most RECENT_CLEARED)."""
        return list(self._recent)

    def stream_state(self, stream: str) -> StreamAlarmState:
        """``OK``, ``WARNING``, ``CRITICAL`` or ``STALE`` (silence wins over values)."""
        if stream in self._stale:
            return StreamAlarmState.STALE
        level = self._levels.get(stream)
        if level is None:
            alarm = self._by_subject.get((stream, VALUE))
            if alarm is not None and alarm.out:
                return StreamAlarmState(str(alarm.severity))
            return StreamAlarmState.OK
        return (StreamAlarmState.OK, StreamAlarmState.WARNING,
                StreamAlarmState.CRITICAL)[level]

    def active_counts(self) -> dict[tuple[str, str], int]:
        """Open alarms per (stream, severity), for ``tps_alarms_active``."""
        counts: dict[tuple[str, str], int] = {}
        for alarm in self._open.values():
            key = (alarm.stream, str(alarm.severity))
            counts[key] = counts.get(key, 0) + 1
        return counts

    def next_shelve_expiry_ns(self) -> int | None:
        """When the next shelve ends (wall ns), or None."""
        ends = [a.shelved_until_ns for a in self._open.values() if a.shelved_until_ns]
        return min(ends) if ends else None

    # --- what the checker reports ----------------------------------------------------

    def on_report(self, report: LevelChanged | PeakChanged | StreamFresh) -> list[AlarmEvent]:
        """Apply one checker report; the events it caused."""
        if isinstance(report, LevelChanged):
            return self.on_level(report)
        if isinstance(report, PeakChanged):
            self.on_peak(report)
            return []
        return self.on_fresh(report)

    def on_level(self, change: LevelChanged) -> list[AlarmEvent]:
        """The stream's value level changed."""
        stream = change.stream
        self._levels[stream] = change.level
        alarm = self._by_subject.get((stream, VALUE))
        if change.level == OK:
            if alarm is None or not alarm.out:
                return []
            return [self._back(alarm, change.time_ns)]
        severity = Severity.CRITICAL if change.level == CRITICAL else Severity.WARNING
        if alarm is None:
            alarm = _Alarm(
                id=self._unique_id(), stream=stream, subject=VALUE, severity=severity,
                value=change.value, limit=change.limit, limit_name=change.limit_name,
                triggered_at_ns=change.time_ns, updated_at_ns=change.time_ns,
                most_severe_value=change.value,
            )
            self._open[alarm.id] = alarm
            self._by_subject[(stream, VALUE)] = alarm
            return [self._event(alarm, EventType.RAISED)]
        worse = _SEVERITY_RANK[severity] > _SEVERITY_RANK[alarm.severity]
        if not worse and alarm.out:
            return []  # red back to yellow, or the same level: the alarm stands as it is
        if worse:
            alarm.severity = severity
            alarm.value, alarm.limit, alarm.limit_name = change.value, change.limit, \
                change.limit_name
            alarm.most_severe_value = change.value
            # An acknowledgement was for the milder alarm: the worse one needs its own.
            alarm.acknowledged = False
            alarm.acknowledged_at_ns = None
        kind = EventType.ESCALATED if worse else EventType.RAISED
        alarm.out = True
        alarm.returned_at_ns = None
        return [self._event(alarm, kind)]

    def on_peak(self, peak: PeakChanged) -> None:
        """A value further out than any before (no event: ``mostSevereValue`` moves)."""
        alarm = self._by_subject.get((peak.stream, VALUE))
        if alarm is not None and alarm.out:
            alarm.most_severe_value = peak.value

    def on_fresh(self, fresh: StreamFresh) -> list[AlarmEvent]:
        """A reading arrived after a silence: a STALE alarm returns."""
        self._stale.discard(fresh.stream)
        alarm = self._by_subject.get((fresh.stream, SILENCE))
        if alarm is None or not alarm.out:
            return []
        return [self._back(alarm, fresh.time_ns)]

    def on_stale(self, stream: str, silent_for: float, stale_after: float) -> list[AlarmEvent]:
        """No reading for ``silent_for`` seconds, more than ``stale_after``: raise STALE."""
        self._stale.add(stream)
        alarm = self._by_subject.get((stream, SILENCE))
        now = self._now()
        if alarm is None:
            alarm = _Alarm(
                id=self._unique_id(), stream=stream, subject=SILENCE, severity=Severity.STALE,
                value=round(silent_for, 3), limit=stale_after, limit_name="staleAfter",
                triggered_at_ns=now, updated_at_ns=now, most_severe_value=round(silent_for, 3),
            )
            self._open[alarm.id] = alarm
            self._by_subject[(stream, SILENCE)] = alarm
            return [self._event(alarm, EventType.RAISED, now)]
        if alarm.out:
            return []
        alarm.out = True
        alarm.returned_at_ns = None
        return [self._event(alarm, EventType.RAISED, now)]

    def is_stale(self, stream: str) -> bool:
        """True while the book holds ``stream`` as silent."""
        return stream in self._stale

    def release_stream(self, stream: str, why: str, *, values: bool = True,
                       silence: bool = True) -> list[AlarmEvent]:
        """The stream's limits (or the stream) are gone: its open alarms count as back.

        ``values``/``silence`` choose which of its alarms (value limits, staleness).
        """
        subjects = [s for s, chosen in ((VALUE, values), (SILENCE, silence)) if chosen]
        if values:
            self._levels.pop(stream, None)
        if silence:
            self._stale.discard(stream)
        events: list[AlarmEvent] = []
        for subject in subjects:
            alarm = self._by_subject.get((stream, subject))
            if alarm is not None and alarm.out:
                events.append(self._back(alarm, self._now(), comment=why))
        return events

    # --- what operators do -----------------------------------------------------------

    def acknowledge(self, alarm_id: str,
                    comment: str | None = None) -> tuple[AlarmSnapshot, list[AlarmEvent]]:
        """Acknowledge: ACTIVE -> ACKNOWLEDGED, RETURNED -> CLEARED; twice: no change."""
        comment = check_comment(comment)
        alarm = self._open_alarm(alarm_id)
        if alarm.acknowledged:
            return alarm.snapshot(), []
        now = self._now()
        alarm.acknowledged = True
        alarm.acknowledged_at_ns = now
        alarm.acknowledge_comment = comment
        if not alarm.out:
            event = self._clear(alarm, now, comment)
        else:
            event = self._event(alarm, EventType.ACKNOWLEDGED, now, comment)
        return event.alarm, [event]

    def shelve(self, alarm_id: str, seconds: object,
               comment: str | None = None) -> tuple[AlarmSnapshot, list[AlarmEvent]]:
        """Silence the alarm for ``seconds`` (1 s to 30 days); shelving again re-times it."""
        seconds = check_shelve_seconds(seconds)
        comment = check_comment(comment)
        alarm = self._open_alarm(alarm_id)
        now = self._now()
        alarm.shelved_until_ns = now + seconds * 1_000_000_000
        alarm.shelve_comment = comment
        event = self._event(alarm, EventType.SHELVED, now, comment)
        return event.alarm, [event]

    def expire_shelves(self) -> list[AlarmEvent]:
        """End every shelve whose time is up (call on a timer)."""
        now = self._clock()
        events: list[AlarmEvent] = []
        for alarm in list(self._open.values()):
            if alarm.shelved_until_ns is not None and alarm.shelved_until_ns <= now:
                alarm.shelved_until_ns = None
                alarm.shelve_comment = None
                events.append(self._event(alarm, EventType.UNSHELVED, self._now()))
        return events

    # --- restart -----------------------------------------------------------------------

    def restore(self, events: Iterable[AlarmEvent]) -> int:
        """Rebuild the open alarms from their latest events (the store's history).

        ``events`` may hold several events per alarm in any order; the one with the
        highest ``seq`` wins. Returns how many open alarms were restored.
        """
        latest: dict[str, AlarmEvent] = {}
        for event in events:
            known = latest.get(event.alarm.id)
            if known is None or event.seq > known.seq:
                latest[event.alarm.id] = event
            self._last_ns = max(self._last_ns, event.time_ns)
        restored = 0
        for event in sorted(latest.values(), key=lambda e: e.time_ns):
            snap = event.alarm
            if not snap.is_open:
                continue
            alarm = _Alarm.from_snapshot(snap, event.seq)
            subject_key = (alarm.stream, alarm.subject)
            older = self._by_subject.get(subject_key)
            if older is not None:
                # Two open alarms for one subject cannot happen in one book; if a damaged
                # history says so, keep the newer and leave the older to the history.
                logger.warning("Alarm history holds two open alarms for %s %s (%s, %s); "
                               "restoring only the newer", alarm.stream, alarm.subject,
                               older.id, alarm.id)
                del self._open[older.id]
                restored -= 1
            self._open[alarm.id] = alarm
            self._by_subject[subject_key] = alarm
            if alarm.subject == SILENCE and alarm.out:
                self._stale.add(alarm.stream)
            restored += 1
        return restored

    def drop_stream(self, stream: str) -> None:
        """Forget ``stream``'s open alarms without any event: another process evaluates
        the stream from now on (a cluster hand-over; the alarms live on there)."""
        for alarm in [a for a in self._open.values() if a.stream == stream]:
            del self._open[alarm.id]
            if self._by_subject.get((stream, alarm.subject)) is alarm:
                del self._by_subject[(stream, alarm.subject)]
        self._levels.pop(stream, None)
        self._stale.discard(stream)

    def open_value_alarm(self, stream: str) -> AlarmSnapshot | None:
        """The stream's open alarm on its values (not its silence), if any."""
        alarm = self._by_subject.get((stream, VALUE))
        return alarm.snapshot() if alarm is not None else None

    # --- plumbing ------------------------------------------------------------------------

    def _open_alarm(self, alarm_id: str) -> _Alarm:
        if not isinstance(alarm_id, str):
            raise UnknownAlarm(str(alarm_id))
        alarm = self._open.get(alarm_id)
        if alarm is not None:
            return alarm
        if any(snapshot.id == alarm_id for snapshot in self._recent):
            raise AlarmClosed(alarm_id)
        raise UnknownAlarm(alarm_id)

    def _unique_id(self) -> str:
        while True:
            alarm_id = self._new_id()
            if alarm_id not in self._open:
                return alarm_id

    def _now(self) -> int:
        now = max(self._clock(), self._last_ns + 1)
        self._last_ns = now
        return now

    def _back(self, alarm: _Alarm, time_ns: int, comment: str | None = None) -> AlarmEvent:
        alarm.out = False
        alarm.returned_at_ns = time_ns
        if alarm.acknowledged:
            return self._clear(alarm, self._now(), comment)
        return self._event(alarm, EventType.RETURNED, None, comment)

    def _clear(self, alarm: _Alarm, now: int, comment: str | None) -> AlarmEvent:
        alarm.cleared_at_ns = now
        alarm.shelved_until_ns = None
        event = self._event(alarm, EventType.CLEARED, now, comment)
        del self._open[alarm.id]
        if self._by_subject.get((alarm.stream, alarm.subject)) is alarm:
            del self._by_subject[(alarm.stream, alarm.subject)]
        self._recent.append(event.alarm)
        return event

    def _event(self, alarm: _Alarm, kind: EventType, now: int | None = None,
               comment: str | None = None) -> AlarmEvent:
        now = self._now() if now is None else now
        alarm.seq += 1
        alarm.updated_at_ns = now
        snapshot = alarm.snapshot()
        logger.info(
            "Alarm %s %s: stream %s, severity %s, now %s (value %s, %s %s)%s",
            alarm.id, kind, alarm.stream, alarm.severity, snapshot.state,
            _fmt(alarm.value), alarm.limit_name or "limit", _fmt(alarm.limit),
            f"; comment: {comment!r}" if comment else "",
        )
        return AlarmEvent(kind, now, alarm.seq, snapshot, comment)


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return str(value)
    return f"{value:g}"

