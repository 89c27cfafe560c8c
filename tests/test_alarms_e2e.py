"""Issue 11 acceptance, end to end: ``tps serve`` as a subprocess reading a feed whose
values the test controls.

- yellow, red, back inside the deadband, silence: exactly the expected alarm events,
  in order, over both subscription protocols (gql with graphql-transport-ws and with
  graphql-ws) and in ``alarms(...)``; escalation in place; no flapping;
- a real Alertmanager shows the alert within 2 s of the triggering reading and
  resolves it once cleared;
- ``kill -9`` with an active unacknowledged alarm, restart: active again,
  acknowledging works, the history is complete (SQLite and InfluxDB);
- bad limits and unknown ids: 400/404/GraphQL errors, never 5xx; no token: 401.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gql import Client as GqlClient
from gql import gql
from gql.transport.websockets import WebsocketsTransport

from tests.support.alertmanager import AlertmanagerServer
from tests.support.controlled_feed import ControlledFeed
from tests.support.influxdb import InfluxServer
from tests.support.service import TpsProcess
from tests.support.wait import wait_until

TOKEN = "alarm-test-token"
LIMITS = {"yellowHigh": 30, "redHigh": 40, "deadband": 0.5, "persistence": 2,
          "staleAfter": 3}
EVENTS = ('subscription { alarmEvents(stream: "s1") { type comment '
          "alarm { id stream severity state value limit } } }")


def request(tps: TpsProcess, method: str, path: str, body: Any = None,
            token: str | None = TOKEN, raw: bytes | None = None) -> tuple[int, Any]:
    """One HTTP request; (status, decoded JSON or None)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(tps.url + path, data, headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            text = resp.read()
            return resp.status, json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        text = exc.read()
        return exc.code, json.loads(text) if text else None


@pytest.fixture
def feed() -> Iterator[ControlledFeed]:
    server = ControlledFeed().start()
    yield server
    server.close()


def _tps(tmp_path: Path, feed: ControlledFeed, **env: str) -> TpsProcess:
    return TpsProcess(tmp_path, {
        "TPS_FEEDS": f"s1={feed.url}|json", "TPS_CONTROL_TOKEN": TOKEN,
        "TPS_LIMITS": json.dumps({"s1": LIMITS}), "TPS_FLUSH_INTERVAL": "0.1", **env})


@pytest.fixture
def tps(tmp_path: Path, feed: ControlledFeed) -> Iterator[TpsProcess]:
    process = _tps(tmp_path, feed)
    process.start()
    feed.wait_connected()
    yield process
    process.close()


class Subscriber:
    """A gql client on its own thread and loop, collecting alarm events in order."""

    def __init__(self, url: str, protocol: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, args=(url, protocol), daemon=True)
        self._thread.start()
        assert self.ready.wait(20), f"{protocol} subscriber did not subscribe: {self.error}"

    def _run(self, url: str, protocol: str) -> None:
        try:
            asyncio.run(self._main(url, protocol))
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
            self.ready.set()

    async def _main(self, url: str, protocol: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        transport = WebsocketsTransport(url=url, subprotocols=[protocol])
        async with GqlClient(transport=transport, fetch_schema_from_transport=False) as session:
            agen = session.subscribe(gql(EVENTS))
            first = asyncio.ensure_future(agen.__anext__())
            for _ in range(20):
                await asyncio.sleep(0)  # the subscribe message goes out on the socket
            # A query on the same socket is answered after the subscribe was handled.
            await session.execute(gql("{ alarms(active: true) { id } }"))
            self.ready.set()
            pending = first
            while not self._stop.is_set():
                stop = asyncio.ensure_future(self._stop.wait())
                done, _ = await asyncio.wait({pending, stop},
                                             return_when=asyncio.FIRST_COMPLETED)
                if pending in done:
                    self.events.append(pending.result()["alarmEvents"])
                    pending = asyncio.ensure_future(agen.__anext__())
                stop.cancel()
            pending.cancel()
            await agen.aclose()

    def kinds(self) -> list[tuple[str, str, str, str]]:
        return [(e["type"], e["alarm"]["id"], e["alarm"]["severity"], e["alarm"]["state"])
                for e in self.events]

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def _graphql(tps: TpsProcess, query: str, token: str | None = None) -> dict[str, Any]:
    return tps.graphql(query, token=token)


def test_yellow_red_back_and_silence_give_exactly_the_expected_events(
    tps: TpsProcess, feed: ControlledFeed
) -> None:
    ws_url = tps.url.replace("http://", "ws://") + "/graphql"
    modern = Subscriber(ws_url, "graphql-transport-ws")
    legacy = Subscriber(ws_url, "graphql-ws")
    try:
        def seen(count: int) -> None:
            wait_until(lambda: len(modern.events) >= count and len(legacy.events) >= count,
                       timeout=10, what=f"{count} alarm events on both subscribers")

        feed.push(20.0, 31.0, 20.0)   # one reading out: persistence 2 raises nothing
        feed.push(31.0, 31.0)         # two in a row: RAISED WARNING
        seen(1)
        feed.push(30.2, 31.5, 29.8)   # back inside, but not by the deadband: no flapping
        feed.push(41.0, 42.0)         # two reds: ESCALATED in place
        seen(2)
        feed.push(35.0, 29.6)         # red to yellow, then inside by less than 0.5: nothing
        feed.push(29.4)               # inside by 0.6: RETURNED
        seen(3)
        feed.push(30.1, 29.0)         # one reading out again: nothing (persistence 2)
        seen(4)                       # ... then silence: RAISED STALE after 3 s
        value_id = modern.events[0]["alarm"]["id"]
        stale_id = modern.events[3]["alarm"]["id"]
        # The control plane: acknowledging the returned alarm clears it.
        answer = _graphql(tps, f'mutation {{ acknowledgeAlarm(id: "{value_id}", '
                          'comment: "seen it") { id state acknowledged } }', token=TOKEN)
        assert answer["data"]["acknowledgeAlarm"] == {"id": value_id, "state": "CLEARED",
                                                      "acknowledged": True}
        seen(5)
        feed.push(21.0)               # a reading again: the STALE alarm returns
        seen(6)
        expected = [
            ("RAISED", value_id, "WARNING", "ACTIVE"),
            ("ESCALATED", value_id, "CRITICAL", "ACTIVE"),
            ("RETURNED", value_id, "CRITICAL", "RETURNED"),
            ("RAISED", stale_id, "STALE", "ACTIVE"),
            ("CLEARED", value_id, "CRITICAL", "CLEARED"),
            ("RETURNED", stale_id, "STALE", "RETURNED"),
        ]
        assert value_id != stale_id
        assert modern.kinds() == expected
        assert legacy.kinds() == expected
        assert modern.events == legacy.events
        raised = modern.events[0]["alarm"]
        assert (raised["value"], raised["limit"]) == (31.0, 30.0)
        assert modern.events[4]["comment"] == "seen it"
        # Nothing else arrives: a synchronous round trip through the keeper first.
        assert request(tps, "GET", "/api/alarms?active=true")[0] == 200
        assert len(modern.events) == len(legacy.events) == 6
    finally:
        modern.close()
        legacy.close()

    # The same story in alarms(...): one value alarm (escalated in place), one STALE.
    listed = _graphql(tps, '{ alarms(stream: "s1") { id severity state mostSevereValue '
                      "acknowledgeComment } }")["data"]["alarms"]
    assert [(a["id"], a["severity"], a["state"]) for a in listed] == [
        (value_id, "CRITICAL", "CLEARED"), (stale_id, "STALE", "RETURNED")]
    assert listed[0]["mostSevereValue"] == 42.0
    assert listed[0]["acknowledgeComment"] == "seen it"
    active = _graphql(tps, "{ alarms(active: true) { id state } }")["data"]["alarms"]
    assert active == [{"id": stale_id, "state": "RETURNED"}]
    history = _graphql(tps, f'{{ alarmHistory(id: "{value_id}") {{ type seq }} }}')
    assert [(e["type"], e["seq"]) for e in history["data"]["alarmHistory"]] == [
        ("RAISED", 1), ("ESCALATED", 2), ("RETURNED", 3), ("CLEARED", 4)]
    streams = _graphql(tps, "{ streams { name alarmState limits { yellowHigh redHigh "
                       "deadband persistence staleAfter } } }")["data"]["streams"]
    assert streams == [{"name": "s1", "alarmState": "OK", "limits": {
        "yellowHigh": 30.0, "redHigh": 40.0, "deadband": 0.5, "persistence": 2,
        "staleAfter": 3.0}}]
    metrics = urllib.request.urlopen(tps.url + "/metrics", timeout=10).read().decode()
    assert 'tps_alarms_active{severity="STALE",stream="s1"} 1.0' in metrics


def test_alertmanager_shows_the_alert_within_2_s_and_resolves_it(
    tmp_path: Path, feed: ControlledFeed
) -> None:
    alertmanager = AlertmanagerServer()
    try:
        alertmanager.start()
    except RuntimeError as exc:
        alertmanager.close()
        pytest.fail(str(exc), pytrace=False)
    tps = _tps(tmp_path, feed, TPS_ALERTMANAGER_URL=alertmanager.url)
    try:
        tps.start()
        feed.wait_connected()
        feed.push(20.0, 41.0)
        pushed = time.monotonic()
        feed.push(41.5)  # persistence 2: this reading triggers the alarm
        wait_until(lambda: alertmanager.alerts(), timeout=2,
                   what="the alert in Alertmanager within 2 s of the reading")
        assert time.monotonic() - pushed < 2.0
        [alert] = alertmanager.alerts()
        assert alert["labels"] == {"alertname": "TemperatureOutOfLimits", "stream": "s1",
                                   "severity": "critical"}
        assert alert["annotations"]["value"] == "41.5"
        assert alert["annotations"]["limit"] == "40"
        alarm_id = alert["annotations"]["alarm_id"]
        feed.push(20.0)
        # Acknowledged once back in limits, the alarm clears (acknowledged before the
        # reading is evaluated, it would clear only on that reading).
        wait_until(lambda: request(tps, "GET", f"/api/alarms/{alarm_id}")[1]["state"]
                   == "RETURNED", 5, "the alarm to return to limits")
        status, body = request(tps, "POST", f"/api/alarms/{alarm_id}/acknowledge",
                               {"comment": "fixed"})
        assert (status, body["state"]) == (200, "CLEARED")
        wait_until(lambda: alertmanager.alerts() == [], timeout=5,
                   what="the alert to be resolved in Alertmanager")
        wait_until(lambda: any(n["status"] == "resolved"
                               for n in alertmanager.notifications()),
                   timeout=5, what="Alertmanager's resolved notification")
        health = json.loads(urllib.request.urlopen(tps.url + "/health", timeout=10).read())
        assert health["alarms"]["alertmanager"]["ok"]
    finally:
        tps.close()
        alertmanager.close()


@pytest.mark.parametrize("store", ["sqlite", "influx"])
def test_kill_9_with_an_active_alarm_then_restart(
    tmp_path: Path, feed: ControlledFeed, store: str
) -> None:
    env: dict[str, str] = {}
    influx: InfluxServer | None = None
    if store == "influx":
        influx = InfluxServer().start()
        env = {"TPS_INFLUX_URL": influx.url, "TPS_INFLUX_DB": "alarms"}
    first = _tps(tmp_path, feed, **env)
    second: TpsProcess | None = None
    try:
        first.start()
        feed.wait_connected()
        feed.push(20.0, 31.0, 31.5)
        wait_until(lambda: request(first, "GET", "/api/alarms?active=true")[1]["alarms"],
                   timeout=10, what="the alarm")
        [before] = request(first, "GET", "/api/alarms?active=true")[1]["alarms"]
        assert (before["state"], before["severity"]) == ("ACTIVE", "WARNING")
        first.kill()

        second = _tps(tmp_path, feed, **env)
        second.port = first.port
        second.env["TPS_HTTP_PORT"] = str(first.port)
        second.start()
        wait_until(lambda: request(second, "GET", "/api/alarms?active=true")[1]["alarms"],
                   timeout=15, what="the alarm restored after the restart")
        [after] = request(second, "GET", "/api/alarms?active=true")[1]["alarms"]
        assert after == before
        state = _graphql(second, "{ streams { name alarmState } }")["data"]["streams"]
        assert state == [{"name": "s1", "alarmState": "WARNING"}]
        status, acked = request(second, "POST", f"/api/alarms/{before['id']}/acknowledge",
                                {"comment": "after the crash"})
        assert (status, acked["state"]) == (200, "ACKNOWLEDGED")

        def history() -> list[tuple[str, int]]:
            code, body = request(second, "GET", f"/api/alarms/{before['id']}")
            assert code == 200
            return [(e["type"], e["seq"]) for e in body["history"]]

        wait_until(lambda: history() == [("RAISED", 1), ("ACKNOWLEDGED", 2)], timeout=10,
                   what="the complete history in the store")
    finally:
        first.close()
        if second is not None:
            second.close()
        if influx is not None:
            influx.close()


def test_bad_limits_unknown_ids_and_missing_tokens_are_clear_errors(
    tps: TpsProcess, feed: ControlledFeed
) -> None:
    limits = "/api/streams/s1/limits"
    for body, field in (
        ({"yellowHigh": 30, "redHigh": 25}, "redHigh"),
        ({"yellowLow": 30, "yellowHigh": 10}, "yellowHigh"),
        ({"yellowHigh": "30"}, "yellowHigh"),
        ({"staleAfter": -1}, "staleAfter"),
        ({"persistence": 0}, "persistence"),
        ({"bogus": 1}, "bogus"),
    ):
        status, answer = request(tps, "PUT", limits, body)
        assert (status, answer["error"]["field"]) == (400, field), (body, answer)
    status, answer = request(tps, "PUT", limits, raw=json.dumps({"redHigh": math.nan}).encode())
    assert (status, answer["error"]["field"]) == (400, "redHigh")
    assert request(tps, "PUT", limits, raw=b"[1, 2")[0] == 400
    assert request(tps, "PUT", limits, raw=b"{" + b" " * 20_000 + b"}")[0] == 413
    assert request(tps, "GET", limits)[1]["yellowHigh"] == 30.0  # nothing changed
    assert request(tps, "PUT", limits, {"yellowHigh": 1}, token=None)[0] == 401
    assert request(tps, "PUT", limits, {"yellowHigh": 1}, token="wrong")[0] == 401
    assert request(tps, "DELETE", limits, token=None)[0] == 401
    assert request(tps, "GET", "/api/streams/nope/limits")[0] == 404
    assert request(tps, "PUT", "/api/streams/nope/limits", {"yellowHigh": 1})[0] == 404

    assert request(tps, "GET", "/api/alarms/nope")[0] == 404
    assert request(tps, "GET", "/api/alarms/" + "x" * 5000)[0] == 404
    assert request(tps, "POST", "/api/alarms/nope/acknowledge", {})[0] == 404
    assert request(tps, "POST", "/api/alarms/nope/shelve", {"seconds": 5})[0] == 404
    assert request(tps, "POST", "/api/alarms/nope/acknowledge", {}, token=None)[0] == 401
    assert request(tps, "GET", "/api/alarms?active=maybe")[0] == 400
    assert request(tps, "GET", "/api/alarms?after=yesterday")[0] == 400

    feed.push(20.0, 31.0, 31.0)
    wait_until(lambda: request(tps, "GET", "/api/alarms?active=true")[1]["alarms"],
               what="an alarm to act on")
    alarm_id = request(tps, "GET", "/api/alarms?active=true")[1]["alarms"][0]["id"]
    action = f"/api/alarms/{alarm_id}"
    shelves: list[tuple[dict[str, Any], str]] = [
        ({"seconds": 10**12}, "seconds"), ({"seconds": 0}, "seconds"),
        ({"seconds": "60"}, "seconds"), ({}, "seconds"),
        ({"seconds": 60, "comment": "x" * 5000}, "comment"),
        ({"seconds": 60, "comment": 5}, "comment")]
    for shelve, field in shelves:
        status, answer = request(tps, "POST", action + "/shelve", shelve)
        assert (status, answer["error"]["field"]) == (400, field), (shelve, answer)
    assert request(tps, "GET", action)[1]["state"] == "ACTIVE"  # nothing changed

    # GraphQL: the same refusals, as errors naming the field; mutations need the token.
    bad = _graphql(tps, 'mutation { setLimits(stream: "s1", limits: {yellowHigh: 30, '
                   "redHigh: 20}) { redHigh } }", token=TOKEN)
    assert "redHigh" in bad["errors"][0]["message"]
    typed = _graphql(tps, 'mutation { setLimits(stream: "s1", limits: {yellowHigh: "x"}) '
                     "{ yellowHigh } }", token=TOKEN)
    assert typed["errors"]
    no_token = _graphql(tps, 'mutation { clearLimits(stream: "s1") { yellowHigh } }')
    assert "unauthorized" in no_token["errors"][0]["message"]
    unknown = _graphql(tps, 'mutation { acknowledgeAlarm(id: "nope") { id } }', token=TOKEN)
    assert "no alarm with id" in unknown["errors"][0]["message"]
    huge = _graphql(tps, f'mutation {{ shelveAlarm(id: "{alarm_id}", seconds: 1000000000) '
                    "{ id } }", token=TOKEN)
    assert "seconds" in huge["errors"][0]["message"]
    shelved = _graphql(tps, f'mutation {{ shelveAlarm(id: "{alarm_id}", seconds: 60, '
                       'comment: "later") { state shelvedUntil } }', token=TOKEN)
    assert shelved["data"]["shelveAlarm"]["state"] == "SHELVED"
    cleared = _graphql(tps, 'mutation { clearLimits(stream: "s1") { yellowHigh } }',
                       token=TOKEN)
    assert cleared["data"]["clearLimits"] == {"yellowHigh": None}
    assert request(tps, "GET", limits)[1]["yellowHigh"] is None
    # Clearing the limits returns the alarm; it is still to be acknowledged.
    assert request(tps, "GET", action)[1]["outOfLimits"] is False


def test_api_role_answers_alarms_from_the_store_and_changes_nothing(
    tps: TpsProcess, feed: ControlledFeed, tmp_path: Path
) -> None:
    feed.push(20.0, 31.0, 31.0)
    wait_until(lambda: request(tps, "GET", "/api/alarms?active=true")[1]["alarms"],
               what="the alarm in the ingesting process")
    [alarm] = request(tps, "GET", "/api/alarms?active=true")[1]["alarms"]
    api = TpsProcess(tmp_path, {"TPS_ROLE": "api", "TPS_DATA_DIR": str(tps.data_dir),
                                "TPS_CONTROL_TOKEN": TOKEN}, name="api")
    try:
        api.start()
        wait_until(lambda: _graphql(api, "{ alarms(active: true) { id state } }")
                   .get("data", {}).get("alarms"), timeout=10,
                   what="the alarm read from the store by the api process")
        assert _graphql(api, "{ alarms(active: true) { id state } }")["data"]["alarms"] == [
            {"id": alarm["id"], "state": "ACTIVE"}]
        status, answer = request(api, "POST", f"/api/alarms/{alarm['id']}/acknowledge", {})
        assert status == 503 and "role=api" in answer["error"]["message"]
        refused = _graphql(api, f'mutation {{ acknowledgeAlarm(id: "{alarm["id"]}") '
                           "{ id } }", token=TOKEN)
        assert "role=api" in refused["errors"][0]["message"]
    finally:
        api.close()
