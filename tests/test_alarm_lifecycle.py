"""The alarm lifecycle (Yamcs semantics): raise, escalate in place, acknowledge, return,
clear, shelve with expiry, staleness, restore from history - deterministic, no threads."""

from __future__ import annotations

import itertools

import pytest

from tps.alarms.checker import CRITICAL, OK, WARNING, LevelChanged, PeakChanged, StreamFresh
from tps.alarms.lifecycle import MAX_COMMENT_CHARS, MAX_SHELVE_SECONDS, AlarmBook
from tps.alarms.model import (
    AlarmEvent,
    AlarmSnapshot,
    AlarmState,
    EventType,
    Severity,
    StreamAlarmState,
)
from tps.errors import AlarmClosed, InvalidArgument, UnknownAlarm

S = 1_000_000_000


class Clock:
    def __init__(self) -> None:
        self.ns = 1_700_000_000 * S

    def __call__(self) -> int:
        return self.ns


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def book(clock: Clock) -> AlarmBook:
    ids = itertools.count(1)
    return AlarmBook(clock=clock, new_id=lambda: f"a{next(ids)}")


def _level(level: int, value: float, stream: str = "s", t: int = 0) -> LevelChanged:
    names = {WARNING: ("yellowHigh", 30.0), CRITICAL: ("redHigh", 40.0)}
    name, limit = names.get(level, (None, None))
    return LevelChanged(stream, level, t, value, name, limit)


def _kinds(events: list[AlarmEvent]) -> list[tuple[str, str, str, str]]:
    return [(e.type, e.alarm.id, e.alarm.severity, e.alarm.state) for e in events]


def test_yellow_red_back_acknowledge_is_one_alarm_escalated_in_place(book: AlarmBook) -> None:
    events = book.on_level(_level(OK, 20))
    events += book.on_level(_level(WARNING, 31, t=5))
    events += book.on_level(_level(CRITICAL, 41, t=6))
    events += book.on_level(_level(WARNING, 35))   # red back to yellow: no event
    events += book.on_level(_level(OK, 20))
    assert _kinds(events) == [
        (EventType.RAISED, "a1", Severity.WARNING, AlarmState.ACTIVE),
        (EventType.ESCALATED, "a1", Severity.CRITICAL, AlarmState.ACTIVE),
        (EventType.RETURNED, "a1", Severity.CRITICAL, AlarmState.RETURNED),
    ]
    raised, escalated = events[0].alarm, events[1].alarm
    assert (raised.value, raised.limit_name, raised.limit, raised.triggered_at_ns) == (
        31, "yellowHigh", 30.0, 5)
    assert (escalated.value, escalated.limit, escalated.triggered_at_ns) == (41, 40.0, 5)
    snapshot, cleared = book.acknowledge("a1", "seen")
    assert _kinds(cleared) == [(EventType.CLEARED, "a1", Severity.CRITICAL, AlarmState.CLEARED)]
    assert cleared[0].comment == "seen" and snapshot.acknowledge_comment == "seen"
    assert book.open_alarms() == []
    assert book.get("a1").state is AlarmState.CLEARED


def test_event_sequence_numbers_and_times_increase(book: AlarmBook, clock: Clock) -> None:
    events = book.on_level(_level(WARNING, 31))
    events += book.on_level(_level(CRITICAL, 41))
    events += book.acknowledge("a1")[1]
    assert [e.seq for e in events] == [1, 2, 3]
    times = [e.time_ns for e in events]
    assert times == sorted(set(times)) and times[0] >= clock.ns


def test_acknowledged_alarm_clears_when_it_returns(book: AlarmBook) -> None:
    book.on_level(_level(WARNING, 31))
    snapshot, events = book.acknowledge("a1", "on it")
    assert _kinds(events) == [(EventType.ACKNOWLEDGED, "a1", Severity.WARNING,
                               AlarmState.ACKNOWLEDGED)]
    assert snapshot.acknowledged and snapshot.acknowledge_comment == "on it"
    assert book.acknowledge("a1")[1] == []  # twice: nothing happens
    assert _kinds(book.on_level(_level(OK, 20))) == [
        (EventType.CLEARED, "a1", Severity.WARNING, AlarmState.CLEARED)]


def test_escalation_needs_a_new_acknowledgement(book: AlarmBook) -> None:
    book.on_level(_level(WARNING, 31))
    book.acknowledge("a1")
    events = book.on_level(_level(CRITICAL, 41))
    assert _kinds(events) == [(EventType.ESCALATED, "a1", Severity.CRITICAL, AlarmState.ACTIVE)]
    assert not events[0].alarm.acknowledged


def test_a_returned_alarm_that_goes_out_again_is_the_same_alarm(book: AlarmBook) -> None:
    book.on_level(_level(WARNING, 31))
    book.on_level(_level(OK, 20))
    events = book.on_level(_level(WARNING, 32))
    events += book.on_level(_level(OK, 20))
    events += book.on_level(_level(CRITICAL, 45))
    assert _kinds(events) == [
        (EventType.RAISED, "a1", Severity.WARNING, AlarmState.ACTIVE),
        (EventType.RETURNED, "a1", Severity.WARNING, AlarmState.RETURNED),
        (EventType.ESCALATED, "a1", Severity.CRITICAL, AlarmState.ACTIVE),
    ]


