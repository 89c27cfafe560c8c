"""Cluster mode end to end (issue 12): real processes, real NATS, real InfluxDB, faults.

A three-node NATS JetStream cluster, InfluxDB, the simulator with an emission log, and
five TPS processes: ``all``, ``ingest``, ``ingest``, ``writer``, ``api``, sharing twelve
feeds. One run, several faults, then one reconciliation of everything the feed server
emitted against everything InfluxDB holds.

The emission log names the websocket connection each reading was sent on, so per
stream the test sees every subscription any instance ever made. The proofs:

* one reader at a time: a stream's connections never overlap in time;
* stored exactly once: the readings InfluxDB holds for a connection (it is the
  connection active at their receipt time) are, in order, exactly the readings that
  connection emitted - no duplicate, no gap - except a tail the test allows: 250 ms at
  the end of a connection closed by a hand-over or the final stop (frames in flight),
  and, for the streams of the ingest process killed with ``kill -9``, what it had not
  yet handed to JetStream (emitted less than 1 s before the kill);
* take-over: the killed process's streams have a new connection within TTL + 5 s;
* a stream added over REST on the ``api`` instance has a connection within 5 s.

Faults: ``kill -9`` of the writer process (in the middle of a batch: writes run
continuously), of the node leading the readings stream, and of an ingest process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gql import Client as GqlClient
from gql import gql
from gql.transport.websockets import WebsocketsTransport

from tests.support.influxdb import InfluxServer
from tests.support.nats import NatsCluster
from tests.support.service import SimulatorProcess, TpsProcess
from tests.support.wait import eventually, wait_until
from tps.feeds.simulator import read_emit_log_by_connection

pytestmark = pytest.mark.slow

TTL = 4.0
TOKEN = "cluster-test-token"
STREAMS = [f"s{i}" for i in range(12)]
HANDOVER_TAIL_NS = 250_000_000
KILL_TAIL_NS = 1_000_000_000


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def post_json(url: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(url, json.dumps(body).encode(), {
        "Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return int(resp.status)


def caught_up(proc: TpsProcess) -> bool:
    """True when ``proc``'s writer reaches JetStream and holds at most 0.5 s of readings."""
    try:
        writer = get_json(proc.url + "/health")["writer"]
    except OSError:
        return False
    return bool(writer["store_reachable"]) and writer["buffered"] <= 50


def hearing(proc: TpsProcess) -> bool:
    """True when ``proc`` writes and hears heartbeats again (it judges liveness)."""
    try:
        return bool(get_json(proc.url + "/health")["cluster"]["hearing"])
    except (OSError, KeyError):
        return False


def owners(api: TpsProcess) -> dict[str, str | None]:
    try:
        return {s["name"]: s.get("owner") for s in get_json(api.url + "/api/streams")["streams"]}
    except OSError:
        return {}


@dataclass
class Cluster:
    nats: NatsCluster
    influx: InfluxServer
    db: str
    sim: SimulatorProcess
    emit_log: Path
    procs: dict[str, TpsProcess]

    def first_emission_after(self, stream: str, after_ns: int) -> int | None:
        by_connection = read_emit_log_by_connection(self.emit_log).get(stream, {})
        starts = [emitted[0][0] for emitted in by_connection.values() if emitted
                  and emitted[0][0] >= after_ns]
        return min(starts) if starts else None


