"""Scale-out roles: what an ingest process writes, a separate api process serves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.influxdb import InfluxServer
from tests.support.service import SimulatorProcess, TpsProcess
from tests.support.wait import wait_until


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(tmp_path, interval=0.05).start()
    yield sim
    sim.close()


def test_ingest_process_writes_what_the_api_process_serves(
    tmp_path: Path, influx: InfluxServer, influx_db: str, simulator: SimulatorProcess
) -> None:
    common = {"TPS_INFLUX_URL": influx.url, "TPS_INFLUX_DB": influx_db,
              "TPS_FLUSH_INTERVAL": "0.2"}
    ingest_a = TpsProcess(tmp_path, {**common, "TPS_ROLE": "ingest",
                                     "TPS_FEEDS": f"sat-a={simulator.url('sat-a')}"}, "ingest-a")
    ingest_b = TpsProcess(tmp_path, {**common, "TPS_ROLE": "ingest",
                                     "TPS_FEEDS": f"sat-b={simulator.url('sat-b')}"}, "ingest-b")
    api = TpsProcess(tmp_path, {**common, "TPS_ROLE": "api"}, "api")
    processes = [ingest_a, ingest_b, api]
    try:
        for process in processes:
            process.start()
        values: dict[str, float] = {}

        def both_served() -> bool:
            for stream in ("sat-a", "sat-b"):
                body = api.graphql('query($s: String) { currentTemperature(stream: $s) '
                                   '{ value stream timestamp } }', {"s": stream})
                current = (body.get("data") or {}).get("currentTemperature")
                if current:
                    assert current["stream"] == stream
                    values[stream] = current["value"]
            return len(values) == 2

        try:
            wait_until(both_served, 20, what="both streams served by the api process", step=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{api.log()}") from None
        assert set(values) == {"sat-a", "sat-b"}, api.log()

        # The api process has no readers: it answers from the store the ingest processes
        # fill. After the ingest processes stop, both sides agree exactly.
        assert ingest_a.signal() == 0
        assert ingest_b.signal() == 0
        for stream in ("sat-a", "sat-b"):
            body = api.graphql('query($s: String) { temperatureStatistics(stream: $s) '
                               '{ count min max } }', {"s": stream})
            stats = body["data"]["temperatureStatistics"]
            assert stats["count"] == influx.count(influx_db, stream) > 0
        streams = api.graphql("{ streams { name } }")["data"]["streams"]
        assert {s["name"] for s in streams} >= {"sat-a", "sat-b"}
        # The ingest role serves no GraphQL; the api role no control plane.
        assert "errors" not in api.graphql("{ currentTemperature { value } }")
    finally:
        for process in processes:
            process.close()
