"""Monitoring as it is deployed (issue 15, items 11 and 12).

A real Prometheus (Debian's ``prometheus``) scrapes a running TPS with the scrape
configuration the compose file ships (``monitoring/prometheus.yml``, only its target
and interval changed for a loopback test), and a PromQL query over what it scraped
returns the readings count TPS reports. The image's HEALTHCHECK command is run as
Docker runs it, against a ready TPS and against one whose store is unreachable.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.influxdb import free_port
from tests.support.service import SimulatorProcess, TpsProcess
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "monitoring-token"


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def tps(tmp_path: Path) -> Iterator[TpsProcess]:
    simulator = SimulatorProcess(tmp_path, interval=0.02).start()
    service = TpsProcess(tmp_path, {"TPS_FEEDS": f"sat1={simulator.url('sat1')}",
                                    "TPS_CONTROL_TOKEN": TOKEN})
    try:
        yield service.start()
    finally:
        service.close()
        simulator.close()


class Prometheus:
    """``prometheus`` on a free loopback port with a temporary data dir."""

    def __init__(self, tmp: Path, config: dict[str, Any]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus not found: install it with 'apt-get install -y "
                        "prometheus' (scripts/test does this)", pytrace=False)
        self.port = free_port()
        config_path = tmp / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.log = tmp / "prometheus.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={config_path}",
                 f"--storage.tsdb.path={tmp / 'prometheus-data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector PromQL ``promql`` evaluates to now ([] while not up)."""
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": promql}))
        try:
            status, body = _get(url)
        except OSError:
            return []
        if status != 200:
            return []
        result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
        return result

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _received_in_metrics(tps: TpsProcess) -> int:
    _, text = _get(tps.url + "/metrics")
    match = re.search(r'^tps_readings_received_total\{stream="sat1"\} (\S+)$', text, re.M)
    assert match, text[:2000]
    return int(float(match.group(1)))


def test_prometheus_scrapes_tps_and_promql_returns_the_readings_count(
    tps: TpsProcess, tmp_path: Path
) -> None:
    config = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    job = config["scrape_configs"][0]
    assert job["static_configs"][0]["targets"] == ["tps:8000"]
    job["static_configs"][0]["targets"] = [f"127.0.0.1:{tps.port}"]
    job["scrape_interval"] = "1s"
    wait_until(lambda: _received_in_metrics(tps) > 10, 20, what="readings at TPS")
    # Stop the feed, so the count holds still while Prometheus catches up with it.
    stopped = tps.graphql('mutation { toggleFeed(input: {status: off}) { status } }',
                          token=TOKEN)
    assert stopped["data"]["toggleFeed"]["status"] == "off", stopped
    received = _received_in_metrics(tps)
    streams = tps.graphql("{ streams { name received } }")["data"]["streams"]
    assert streams == [{"name": "sat1", "received": received}]

    prometheus = Prometheus(tmp_path, config)
    try:
        def scraped_count() -> bool:
            result = prometheus.query("sum(tps_readings_received_total)")
            return bool(result) and int(float(result[0]["value"][1])) == received

        wait_until(scraped_count, 60, what=f"Prometheus to report {received} readings")
        up = prometheus.query('up{job="tps"}')
        assert [sample["value"][1] for sample in up] == ["1"]
    finally:
        prometheus.close()


def _healthcheck_command() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.M)
    assert match, "the Dockerfile has no HEALTHCHECK CMD [...]"
    command: list[str] = json.loads(match.group(1))
    return command


def test_the_image_health_check_is_readiness_and_health_stays_liveness(
    tmp_path: Path,
) -> None:
    """Item 11: with the store unreachable /health (liveness) is 200 and degraded,
    /ready is 503, and the image's HEALTHCHECK command fails; on a ready TPS it passes."""
    command = _healthcheck_command()
    assert command[0] == "python"
    import sys

    command[0] = sys.executable
    dead_store = f"http://127.0.0.1:{free_port()}"
    broken = TpsProcess(tmp_path, {"TPS_INFLUX_URL": dead_store, "TPS_INFLUX_TIMEOUT": "0.5"},
                        name="no-store")
    ready = TpsProcess(tmp_path, {}, name="ready")
    try:
        broken.start()
        ready.start()
        status, body = _get(broken.url + "/health")
        assert status == 200 and json.loads(body)["status"] == "degraded"
        assert _get(broken.url + "/ready")[0] == 503
        for tps, expected in ((broken, 1), (ready, 0)):
            env = {"TPS_HTTP_PORT": str(tps.port), "PATH": "/usr/bin:/bin"}

            def check(tps: TpsProcess = tps, expected: int = expected,
                      env: dict[str, str] = env) -> bool:
                proc = subprocess.run(command, env=env, capture_output=True, timeout=30)
                return (proc.returncode == 0) == (expected == 0)

            wait_until(check, 20, what=f"HEALTHCHECK of {tps.name} to exit {expected}")
    finally:
        broken.close()
        ready.close()
