"""Alarms to Prometheus Alertmanager: payloads (plain), and delivery to a real
Alertmanager - shown within 2 s, resolved once cleared, nothing lost across a 20 s
outage - plus the generic webhook's retries."""

from __future__ import annotations

import http.server
import itertools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.alertmanager import AlertmanagerServer
from tests.support.influxdb import free_port
from tests.support.wait import wait_until
from tps.alarms.alertmanager import AlertBook, AlertmanagerSender, WebhookSender, build_alert
from tps.alarms.checker import CRITICAL, OK, WARNING, LevelChanged
from tps.alarms.lifecycle import AlarmBook
from tps.alarms.model import AlarmEvent
from tps.ingest.backoff import Backoff

S = 1_000_000_000


@pytest.fixture
def book() -> AlarmBook:
    ids = itertools.count(1)
    return AlarmBook(new_id=lambda: f"a{next(ids)}")


@pytest.fixture
def alertmanager() -> Iterator[AlertmanagerServer]:
    server = AlertmanagerServer()
    try:
        server.start()
    except RuntimeError as exc:
        server.close()
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.close()


def _warn(stream: str = "sat-1", value: float = 31.5) -> LevelChanged:
    return LevelChanged(stream, WARNING, time.time_ns(), value, "yellowHigh", 30.0)


def _red(stream: str = "sat-1", value: float = 41.0) -> LevelChanged:
    return LevelChanged(stream, CRITICAL, time.time_ns(), value, "redHigh", 40.0)


def _ok(stream: str = "sat-1") -> LevelChanged:
    return LevelChanged(stream, OK, time.time_ns(), 20.0)


def _labels(alerts: list[dict[str, Any]]) -> list[dict[str, str]]:
    return sorted((a["labels"] for a in alerts), key=lambda x: sorted(x.items()))


# --- payloads -------------------------------------------------------------------------


def test_alert_has_labels_annotations_and_times(book: AlarmBook) -> None:
    [event] = book.on_level(LevelChanged("sat-1", WARNING, 1_690_000_000 * S, 31.5,
                                         "yellowHigh", 30.0))
    alert = build_alert(event.alarm)
    assert alert["labels"] == {"alertname": "TemperatureOutOfLimits", "stream": "sat-1",
                               "severity": "warning"}
    assert alert["annotations"]["value"] == "31.5"
    assert alert["annotations"]["limit"] == "30"
    assert alert["annotations"]["alarm_id"] == "a1"
    assert alert["annotations"]["summary"] == "Stream sat-1 is above yellowHigh 30: 31.5"
    assert alert["startsAt"] == "2023-07-22T04:26:40Z"
    assert "endsAt" not in alert
    assert build_alert(event.alarm, 1_690_000_060 * S)["endsAt"] == "2023-07-22T04:27:40Z"


def test_escalation_resolves_the_warning_and_fires_the_critical(book: AlarmBook) -> None:
    alerts = AlertBook()
    for event in book.on_level(_warn()) + book.on_level(_red()):
        alerts.apply(event.alarm)
    payload = alerts.payload()
    assert [(a["labels"]["severity"], "endsAt" in a) for a in payload] == [
        ("warning", True), ("critical", False)]
    alerts.delivered(payload)
    assert [a["labels"]["severity"] for a in alerts.payload()] == ["critical"]
    assert not alerts.dirty


def test_shelve_and_return_resolve_acknowledge_keeps_firing(book: AlarmBook) -> None:
    alerts = AlertBook()
    events = book.on_level(_warn())
    events += book.acknowledge("a1", "known")[1]
    for event in events:
        alerts.apply(event.alarm)
    assert alerts.firing() == 1
    alerts.apply(book.shelve("a1", 60)[0])
    assert alerts.firing() == 0 and "endsAt" in alerts.payload()[0]
    alerts.delivered(alerts.payload())
    assert alerts.payload() == []


def test_stale_alarm_has_its_own_alertname(book: AlarmBook) -> None:
    [event] = book.on_stale("sat-1", 12.5, 10.0)
    alert = build_alert(event.alarm)
    assert alert["labels"] == {"alertname": "TemperatureStale", "stream": "sat-1",
                               "severity": "stale"}
    assert "12.5 s" in alert["annotations"]["summary"]


# --- a real Alertmanager -----------------------------------------------------------------


