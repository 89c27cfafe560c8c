"""The alarm keeper actor: readings through the ingest hook become journaled, published
events and a new board view; staleness on the tick; operators' actions as messages;
the history restored before anything can be acknowledged."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pykka
import pytest

from tests.support.wait import wait_until
from tps.actors.alarms import (
    AlarmBoard,
    AlarmHub,
    AlarmKeeper,
    AlarmTick,
    LimitsTable,
    checking_sink,
)
from tps.alarms.journal import AlarmJournal
from tps.alarms.lifecycle import AlarmBook
from tps.alarms.limits import parse_limits
from tps.alarms.model import AlarmEvent, AlarmState, EventType, StreamAlarmState
from tps.errors import AlarmsUnavailable, InvalidArgument, UnknownAlarm
from tps.model import Reading

LIMITS = parse_limits({"yellowHigh": 30, "redHigh": 40, "deadband": 0.5, "staleAfter": 5})


class Clock:
    def __init__(self) -> None:
        self.ns = 10**12

    def __call__(self) -> int:
        return self.ns


class Harness:
    def __init__(self, tmp: Path, history: Callable[[], Sequence[AlarmEvent]] = list) -> None:
        ids = itertools.count(1)
        self.clock = Clock()
        self.journal = AlarmJournal(tmp / "journal")
        self.journal.open()
        self.table = LimitsTable()
        self.board = AlarmBoard()
        self.hub = AlarmHub()
        self.events: list[AlarmEvent] = []
        self.hub.subscribe(self.events.extend)
        self.ref = AlarmKeeper.start(
            book=AlarmBook(new_id=lambda: f"a{next(ids)}"), journal=self.journal,
            table=self.table, board=self.board, hub=self.hub, load_history=history,
            limits={"s": LIMITS}, clock=self.clock, tick_interval=3600)
        self.keeper: Any = self.ref.proxy()
        self.sink = checking_sink(self.table, self.ref)
        self.t = itertools.count(1)

    def feed(self, *values: float, stream: str = "s") -> None:
        for value in values:
            self.sink([Reading(stream, next(self.t), value)])
        self.sync()

    def sync(self) -> None:
        self.keeper.sync().get(timeout=5)

    def kinds(self) -> list[tuple[str, str, str]]:
        return [(e.type, e.alarm.severity, e.alarm.state) for e in self.events]


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    wait_until(lambda: h.board.view.restored, what="the (empty) history to load")
    yield h
    h.ref.stop()


def test_readings_become_journaled_published_events_and_a_new_view(harness: Harness) -> None:
    harness.feed(20, 31, 30.2, 41, 35, 29.4)
    assert harness.kinds() == [
        (EventType.RAISED, "WARNING", AlarmState.ACTIVE),
        (EventType.ESCALATED, "CRITICAL", AlarmState.ACTIVE),
        (EventType.RETURNED, "CRITICAL", AlarmState.RETURNED),
    ]
    assert harness.journal.pending() == 3  # no shipper in this test: all still journaled
    view = harness.board.view
    assert view.restored and [a.state for a in view.open] == [AlarmState.RETURNED]
    assert view.state_of("s") is StreamAlarmState.OK
    assert view.limits["s"] == LIMITS


def test_acknowledge_and_shelve_are_messages_with_typed_errors(harness: Harness) -> None:
    harness.feed(20, 31)
    alarm_id = harness.board.view.open[0].id
    snapshot = harness.keeper.acknowledge(alarm_id, "seen").get(timeout=5)
    assert snapshot.state is AlarmState.ACKNOWLEDGED
    assert harness.keeper.shelve(alarm_id, 60, "later").get(timeout=5).state is \
        AlarmState.SHELVED
    with pytest.raises(UnknownAlarm):
        harness.keeper.acknowledge("nope").get(timeout=5)
    with pytest.raises(InvalidArgument):
        harness.keeper.shelve(alarm_id, 10**12).get(timeout=5)
    assert harness.board.view.open[0].state is AlarmState.SHELVED


def test_a_silent_stream_goes_stale_on_the_tick_and_returns_with_a_reading(
    harness: Harness,
) -> None:
    harness.feed(20)
    harness.clock.ns += 4 * 10**9
    harness.ref.tell(AlarmTick())
    harness.sync()
    assert harness.events == []
    harness.clock.ns += 2 * 10**9
    harness.ref.tell(AlarmTick())
    harness.sync()
    assert harness.board.view.state_of("s") is StreamAlarmState.STALE
    harness.feed(21)
    assert harness.kinds() == [(EventType.RAISED, "STALE", AlarmState.ACTIVE),
                               (EventType.RETURNED, "STALE", AlarmState.RETURNED)]
    assert harness.events[0].alarm.value == 6.0


def test_a_stream_that_never_sends_goes_stale_after_stale_after(harness: Harness) -> None:
    harness.clock.ns += 6 * 10**9
    harness.ref.tell(AlarmTick())
    harness.sync()
    assert harness.kinds() == [(EventType.RAISED, "STALE", AlarmState.ACTIVE)]


def test_new_limits_take_over_and_removed_limits_return_the_alarms(harness: Harness) -> None:
    harness.feed(20, 31)
    old_checker = harness.table.get("s")
    harness.keeper.set_limits("s", parse_limits({"yellowHigh": 35})).get(timeout=5)
    assert harness.table.get("s") is not old_checker
    harness.feed(31)  # in limits under the new ones: the first reading decides
    assert harness.kinds()[-1] == (EventType.RETURNED, "WARNING", AlarmState.RETURNED)
    harness.feed(36)
    harness.keeper.set_limits("s", None).get(timeout=5)
    assert harness.table.get("s") is None
    assert harness.kinds()[-1] == (EventType.RETURNED, "WARNING", AlarmState.RETURNED)
    assert "s" not in harness.board.view.limits


def test_nothing_is_acknowledged_before_the_history_is_loaded(tmp_path: Path) -> None:
    release = threading.Event()
    earlier = Harness(tmp_path / "one")
    wait_until(lambda: earlier.board.view.restored, what="the history to load")
    earlier.feed(20, 31)
    history = list(earlier.events)
    earlier.ref.stop()

    def slow_history() -> list[AlarmEvent]:
        release.wait(10)
        return history

    h = Harness(tmp_path / "two", history=slow_history)
    try:
        h.feed(20, 45)  # arrives while loading: kept, applied after the restore
        with pytest.raises(AlarmsUnavailable):
            h.keeper.acknowledge(history[0].alarm.id).get(timeout=5)
        release.set()
        wait_until(lambda: h.board.view.restored, what="the history to load")
        # The restored alarm escalates in place with the reading that came meanwhile.
        assert h.kinds() == [(EventType.RETURNED, "WARNING", AlarmState.RETURNED),
                             (EventType.ESCALATED, "CRITICAL", AlarmState.ACTIVE)]
        assert {e.alarm.id for e in h.events} == {history[0].alarm.id}
        assert h.keeper.acknowledge(history[0].alarm.id).get(timeout=5).acknowledged
    finally:
        h.ref.stop()


def test_the_sink_survives_a_stopped_keeper(harness: Harness) -> None:
    harness.ref.stop()
    harness.sink([Reading("s", 1, 50.0)])  # no exception: ingest goes on
    with pytest.raises(pykka.ActorDeadError):
        harness.keeper.sync().get(timeout=5)