def test_after_clearing_a_new_excursion_is_a_new_alarm(book: AlarmBook) -> None:
    book.on_level(_level(WARNING, 31))
    book.on_level(_level(OK, 20))
    book.acknowledge("a1")
    assert _kinds(book.on_level(_level(WARNING, 31))) == [
        (EventType.RAISED, "a2", Severity.WARNING, AlarmState.ACTIVE)]


def test_most_severe_value_follows_peaks_while_out(book: AlarmBook) -> None:
    book.on_level(_level(WARNING, 31))
    book.on_peak(PeakChanged("s", 34.5))
    assert book.get("a1").most_severe_value == 34.5
    assert book.get("a1").value == 31


def test_shelve_silences_until_it_expires(book: AlarmBook, clock: Clock) -> None:
    book.on_level(_level(WARNING, 31))
    snapshot, events = book.shelve("a1", 60, "maintenance")
    assert snapshot.state is AlarmState.SHELVED
    assert snapshot.shelved_until_ns == events[0].time_ns + 60 * S
    assert (events[0].type, events[0].comment) == (EventType.SHELVED, "maintenance")
    # Its condition still moves while shelved; the state shown stays SHELVED.
    assert _kinds(book.on_level(_level(OK, 20))) == [
        (EventType.RETURNED, "a1", Severity.WARNING, AlarmState.SHELVED)]
    clock.ns += 59 * S
    assert book.expire_shelves() == []
    assert book.next_shelve_expiry_ns() == snapshot.shelved_until_ns
    clock.ns += 2 * S
    assert _kinds(book.expire_shelves()) == [
        (EventType.UNSHELVED, "a1", Severity.WARNING, AlarmState.RETURNED)]
    assert book.next_shelve_expiry_ns() is None


def test_acknowledging_a_shelved_returned_alarm_clears_it(book: AlarmBook) -> None:
    book.on_level(_level(WARNING, 31))
    book.shelve("a1", 600)
    book.on_level(_level(OK, 20))
    assert _kinds(book.acknowledge("a1")[1]) == [
        (EventType.CLEARED, "a1", Severity.WARNING, AlarmState.CLEARED)]
    assert book.next_shelve_expiry_ns() is None


@pytest.mark.parametrize("seconds", [0, -5, 10**12, MAX_SHELVE_SECONDS + 1, 1.5, "60", True])
def test_shelve_seconds_out_of_range_are_refused(book: AlarmBook, seconds: object) -> None:
    book.on_level(_level(WARNING, 31))
    with pytest.raises(InvalidArgument) as caught:
        book.shelve("a1", seconds)
    assert caught.value.argument == "seconds"
    assert book.get("a1").state is AlarmState.ACTIVE


def test_huge_comments_are_refused_and_change_nothing(book: AlarmBook) -> None:
    book.on_level(_level(WARNING, 31))
    with pytest.raises(InvalidArgument) as caught:
        book.acknowledge("a1", "x" * (MAX_COMMENT_CHARS + 1))
    assert caught.value.argument == "comment"
    assert not book.get("a1").acknowledged


def test_unknown_and_cleared_ids(book: AlarmBook) -> None:
    with pytest.raises(UnknownAlarm):
        book.acknowledge("nope")
    with pytest.raises(UnknownAlarm):
        book.shelve("nope", 10)
    with pytest.raises(UnknownAlarm):
        book.get("nope")
    book.on_level(_level(WARNING, 31))
    book.on_level(_level(OK, 20))
    book.acknowledge("a1")
    with pytest.raises(AlarmClosed):
        book.shelve("a1", 10)
    with pytest.raises(AlarmClosed):
        book.acknowledge("a1")


def test_stale_alarm_is_separate_from_the_value_alarm(book: AlarmBook) -> None:
    events = book.on_level(_level(WARNING, 31))
    events += book.on_stale("s", 5.2, 5.0)
    assert book.stream_state("s") is StreamAlarmState.STALE
    events += book.on_stale("s", 6.0, 5.0)  # still stale: nothing new
    events += book.on_fresh(StreamFresh("s", 99))
    assert book.stream_state("s") is StreamAlarmState.WARNING
    assert _kinds(events) == [
        (EventType.RAISED, "a1", Severity.WARNING, AlarmState.ACTIVE),
        (EventType.RAISED, "a2", Severity.STALE, AlarmState.ACTIVE),
        (EventType.RETURNED, "a2", Severity.STALE, AlarmState.RETURNED),
    ]
    stale = events[1].alarm
    assert (stale.value, stale.limit, stale.limit_name) == (5.2, 5.0, "staleAfter")


def test_stream_state_and_active_counts(book: AlarmBook) -> None:
    assert book.stream_state("s") is StreamAlarmState.OK
    book.on_level(_level(CRITICAL, 41))
    book.on_level(_level(WARNING, 31, stream="t"))
    assert book.stream_state("s") is StreamAlarmState.CRITICAL
    assert book.active_counts() == {("s", "CRITICAL"): 1, ("t", "WARNING"): 1}