@pytest.fixture
def cluster(nats_cluster: NatsCluster, influx: InfluxServer, influx_db: str,
            tmp_path: Path) -> Iterator[Cluster]:
    emit_log = tmp_path / "emitted.log"
    sim = SimulatorProcess(tmp_path, "--emit-log", str(emit_log), "--seed", "12",
                           interval=0.05).start()  # 20 readings/s per feed

    def feeds(names: list[str]) -> str:
        return ",".join(f"{name}={sim.url(name)}" for name in names)

    def env(instance: str, role: str, configured: list[str]) -> dict[str, str]:
        return {"TPS_NATS_URL": nats_cluster.url, "TPS_INSTANCE": instance, "TPS_ROLE": role,
                "TPS_LEASE_TTL": str(TTL), "TPS_INFLUX_URL": influx.url,
                "TPS_INFLUX_DB": influx_db, "TPS_FEEDS": feeds(configured),
                "TPS_FLUSH_INTERVAL": "0.2", "TPS_SPOOL_SYNC_INTERVAL": "0.05",
                "TPS_CONTROL_TOKEN": TOKEN, "TPS_SHUTDOWN_TIMEOUT": "10"}

    # Different feed lists on purpose: the shared registry merges them.
    specs = {"all": ("all", STREAMS[:8]), "ingest-1": ("ingest", STREAMS[4:]),
             "ingest-2": ("ingest", []), "writer": ("writer", []), "api": ("api", [])}
    procs = {name: TpsProcess(tmp_path, env(name, role, configured), name=name)
             for name, (role, configured) in specs.items()}
    try:
        for proc in procs.values():
            proc.start(wait=False)
        for proc in procs.values():
            proc.wait_healthy(60)
        yield Cluster(nats_cluster, influx, influx_db, sim, emit_log, procs)
    finally:
        for proc in procs.values():
            proc.close()
        sim.close()


def subscribe_on(api: TpsProcess, count: int, out: list[dict[str, Any]]) -> threading.Thread:
    """Collect ``count`` readings from a GraphQL subscription on ``api`` (a thread)."""
    url = api.url.replace("http://", "ws://") + "/graphql"

    async def collect() -> None:
        transport = WebsocketsTransport(url=url, subprotocols=["graphql-transport-ws"])
        async with GqlClient(transport=transport, fetch_schema_from_transport=False) as session:
            query = gql("subscription { temperature { stream value time } }")
            async for item in session.subscribe(query):
                out.append(item["temperature"])
                if len(out) >= count:
                    return

    thread = threading.Thread(target=lambda: asyncio.run(collect()), daemon=True)
    thread.start()
    return thread


def test_cluster_of_five_processes_survives_its_faults_and_stores_every_reading_once(
        cluster: Cluster) -> None:
    api, procs = cluster.procs["api"], cluster.procs
    ingest = {"all", "ingest-1", "ingest-2"}

    def balanced() -> bool:
        seen = owners(api)
        loads = Counter(seen.get(s) for s in STREAMS)
        return (set(seen) >= set(STREAMS) and set(loads) == ingest
                and max(loads.values()) - min(loads.values()) <= 1)

    wait_until(balanced, 30, "12 feeds shared out by the three ingest-capable processes")

    # A subscriber on the api instance receives readings of feeds read by the others.
    pushed: list[dict[str, Any]] = []
    subscriber = subscribe_on(api, 60, pushed)
    subscriber.join(30)
    assert len(pushed) == 60, pushed
    by_owner = {owners(api)[r["stream"]] for r in pushed}
    assert len(by_owner) >= 2, by_owner

    # A stream added over REST on the api instance is being read within 5 s.
    added_ns = time.time_ns()
    assert post_json(api.url + "/api/streams",
                     {"name": "s12", "url": cluster.sim.url("s12")}) == 201
    wait_until(lambda: cluster.first_emission_after("s12", added_ns) is not None, 5,
               "the added stream to be read")
    streams = [*STREAMS, "s12"]

    # kill -9 of the writer process mid-batch, and of the NATS node leading the readings.
    time.sleep(1)
    procs["writer"].kill()
    leader = cluster.nats.stream_leader("TPS_READINGS")
    assert leader is not None
    cluster.nats.kill(leader)
    # Until JetStream has elected new leaders, the ingest processes keep what they read
    # in their local spools; wait until it is all acknowledged again, so the next fault
    # (a machine lost with its spool) is judged on its own.
    wait_until(lambda: cluster.nats.stream_leader("TPS_READINGS") not in (None, leader), 20,
               "a new leader of the readings stream")
    wait_until(lambda: all(caught_up(procs[name]) and hearing(procs[name])
                           for name in ingest), 30,
               "the ingest processes to publish and hear heartbeats again")

    # kill -9 of an ingest process: its feeds are read again within TTL + 5 s.
    wait_until(lambda: all(owners(api).get(s) for s in streams), 15, "every stream owned")
    victims = [s for s, owner in owners(api).items() if owner == "ingest-1"]
    assert victims
    kill_ns = time.time_ns()
    procs["ingest-1"].kill()

    def taken_over() -> bool:
        return all(cluster.first_emission_after(s, kill_ns) is not None for s in victims)

    took = wait_until(taken_over, TTL + 5, "the killed process's feeds to be read again")
    time.sleep(2)

    # Stop the feeds, let the survivors hand everything to JetStream and the writer.
    stop_ns = time.time_ns()
    cluster.sim.close()
    emitted = read_emit_log_by_connection(cluster.emit_log)
    expected = expected_counts(emitted, victims, kill_ns)
    def shortfall() -> dict[str, tuple[int, int]]:
        counts = {s: cluster.influx.count(cluster.db, s) for s in streams}
        return {s: (counts[s], expected[s]) for s in streams if counts[s] < expected[s]}

    if not eventually(lambda: not shortfall(), 40):
        logs = "\n".join(f"--- {name}\n" + procs[name].log()[-4000:] for name in procs)
        pytest.fail(f"readings missing in InfluxDB (stored, expected): {shortfall()}\n{logs}")
    for name in ("all", "ingest-2", "api"):
        assert procs[name].signal() == 0, procs[name].log()[-3000:]
    for stream in streams:
        check_stream(stream, emitted[stream], stored_times_values(cluster, stream),
                     kill_ns if stream in victims else None, stop_ns)
    assert took <= TTL + 5


