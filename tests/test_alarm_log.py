"""The alarm event log in both stores (real InfluxDB, SQLite), the journal that makes an
event durable before anyone sees it, and the shipper that survives a store outage."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.influxdb import InfluxServer
from tests.support.wait import wait_until
from tps.alarms.checker import CRITICAL, OK, WARNING, LevelChanged
from tps.alarms.journal import AlarmJournal, AlarmLogShipper
from tps.alarms.lifecycle import AlarmBook
from tps.alarms.model import AlarmEvent, AlarmState, EventType
from tps.ingest.backoff import Backoff
from tps.store.alarm_log import AlarmLog, InfluxAlarmLog, SqliteAlarmLog
from tps.store.influx import InfluxStore

T0 = 1_690_587_027_046_286_592


def _history(streams: tuple[str, ...] = ("sat-1",)) -> list[AlarmEvent]:
    """A realistic history: raise, escalate, return, acknowledge (cleared), raise again."""
    clock = itertools.count(T0, 1_000_000)
    ids = itertools.count(1)
    book = AlarmBook(clock=lambda: next(clock), new_id=lambda: f"id{next(ids)}")
    events: list[AlarmEvent] = []
    for stream in streams:
        events += book.on_level(LevelChanged(stream, WARNING, T0, 31.0, "yellowHigh", 30.0))
        events += book.on_level(LevelChanged(stream, CRITICAL, T0, 41.0, "redHigh", 40.0))
        events += book.on_level(LevelChanged(stream, OK, T0, 20.0))
        first = events[-1].alarm.id
        events += book.acknowledge(first, 'said "ok", \\ and\nleft')[1]
        events += book.on_level(LevelChanged(stream, WARNING, T0, 32.0, "yellowHigh", 30.0))
    return events


@pytest.fixture(params=["influx", "sqlite"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AlarmLog]:
    opened: AlarmLog
    if request.param == "influx":
        influx: InfluxServer = request.getfixturevalue("influx")
        db: str = request.getfixturevalue("influx_db")
        opened = InfluxAlarmLog(InfluxStore(influx.url, db))
    else:
        opened = SqliteAlarmLog(tmp_path / "tps.sqlite3")
    yield opened
    opened.close()


def test_a_fresh_log_has_no_events(log: AlarmLog) -> None:
    assert log.events() == []
    assert log.latest() == []
    log.ensure_ready()
    assert log.events() == [] and log.latest() == []


def test_events_round_trip_exactly_oldest_first(log: AlarmLog) -> None:
    history = _history(("sat-1", "it's a \"name\""))
    log.ensure_ready()
    log.write(history)
    assert log.events() == sorted(history, key=lambda e: e.time_ns)
    assert log.events(stream="sat-1") == [e for e in history if e.alarm.stream == "sat-1"]
    assert log.events(alarm_id="id1") == [e for e in history if e.alarm.id == "id1"]
    window = log.events(history[1].time_ns, history[3].time_ns)
    assert window == history[1:4]
    assert log.events(limit=2) == history[:2]
    assert log.events(after_ns=2**70) == [] and log.events(before_ns=-(2**70)) == []


def test_writing_an_event_twice_keeps_one(log: AlarmLog) -> None:
    history = _history()
    log.ensure_ready()
    log.write(history)
    log.write(history[2:])
    assert log.events() == history


def test_latest_gives_each_alarms_newest_event(log: AlarmLog) -> None:
    history = _history()
    log.ensure_ready()
    log.write(history)
    latest = log.latest()
    assert [(e.alarm.id, e.type) for e in latest] == [
        ("id1", EventType.CLEARED), ("id2", EventType.RAISED)]
    book = AlarmBook()
    assert book.restore(latest) == 1
    assert [a.id for a in book.open_alarms()] == ["id2"]


def test_journal_keeps_events_across_a_crash_until_trimmed(tmp_path: Path) -> None:
    history = _history()
    journal = AlarmJournal(tmp_path / "journal")
    assert journal.open() == []
    journal.append(history[:3])
    journal.append(history[3:])
    # A crash: the process dies without closing anything, mid-way through a line.
    with open(tmp_path / "journal", "ab") as handle:
        handle.write(b'{"type": "RAIS')
    again = AlarmJournal(tmp_path / "journal")
    assert again.open() == history
    assert again.damaged_lines == 1
    again.trim(2)
    third = AlarmJournal(tmp_path / "journal")
    assert third.open() == history[2:]
    third.trim(len(history) - 2)
    assert (tmp_path / "journal").read_bytes() == b""
    assert third.pending() == 0


def test_shipper_writes_journal_events_to_the_store(tmp_path: Path) -> None:
    journal = AlarmJournal(tmp_path / "journal")
    journal.open()
    shipper = AlarmLogShipper(journal, lambda: SqliteAlarmLog(tmp_path / "tps.sqlite3")).start()
    try:
        history = _history()
        journal.append(history)
        wait_until(lambda: journal.pending() == 0, what="the journal to empty")
    finally:
        assert shipper.stop()
    assert SqliteAlarmLog(tmp_path / "tps.sqlite3").events() == history


@pytest.mark.slow
def test_shipper_waits_out_an_influxdb_outage_and_loses_nothing(
    private_influx: InfluxServer, tmp_path: Path
) -> None:
    influx = private_influx
    journal = AlarmJournal(tmp_path / "journal")
    journal.open()

    def open_log() -> AlarmLog:
        return InfluxAlarmLog(InfluxStore(influx.url, "alarms", timeout=2))

    shipper = AlarmLogShipper(journal, open_log,
                              backoff=Backoff(initial=0.1, cap=0.5)).start()
    try:
        history = _history()
        journal.append(history[:2])
        wait_until(lambda: journal.pending() == 0, what="the first events in InfluxDB")
        influx.stop()
        journal.append(history[2:])
        wait_until(lambda: shipper.failures > 0, what="a failed write")
        assert journal.pending() == len(history) - 2
        influx.start()
        wait_until(lambda: journal.pending() == 0, timeout=30, what="the rest after the outage")
    finally:
        shipper.stop()
    stored = open_log()
    assert stored.events() == history
    assert stored.latest()[-1].alarm.state is AlarmState.ACTIVE


def test_names_no_tag_can_carry_find_nothing(log: AlarmLog) -> None:
    log.ensure_ready()
    log.write(_history())
    for name in ("\ro", "a\nb", "trailing\\"):
        assert log.events(stream=name) == []
        assert log.events(alarm_id=name) == []