def test_releasing_a_stream_returns_its_alarms(book: AlarmBook) -> None:
    book.on_level(_level(WARNING, 31))
    book.acknowledge("a1")
    book.on_stale("s", 9, 5)
    events = book.release_stream("s", "limits removed")
    assert _kinds(events) == [
        (EventType.CLEARED, "a1", Severity.WARNING, AlarmState.CLEARED),
        (EventType.RETURNED, "a2", Severity.STALE, AlarmState.RETURNED),
    ]
    assert events[0].comment == "limits removed"


def test_restore_from_history_brings_back_exactly_the_open_alarms(clock: Clock) -> None:
    ids = itertools.count(1)
    first = AlarmBook(clock=clock, new_id=lambda: f"a{next(ids)}")
    history = first.on_level(_level(WARNING, 31))                  # a1: stays ACTIVE
    history += first.on_level(_level(CRITICAL, 41, stream="t"))   # a2: ACKNOWLEDGED
    history += first.acknowledge("a2", "known")[1]
    history += first.on_level(_level(WARNING, 31, stream="u"))     # a3: cleared
    history += first.on_level(_level(OK, 20, stream="u"))
    history += first.acknowledge("a3")[1]
    history += first.shelve("a1", 300, "later")[1]
    # The history comes back from the store as records, in any order.
    records = [AlarmEvent.from_record(e.to_record()) for e in reversed(history)]
    second = AlarmBook(clock=clock, new_id=lambda: f"b{next(ids)}")
    assert second.restore(records) == 2
    assert second.open_alarms() == first.open_alarms()
    assert second.stream_state("t") is StreamAlarmState.CRITICAL
    # The restored alarm lives on: its next event continues its sequence.
    _, events = second.acknowledge("a1")
    assert (events[0].seq, events[0].alarm.state) == (3, AlarmState.SHELVED)
    assert second.on_level(_level(OK, 20))[0].type is EventType.CLEARED
    assert min(e.time_ns for e in events) > max(e.time_ns for e in history)


def test_snapshot_json_uses_the_graphql_names_and_iso_times(book: AlarmBook) -> None:
    [event] = book.on_level(_level(WARNING, 31, t=1_690_000_000 * S))
    data = event.to_json()
    assert data["type"] == "RAISED"
    alarm = data["alarm"]
    assert alarm["triggeredAt"] == "2023-07-22T04:26:40+00:00"
    assert {"id", "stream", "severity", "state", "value", "limit", "mostSevereValue",
            "acknowledged", "shelvedUntil"} <= set(alarm)
    assert AlarmSnapshot.from_record(event.alarm.to_record()) == event.alarm


@pytest.mark.parametrize("broken", [
    {"type": "RAISED", "time_ns": "1", "seq": 1, "alarm": {}},
    {"type": "EXPLODED", "time_ns": 1, "seq": 1, "alarm": {}},
    {"type": "RAISED", "time_ns": 1, "seq": 1, "alarm": {"id": "x"}},
])
def test_malformed_records_are_refused(broken: dict[str, object]) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        AlarmEvent.from_record(broken)


def test_select_alarms_active_history_and_windows(book: AlarmBook, clock: Clock) -> None:
    from tps.alarms.query import DEFAULT_HISTORY_NS, select_alarms

    history = book.on_level(_level(WARNING, 31, t=clock.ns - 100 * S))      # a1 open
    history += book.on_level(_level(WARNING, 31, stream="t", t=clock.ns - 50 * S))
    history += book.on_level(_level(OK, 20, stream="t"))
    history += book.acknowledge("a2")[1]                                     # a2 cleared
    old = _level(WARNING, 31, stream="u", t=clock.ns - DEFAULT_HISTORY_NS - S)
    history += book.on_level(old)                                            # a3 too old
    # A restarted process knows only the open alarms; the store has every event.
    known = book.open_alarms()

    def ids(**kwargs: object) -> list[str]:
        args: dict[str, object] = {"active": None, "stream": None, "after_ns": None,
                                   "before_ns": None, **kwargs}
        return [a.id for a in select_alarms(known, history, now_ns=clock.ns, **args)]  # type: ignore[arg-type]

    assert ids(active=True) == ["a3", "a1"]
    assert ids() == ["a1", "a2"]
    assert ids(active=False) == ["a2"]
    assert ids(stream="t") == ["a2"]
    assert ids(after_ns=clock.ns - 60 * S) == ["a2"]
    assert ids(before_ns=clock.ns - 60 * S) == ["a3", "a1"]  # window: 7 days before it
    assert ids(after_ns=0) == ["a3", "a1", "a2"]
    states = {a.id: a.state for a in select_alarms(known, history, active=None, stream=None,
                                                   after_ns=0, before_ns=None, now_ns=clock.ns)}
    assert states == {"a1": AlarmState.ACTIVE, "a2": AlarmState.CLEARED,
                      "a3": AlarmState.ACTIVE}