def expected_counts(emitted: dict[str, dict[int, list[tuple[int, float]]]],
                    victims: list[str], kill_ns: int) -> dict[str, int]:
    """Readings each stream must end up with at least (the allowed tails excluded)."""
    counts = {}
    for stream, by_connection in emitted.items():
        total = 0
        for readings in by_connection.values():
            end = readings[-1][0]
            cut = end - HANDOVER_TAIL_NS
            if stream in victims and readings[0][0] < kill_ns <= end + HANDOVER_TAIL_NS:
                cut = min(cut, kill_ns - KILL_TAIL_NS)
            total += sum(1 for t, _ in readings if t < cut)
        counts[stream] = total
    return counts


def stored_times_values(cluster: Cluster, stream: str) -> list[tuple[int, float]]:
    series = cluster.influx.query(
        f"SELECT \"value\" FROM \"temperature\" WHERE \"stream\" = '{stream}'", cluster.db)
    if not series:
        return []
    values = series[0]["values"]
    assert isinstance(values, list)
    return [(int(t), float(v)) for t, v in values]


def check_stream(stream: str, by_connection: dict[int, list[tuple[int, float]]],
                 stored: list[tuple[int, float]], kill_ns: int | None, stop_ns: int) -> None:
    """One reader at a time, and each connection's readings stored exactly once."""
    connections = sorted(by_connection.values(), key=lambda readings: readings[0][0])
    for before, after in itertools.pairwise(connections):
        assert before[-1][0] < after[0][0], f"{stream}: two connections at once"
    starts = [readings[0][0] for readings in connections]
    for index, readings in enumerate(connections):
        end = starts[index + 1] if index + 1 < len(starts) else stop_ns + 10**12
        got = [v for t, v in stored if starts[index] <= t < end]
        sent = [v for _, v in readings]
        assert got == sent[: len(got)], f"{stream}: stored readings differ from those sent"
        missing = readings[len(got):]
        if not missing:
            continue
        tail_from = readings[-1][0] - HANDOVER_TAIL_NS
        if kill_ns is not None and readings[0][0] < kill_ns <= readings[-1][0] + HANDOVER_TAIL_NS:
            tail_from = min(tail_from, kill_ns - KILL_TAIL_NS)
        assert missing[0][0] >= tail_from, (
            f"{stream}: {len(missing)} readings lost, the first emitted "
            f"{(readings[-1][0] - missing[0][0]) / 1e9:.3f} s before its connection ended")
