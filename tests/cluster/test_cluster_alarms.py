"""Alarms in cluster mode, end to end: a 3-node NATS cluster, InfluxDB, Alertmanager, a
feed whose values the test controls, and four TPS processes (two ``ingest``, a
``writer`` and an ``api``).

The stream's limits are set over REST on the ``api`` instance (the shared registry).
The feed goes out of limits; the owner raises the alarm; the owner is killed with
``kill -9`` while the alarm is active and unacknowledged. Then:

- acknowledging meanwhile answers 503 (the owner does not answer), not a 5xx crash;
- the other ingest instance takes the feed over and continues the *same* alarm: no new
  alarm for the same condition, an escalation is the same id, ``seq`` continues;
- acknowledging through the ``api`` instance works (routed to the new owner);
- a subscriber on the ``api`` instance sees every event exactly once, in order;
- the writer stores the events (the alarm's history on the ``api`` instance), and one
  instance sends to Alertmanager, which shows the escalated alert.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gql import Client as GqlClient
from gql import gql
from gql.transport.exceptions import TransportError
from gql.transport.websockets import WebsocketsTransport

from tests.support.alertmanager import AlertmanagerServer
from tests.support.controlled_feed import ControlledFeed
from tests.support.influxdb import InfluxServer
from tests.support.nats import NatsCluster
from tests.support.service import TpsProcess
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow

TTL = 4.0
TOKEN = "cluster-alarm-token"
LIMITS = {"yellowHigh": 30, "redHigh": 40, "deadband": 1}
EVENTS = ('subscription { alarmEvents(stream: "hot") { type alarm { id stream severity '
          "state } } }")


def request(proc: TpsProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(proc.url + path, data, {
        "Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        method=method)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            text = resp.read()
            return resp.status, json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        text = exc.read()
        return exc.code, json.loads(text) if text else None


def owner(api: TpsProcess, stream: str) -> str | None:
    status, body = request(api, "GET", "/api/streams")
    if status != 200:
        return None
    return next((s.get("owner") for s in body["streams"] if s["name"] == stream), None)


class Subscriber:
    """``alarmEvents`` on one instance, collected from a thread."""

    def __init__(self, proc: TpsProcess) -> None:
        self.url = proc.url.replace("http://", "ws://") + "/graphql"
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> Subscriber:
        self._thread.start()
        assert self.ready.wait(20), "subscription did not start"
        return self

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        transport = WebsocketsTransport(url=self.url, subprotocols=["graphql-transport-ws"])
        async with GqlClient(transport=transport, fetch_schema_from_transport=False) as session:
            async def collect() -> None:
                try:
                    async for item in session.subscribe(gql(EVENTS)):
                        self.events.append(item["alarmEvents"])
                except TransportError as exc:  # the subscription ended with an error
                    self.error = exc
            task = asyncio.create_task(collect())
            await asyncio.sleep(0.5)  # the subscription is registered on the server
            self.ready.set()
            await self._stop.wait()
            task.cancel()

    def close(self) -> None:
        """End the subscription (again: nothing to do)."""
        if not self._thread.is_alive():
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def types(self) -> list[str]:
        """The event types so far; a subscription that ended with an error fails the
        test at once, with the error."""
        if self.error is not None:
            raise AssertionError(f"alarmEvents ended with an error: {self.error!r}")
        return [e["type"] for e in self.events]


@pytest.fixture
def feed() -> Iterator[ControlledFeed]:
    server = ControlledFeed().start()
    yield server
    server.close()


@pytest.fixture
def alertmanager() -> Iterator[AlertmanagerServer]:
    try:
        server = AlertmanagerServer().start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.close()


def test_a_killed_owner_s_alarm_is_continued_by_the_next_owner_and_acknowledged_anywhere(
        nats_cluster: NatsCluster, influx: InfluxServer, influx_db: str, tmp_path: Path,
        feed: ControlledFeed, alertmanager: AlertmanagerServer) -> None:
    def env(name: str, role: str) -> dict[str, str]:
        return {"TPS_NATS_URL": nats_cluster.url, "TPS_INSTANCE": name, "TPS_ROLE": role,
                "TPS_LEASE_TTL": str(TTL), "TPS_INFLUX_URL": influx.url,
                "TPS_INFLUX_DB": influx_db, "TPS_FLUSH_INTERVAL": "0.1",
                "TPS_CONTROL_TOKEN": TOKEN, "TPS_ALERTMANAGER_URL": alertmanager.url,
                "TPS_ALERTMANAGER_RESEND": "2"}

    procs = {name: TpsProcess(tmp_path, env(name, role), name=name) for name, role in
             (("a", "ingest"), ("b", "ingest"), ("w", "writer"), ("api", "api"))}
    subscriber: Subscriber | None = None
    try:
        for proc in procs.values():
            proc.start(wait=False)
        for proc in procs.values():
            proc.wait_healthy(60)
        api = procs["api"]
        wait_until(lambda: request(api, "POST", "/api/streams",
                                   {"name": "hot", "url": feed.url})[0] == 201, 30,
                   "the stream to be added on the api instance")
        status, body = request(api, "PUT", "/api/streams/hot/limits", LIMITS)
        assert status == 200, body
        feed.wait_connected()
        # Both ingest instances join at about the same time, so the stream may still
        # move once while the lease assignment settles: wait for one reader and an owner
        # that stays put, since readings sent during a hand-over are lost by design.
        wait_until(lambda: feed.clients() == 1, 10, "one reader")
        owners: list[str | None] = []

        def settled() -> bool:
            owners.append(owner(api, "hot"))
            return len(owners) >= 5 and owners[-1] in ("a", "b") and len(set(owners[-5:])) == 1
        wait_until(settled, 15, "the stream's owner to settle", step=0.2)
        first = owners[-1]
        assert first in ("a", "b")
        other = "b" if first == "a" else "a"
        subscriber = Subscriber(api).start()

        feed.push(20.0)  # in limits: the stream's level is decided
        feed.push(35.0)  # WARNING
        try:
            wait_until(lambda: subscriber is not None and subscriber.types() == ["RAISED"],
                       10, "RAISED on the api instance's subscriber")
        except AssertionError as exc:
            logs = "\n".join(f"--- {name} (owners seen {owners}):\n{proc.log()[-3000:]}"
                              for name, proc in procs.items())
            raise AssertionError(f"{exc}; events {subscriber.events}\n{logs}") from None
        alarm_id = subscriber.events[0]["alarm"]["id"]
        assert subscriber.events[0]["alarm"]["severity"] == "WARNING"

        procs[first].kill()  # kill -9 with the alarm ACTIVE and unacknowledged
        status, body = request(api, "POST", f"/api/alarms/{alarm_id}/acknowledge",
                               {"comment": "too early"})
        assert status == 503, body  # the owner is gone and nobody took over yet

        wait_until(lambda: owner(api, "hot") == other, TTL + 10, "the other instance to "
                   "take the stream over")
        feed.wait_connected()
        wait_until(lambda: feed.clients() == 1, 10, "one reader")

        # One instance sends to Alertmanager. The killed one may have held the
        # alert-sender lease: a survivor takes it once that lease expires too (its
        # renewals may lag the stream lease's by up to TTL / 4). An alert that fires and
        # resolves entirely inside that gap reaches Alertmanager only as resolved, which
        # Alertmanager never notifies - so the escalation waits for the sender here.
        def senders() -> list[str]:
            out = []
            for name, proc in procs.items():
                if name == first:
                    continue
                try:
                    _, health = request(proc, "GET", "/health")
                except OSError:
                    continue
                alarms = (health or {}).get("alarms") or {}
                if alarms.get("sending_alerts"):
                    out.append(name)
            return out
        wait_until(lambda: len(senders()) == 1, TTL + 5, "exactly one instance sending "
                   "alerts")

        feed.push(35.5, 29.5)  # still out (deadband 1): no new alarm, no event
        feed.push(45.0)  # CRITICAL: the same alarm escalates
        wait_until(lambda: subscriber is not None and len(subscriber.types()) >= 2, 10,
                   "ESCALATED")
        assert subscriber.types() == ["RAISED", "ESCALATED"], subscriber.events
        assert subscriber.events[1]["alarm"]["id"] == alarm_id
        assert subscriber.events[1]["alarm"]["severity"] == "CRITICAL"
        wait_until(lambda: any(a.get("status") == "firing"
                               and a["labels"].get("severity") == "critical"
                               for n in alertmanager.notifications()
                               for a in n.get("alerts", [])), 15,
                   "Alertmanager to notify the escalated (critical) alert as firing")
        assert len(senders()) == 1, senders()

        status, body = request(api, "POST", f"/api/alarms/{alarm_id}/acknowledge",
                               {"comment": "seen"})
        assert status == 200, body
        assert body["id"] == alarm_id and body["state"] == "ACKNOWLEDGED"
        feed.push(20.0)  # back inside: returned and acknowledged, so CLEARED
        wait_until(lambda: subscriber is not None and len(subscriber.types()) >= 4, 10,
                   "ACKNOWLEDGED and CLEARED")

        status, active = request(api, "GET", "/api/alarms?active=true")
        assert status == 200 and active["alarms"] == []

        def stored_history() -> list[dict[str, Any]]:
            code, alarm = request(api, "GET", f"/api/alarms/{alarm_id}")
            return alarm["history"] if code == 200 else []

        wait_until(lambda: len(stored_history()) == 4, 15, "the writer to store the events")
        history = stored_history()
        assert [e["type"] for e in history] == ["RAISED", "ESCALATED", "ACKNOWLEDGED",
                                                "CLEARED"]
        assert [e["seq"] for e in history] == [1, 2, 3, 4]
        assert {e["alarm"]["id"] for e in history} == {alarm_id}

        # Every event once, in order, all of the same alarm.
        subscriber.close()
        assert subscriber.types() == ["RAISED", "ESCALATED", "ACKNOWLEDGED", "CLEARED"]
        assert {e["alarm"]["id"] for e in subscriber.events} == {alarm_id}
    finally:
        try:
            if subscriber is not None:
                subscriber.close()
        finally:
            for proc in procs.values():
                proc.close()
