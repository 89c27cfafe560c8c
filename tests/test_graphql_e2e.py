"""End to end: ``tps serve`` fed by ``tps simulate``, InfluxDB behind it, /graphql in front.

The seed's smoke-test queries, the challenge's query and mutation, and a ``gql``
subscription, all against the real process; statistics compared with InfluxQL on the
same server, and the subscription compared with what the reader stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from gql import Client as GqlClient
from gql import gql
from gql.transport.websockets import WebsocketsTransport

from tests.support.influxdb import InfluxServer
from tests.support.service import SimulatorProcess, TpsProcess
from tests.support.wait import wait_until
from tps.model import datetime_to_ns, ns_to_datetime


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(tmp_path, interval=0.05).start()
    yield sim
    sim.close()


@pytest.fixture
def service(tmp_path: Path, influx: InfluxServer, influx_db: str,
            simulator: SimulatorProcess) -> Iterator[TpsProcess]:
    tps = TpsProcess(tmp_path, {
        "TPS_INFLUX_URL": influx.url, "TPS_INFLUX_DB": influx_db, "TPS_FLUSH_INTERVAL": "0.2",
        "TPS_FEEDS": f"sat-1={simulator.url('sat-1')}", "TPS_CONTROL_TOKEN": "e2e-token",
    })
    try:
        tps.start()
        yield tps
    finally:
        tps.close()


SEED_CURRENT = "query {\n  currentTemperature {\n    time\n    value\n   }\n}\n"


def _wait_for_data(tps: TpsProcess, timeout: float = 20) -> dict[str, Any]:
    bodies: list[dict[str, Any]] = []

    def answered() -> bool:
        bodies.append(tps.graphql(SEED_CURRENT))
        return bool((bodies[-1].get("data") or {}).get("currentTemperature"))

    try:
        wait_until(answered, timeout, what="a reading", step=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{tps.log()}") from None
    return bodies[-1]


def _stored_after(influx: InfluxServer, db: str, time_ns: int) -> bool:
    """True once InfluxDB holds a reading newer than ``time_ns``: the writer writes each
    stream in order, so everything up to ``time_ns`` is stored by then."""
    series = influx.query(f'SELECT COUNT("value") FROM "temperature" WHERE time > {time_ns}', db)
    return bool(series) and int(series[0]["values"][0][1]) > 0  # type: ignore[index]


def test_seed_and_challenge_queries_against_the_running_service(
    service: TpsProcess, influx: InfluxServer, influx_db: str
) -> None:
    first = _wait_for_data(service)["data"]["currentTemperature"]
    answers: list[dict[str, Any]] = []

    def moved() -> bool:
        answers.append(service.graphql("{ currentTemperature { timestamp value } }"))
        return bool(answers[-1]["data"]["currentTemperature"]["timestamp"] != first["time"])

    wait_until(moved, 5, what="currentTemperature to move", step=0.1)
    current = answers[-1]["data"]["currentTemperature"]
    assert current["timestamp"] != first["time"], "currentTemperature did not move"

    # A window fully in the past (the first second of readings), once it is all written.
    after_ns = datetime_to_ns(datetime.fromisoformat(first["time"]))
    before_ns = after_ns + 1_000_000_000
    wait_until(lambda: _stored_after(influx, influx_db, before_ns), 10,
               what="the window written to InfluxDB", step=0.1)
    after, before = ns_to_datetime(after_ns).isoformat(), ns_to_datetime(before_ns).isoformat()
    stats = service.graphql(
        f'{{ temperatureStatistics(after: "{after}", before: "{before}") '
        "{ min max mean count } }")["data"]["temperatureStatistics"]
    after_q, before_q = datetime_to_ns(ns_to_datetime(after_ns)), datetime_to_ns(
        ns_to_datetime(before_ns))
    series = influx.query(
        f'SELECT MIN("value"), MAX("value"), MEAN("value"), COUNT("value") FROM "temperature" '
        f"WHERE time >= {after_q} AND time <= {before_q}", influx_db)
    _, lo, hi, mean, count = series[0]["values"][0]  # type: ignore[index]
    assert stats["count"] == count > 5
    assert (stats["min"], stats["max"]) == (lo, hi)
    assert stats["mean"] == pytest.approx(mean)

    recent = service.graphql(
        "query MyQuery {\n  temperatureMeasurements {  \n    time\n    value\n  }\n}\n")
    rows = recent["data"]["temperatureMeasurements"]
    assert rows, "the last two seconds should hold readings"
    assert all(datetime_to_ns(datetime.fromisoformat(r["time"])) > time.time_ns() - 4e9
               for r in rows)


def test_toggle_feed_mutation_stops_and_starts_the_stream(service: TpsProcess) -> None:
    _wait_for_data(service)
    denied = service.graphql('mutation { toggleFeed(input: {status: "off"}) { status } }')
    assert "unauthorized" in denied["errors"][0]["message"]
    off = service.graphql('mutation { toggleFeed(input: {status: "off"}) '
                          "{ status streams { name state } } }", token="e2e-token")
    assert off["data"]["toggleFeed"]["status"] == "off", off
    assert off["data"]["toggleFeed"]["streams"][0]["state"] == "stopped"
    streams = service.graphql("{ streams { name state received } }")["data"]["streams"]
    assert streams[0]["name"] == "sat-1" and streams[0]["state"] == "stopped"
    assert streams[0]["received"] > 0
    on = service.graphql('mutation { toggleFeed(input: {status: "on", stream: "sat-1"}) '
                         "{ status streams { name state } } }", token="e2e-token")
    assert on["data"]["toggleFeed"]["streams"][0]["state"] != "stopped", on


def test_add_stream_and_remove_stream_mutations(
    service: TpsProcess, simulator: SimulatorProcess
) -> None:
    _wait_for_data(service)
    added = service.graphql(
        "mutation($url: String!) { addStream(input: {name: \"sat-2\", url: $url}) "
        "{ name url protocol } }", {"url": simulator.url("sat-2")}, token="e2e-token")
    assert added["data"]["addStream"]["name"] == "sat-2", added
    try:
        wait_until(lambda: service.graphql('{ currentTemperature(stream: "sat-2") { value } }')
                   ["data"]["currentTemperature"], 15, what="sat-2 delivering", step=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{service.log()}") from None
    duplicate = service.graphql(
        "mutation($url: String!) { addStream(input: {name: \"sat-2\", url: $url}) { name } }",
        {"url": simulator.url("sat-2")}, token="e2e-token")
    assert "already exists" in duplicate["errors"][0]["message"]
    bad_url = service.graphql(
        'mutation { addStream(input: {name: "sat-3", url: "http://x"}) { name } }',
        token="e2e-token")
    assert "url" in bad_url["errors"][0]["message"]
    removed = service.graphql('mutation { removeStream(name: "sat-2") { name removed } }',
                              token="e2e-token")
    assert removed["data"]["removeStream"] == {"name": "sat-2", "removed": True}
    names = {s["name"] for s in service.graphql("{ streams { name } }")["data"]["streams"]}
    assert names == {"sat-1"}


def test_a_gql_subscription_receives_every_reading_the_reader_stored(
    service: TpsProcess, influx: InfluxServer, influx_db: str
) -> None:
    _wait_for_data(service)

    async def collect(seconds: float) -> list[dict[str, Any]]:
        transport = WebsocketsTransport(url=f"ws://127.0.0.1:{service.port}/graphql",
                                        subprotocols=["graphql-transport-ws"])
        got: list[dict[str, Any]] = []
        async with GqlClient(transport=transport, fetch_schema_from_transport=False) as s:
            query = gql('subscription { temperature(stream: "sat-1") { time value stream } }')
            deadline = time.monotonic() + seconds
            async for item in s.subscribe(query):
                got.append(item["temperature"])
                if time.monotonic() > deadline:
                    break
        return got

    got = asyncio.run(asyncio.wait_for(collect(3.0), 30))
    assert len(got) > 20
    first = datetime_to_ns(datetime.fromisoformat(got[0]["time"]))
    last = datetime_to_ns(datetime.fromisoformat(got[-1]["time"]))
    wait_until(lambda: _stored_after(influx, influx_db, last), 10,
               what="the writer to store the subscription's readings", step=0.1)
    series = influx.query(
        f"SELECT \"value\" FROM \"temperature\" WHERE \"stream\" = 'sat-1' "
        f"AND time >= {first} AND time <= {last + 999}", influx_db)
    rows: Any = series[0]["values"]
    stored = [row[1] for row in rows]
    assert [g["value"] for g in got] == stored