def test_alertmanager_shows_the_alert_within_2_s_and_resolves_it_when_cleared(
    alertmanager: AlertmanagerServer, book: AlarmBook
) -> None:
    sender = AlertmanagerSender(alertmanager.url, resend_interval=30).start()
    try:
        raised = time.monotonic()
        sender.submit(book.on_level(_warn(value=31.5)))
        took = wait_until(lambda: alertmanager.alerts(), timeout=2,
                          what="the alert in Alertmanager")
        assert time.monotonic() - raised < 2.0, took
        [alert] = alertmanager.alerts()
        assert alert["labels"] == {"alertname": "TemperatureOutOfLimits", "stream": "sat-1",
                                   "severity": "warning"}
        assert alert["annotations"]["value"] == "31.5"
        assert alert["annotations"]["limit"] == "30"
        assert alert["status"]["state"] == "active"
        wait_until(lambda: any(n["status"] == "firing" for n in alertmanager.notifications()),
                   timeout=5, what="Alertmanager's firing notification")

        sender.submit(book.on_level(_ok()))           # RETURNED
        sender.submit(book.acknowledge("a1", "ok")[1])  # CLEARED
        wait_until(lambda: alertmanager.alerts() == [], timeout=5,
                   what="the alert to leave Alertmanager's active list")
        wait_until(lambda: any(n["status"] == "resolved" for n in alertmanager.notifications()),
                   timeout=5, what="Alertmanager's resolved notification")
        resolved = next(n for n in alertmanager.notifications() if n["status"] == "resolved")
        assert resolved["alerts"][0]["labels"]["stream"] == "sat-1"
    finally:
        sender.stop()


@pytest.mark.slow
def test_alertmanager_down_for_20_s_loses_nothing(
    alertmanager: AlertmanagerServer, book: AlarmBook
) -> None:
    sender = AlertmanagerSender(alertmanager.url, resend_interval=60,
                                backoff=Backoff(initial=0.5, cap=5.0)).start()
    try:
        sender.submit(book.on_level(_warn("sat-1")))
        wait_until(lambda: alertmanager.alerts(), timeout=2, what="the first alert")
        alertmanager.stop()
        # While it is down: sat-1 escalates, sat-2 goes out of limits and back, and
        # sat-3 goes out and stays.
        sender.submit(book.on_level(_red("sat-1")))
        sender.submit(book.on_level(_warn("sat-2")))
        sender.submit(book.on_level(_ok("sat-2")))
        sender.submit(book.on_level(_warn("sat-3")))
        wait_until(lambda: sender.failures >= 2, timeout=10, what="failed posts")
        time.sleep(20)  # the outage itself: what the test is about
        alertmanager.start()
        back = time.monotonic()
        wait_until(lambda: len(alertmanager.alerts()) == 2, timeout=10,
                   what="the alerts after Alertmanager came back")
        assert time.monotonic() - back < 6.0  # within the backoff cap (5 s) and a post
        assert _labels(alertmanager.alerts()) == [
            {"alertname": "TemperatureOutOfLimits", "severity": "critical", "stream": "sat-1"},
            {"alertname": "TemperatureOutOfLimits", "severity": "warning", "stream": "sat-3"},
        ]
        assert sender.health()["ok"]
    finally:
        sender.stop()


# --- the generic webhook -----------------------------------------------------------------


class _Flaky(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        server: Any = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if server.fail_next > 0:
            server.fail_next -= 1
            self.send_response(503)
        else:
            server.received.append(body)
            self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_webhook_gets_every_event_in_order_despite_failures(book: AlarmBook) -> None:
    server: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    server.received, server.fail_next = [], 3
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sender = WebhookSender(f"http://127.0.0.1:{server.server_address[1]}/alarms",
                           backoff=Backoff(initial=0.05, cap=0.1)).start()
    try:
        events: list[AlarmEvent] = book.on_level(_warn()) + book.on_level(_red())
        events += book.on_level(_ok()) + book.acknowledge("a1")[1]
        sender.submit(events)
        wait_until(lambda: len(server.received) == 4, what="four deliveries")
        assert [e["type"] for e in server.received] == [
            "RAISED", "ESCALATED", "RETURNED", "CLEARED"]
        assert sender.failures == 3
    finally:
        sender.stop()
        server.shutdown()


def test_webhook_queue_is_bounded_and_counts_what_it_dropped(book: AlarmBook) -> None:
    port = free_port()  # nobody listens: every post fails
    sender = WebhookSender(f"http://127.0.0.1:{port}/", max_queue=2,
                           backoff=Backoff(initial=5, cap=5))
    events = book.on_level(_warn()) + book.on_level(_red()) + book.on_level(_ok())
    sender.submit(events)
    assert sender.dropped == 1
