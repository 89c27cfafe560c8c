"""Cluster mode's control plane: REST and GraphQL on an ``api`` instance drive the
readers of an ``ingest`` instance through the shared registry (real processes)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.nats import NatsCluster
from tests.support.service import SimulatorProcess, TpsProcess
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow

TOKEN = "control-test-token"


def call(url: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, method=method, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        text = resp.read()
    return json.loads(text) if text else None


def streams(proc: TpsProcess) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in call(proc.url + "/api/streams")["streams"]}


@pytest.fixture
def pair(nats_server: NatsCluster, tmp_path: Path) -> Iterator[tuple[TpsProcess, TpsProcess,
                                                                      SimulatorProcess]]:
    sim = SimulatorProcess(tmp_path, interval=0.1).start()
    common = {"TPS_NATS_URL": nats_server.url, "TPS_CONTROL_TOKEN": TOKEN,
              "TPS_LEASE_TTL": "5"}
    ingest = TpsProcess(tmp_path, {**common, "TPS_ROLE": "ingest", "TPS_INSTANCE": "ing",
                                   "TPS_FEEDS": f"s0={sim.url('s0')},s1={sim.url('s1')}"},
                        name="ing")
    api = TpsProcess(tmp_path, {**common, "TPS_ROLE": "api", "TPS_INSTANCE": "api"},
                     name="api")
    try:
        ingest.start()
        api.start()
        yield ingest, api, sim
    finally:
        api.close()
        ingest.close()
        sim.close()


def test_stop_start_remove_and_add_on_the_api_instance_act_on_the_ingest_instance(
        pair: tuple[TpsProcess, TpsProcess, SimulatorProcess]) -> None:
    ingest, api, sim = pair
    wait_until(lambda: {s["owner"] for s in streams(api).values()} == {"ing"}, 15,
               "both streams read by the ingest instance")
    assert streams(api)["s0"]["state"] == "remote"
    wait_until(lambda: streams(ingest)["s0"]["state"] == "subscribed", 10, "s0 subscribed")

    stopped = call(api.url + "/api/streams/s0/stop", "POST")
    assert stopped["state"] == "stopped" and stopped["owner"] is None
    assert streams(ingest)["s0"]["state"] == "stopped"  # answered once it took effect

    call(api.url + "/api/streams/s0/start", "POST")
    wait_until(lambda: streams(ingest)["s0"]["state"] == "subscribed", 10, "s0 read again")

    call(api.url + "/api/streams/s1", "DELETE")
    assert "s1" not in streams(ingest) and "s1" not in streams(api)
    with pytest.raises(urllib.error.HTTPError) as missing:
        call(api.url + "/api/streams/s1")
    assert missing.value.code == 404

    added = call(api.url + "/api/streams", "POST", {"name": "s2", "url": sim.url("s2")})
    assert added["name"] == "s2"
    wait_until(lambda: streams(ingest).get("s2", {}).get("state") == "subscribed", 5,
               "the added stream read by the ingest instance")
    answer = api.graphql("{ streams { name owner state } }")
    assert {s["name"]: s["owner"] for s in answer["data"]["streams"]} == {"s0": "ing",
                                                                          "s2": "ing"}
    with pytest.raises(urllib.error.HTTPError) as exists:
        call(api.url + "/api/streams", "POST", {"name": "s2", "url": sim.url("s2")})
    assert exists.value.code == 409


def test_the_api_instance_answers_503_while_nats_is_down(
        pair: tuple[TpsProcess, TpsProcess, SimulatorProcess], nats_server: NatsCluster) -> None:
    _, api, sim = pair
    wait_until(lambda: urllib.request.urlopen(api.url + "/ready", timeout=5).status == 200,
               10, "ready")
    nats_server.kill(0)
    with pytest.raises(urllib.error.HTTPError) as down:
        call(api.url + "/api/streams", "POST", {"name": "s9", "url": sim.url("s9")})
    assert down.value.code == 503
    with pytest.raises(urllib.error.HTTPError) as ready:
        urllib.request.urlopen(api.url + "/ready", timeout=5)
    assert ready.value.code == 503


def test_a_stream_registered_anywhere_is_known_on_the_api_instance_before_any_reading(
        pair: tuple[TpsProcess, TpsProcess, SimulatorProcess]) -> None:
    # A stopped stream has no owner, no live reading and nothing stored: only the shared
    # registry knows it. (Subscribing to a stream just added used to end NOT_FOUND on an
    # api instance until its first reading was stored.)
    _, api, sim = pair
    call(api.url + "/api/streams", "POST", {"name": "quiet", "url": sim.url("quiet"),
                                             "started": False})
    answer = api.graphql('{ currentTemperature(stream: "quiet") { value } }')
    assert "errors" not in answer, answer
    assert answer["data"]["currentTemperature"] is None
    missing = api.graphql('{ currentTemperature(stream: "nosuch") { value } }')
    assert [e["extensions"]["code"] for e in missing["errors"]] == ["NOT_FOUND"]
