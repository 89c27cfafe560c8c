"""The ingest pipeline end to end: real feed servers, real InfluxDB, nothing lost."""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.influxdb import InfluxServer
from tests.support.service import SimulatorProcess, TpsProcess
from tests.support.wait import wait_until
from tps.config import FeedConfig, load_settings
from tps.model import Reading
from tps.service import Service


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(tmp_path, interval=0.05).start()
    yield sim
    sim.close()


class Collector:
    """Every reading the readers handed over, as the live hub saw them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.readings: dict[str, list[Reading]] = defaultdict(list)

    def __call__(self, batch: Sequence[Reading]) -> None:
        with self.lock:
            for reading in batch:
                self.readings[reading.stream].append(reading)


def influx_values(influx: InfluxServer, db: str, stream: str) -> list[tuple[int, float]]:
    series = influx.query(f"SELECT \"value\" FROM \"temperature\" WHERE \"stream\" = '{stream}'"
                          " ORDER BY time", db)
    if not series:
        return []
    rows = series[0]["values"]
    assert isinstance(rows, list)
    return [(int(t), float(v)) for t, v in rows]


def start_service(tmp_path: Path, influx: InfluxServer, db: str,
                  feeds: tuple[FeedConfig, ...]) -> Service:
    settings = load_settings({
        "TPS_INFLUX_URL": influx.url, "TPS_INFLUX_DB": db, "TPS_HTTP_PORT": "0",
        "TPS_DATA_DIR": str(tmp_path / "data"), "TPS_FLUSH_INTERVAL": "0.2",
        "TPS_FEED_ALLOW": "127.0.0.1",
    }).with_feeds(feeds)
    service = Service(settings)
    service.start()
    return service


def received(service: Service) -> dict[str, int]:
    return {s.name: s.received for s in service.supervisor.list_streams().get(timeout=5)}


def test_three_feeds_both_protocols_every_received_reading_is_stored_identically(
    tmp_path: Path, influx: InfluxServer, influx_db: str, simulator: SimulatorProcess
) -> None:
    feeds = (
        FeedConfig("legacy", simulator.url("legacy")),  # auto: the server picks graphql-ws
        FeedConfig("modern", simulator.url("modern"), protocol="graphql-transport-ws"),
        FeedConfig("pinned", simulator.url("pinned"), protocol="graphql-ws"),
    )
    collector = Collector()
    service = start_service(tmp_path, influx, influx_db, feeds)
    assert service.hub is not None
    service.hub.subscribe(collector)
    try:
        time.sleep(10)  # ten seconds of ingest
        statuses = {s.name: s for s in service.supervisor.list_streams().get(timeout=5)}
        assert statuses["legacy"].negotiated_protocol == "graphql-ws"
        assert statuses["modern"].negotiated_protocol == "graphql-transport-ws"
    finally:
        assert service.stop()
    final = {s.name: s.received for s in statuses.values()}
    for feed in feeds:
        stored = influx_values(influx, influx_db, feed.name)
        seen = [(r.time_ns, r.value) for r in collector.readings[feed.name]]
        # ~20 readings/s for 10 s; the exact figure depends on connect time.
        assert len(seen) >= 150, feed.name
        assert len(stored) >= final[feed.name]
        assert stored == seen, f"{feed.name}: stored differs from received"


def test_an_exception_injected_into_one_reader_restarts_it_and_others_never_pause(
    tmp_path: Path, influx: InfluxServer, influx_db: str, simulator: SimulatorProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    feeds = tuple(FeedConfig(name, simulator.url(name)) for name in ("victim", "calm1", "calm2"))
    service = start_service(tmp_path, influx, influx_db, feeds)
    caplog.set_level(logging.INFO)
    try:
        wait_until(lambda: min(received(service).values()) >= 5, 10, what="feeds to start")
        service.supervisor.inject_failure("victim").get(timeout=5)
        # Sample the calm streams every 250 ms for 3 s: they must grow every time.
        previous = received(service)
        for _ in range(12):
            time.sleep(0.25)
            now = received(service)
            for name in ("calm1", "calm2"):
                assert now[name] > previous[name], f"{name} paused"
            previous = now
        victim_before = previous["victim"]
        wait_until(lambda: received(service)["victim"] > victim_before, 5,
                   what="the victim to be restarted and read again")
    finally:
        service.stop()
    supervision = [r.getMessage() for r in caplog.records
                   if "victim" in r.getMessage() and "injected" in r.getMessage()]
    assert supervision, "the supervisor did not log the failure"


def test_sigterm_stores_every_received_reading_and_exits_0(
    tmp_path: Path, influx: InfluxServer, influx_db: str, simulator: SimulatorProcess
) -> None:
    tps = TpsProcess(tmp_path, {
        "TPS_INFLUX_URL": influx.url, "TPS_INFLUX_DB": influx_db,
        "TPS_FEEDS": f"s1={simulator.url('s1')},s2={simulator.url('s2')}",
        # A long interval: the final flush, not a timer, must write the last batch.
        "TPS_FLUSH_INTERVAL": "30",
    })
    try:
        tps.start()
        time.sleep(3)  # three seconds of ingest
        assert tps.signal(signal.SIGTERM) == 0
    finally:
        tps.close()
    finals = dict(re.findall(r"Final count: stream (\S+) received (\d+) readings", tps.log()))
    assert set(finals) == {"s1", "s2"}, tps.log()
    for stream, count in finals.items():
        assert int(count) > 20
        assert influx.count(influx_db, stream) == int(count)
