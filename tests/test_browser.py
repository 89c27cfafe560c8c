"""Headless Chromium against a real running TPS: the dashboard and GraphiQL work.

``python -m tps serve`` runs as a subprocess on the real InfluxDB, fed by
``python -m tps simulate``; ``tests/browser/check_dashboard.mjs`` (playwright-core
driving Debian's chromium) loads ``/``, reads a current value, watches the chart grow,
stops a stream with its button, and runs the ``currentTemperature`` query in GraphiQL.
Screenshots land in ``tests/artifacts/``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.influxdb import InfluxServer
from tests.support.service import SimulatorProcess, TpsProcess
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parent.parent
BROWSER_DIR = ROOT / "tests" / "browser"
SCRIPT = BROWSER_DIR / "check_dashboard.mjs"
ARTIFACTS = ROOT / "tests" / "artifacts"
STREAMS = ("sat1", "sat2", "sat3")
ADDED = "sat4"  # added from the dashboard's form during the run


def chromium_path() -> str:
    """Debian's chromium (or ``TPS_CHROMIUM``); fails the test with the install command."""
    path = os.environ.get("TPS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(
            f"chromium not found at {path}: install it with `apt-get install -y chromium` "
            "(or point TPS_CHROMIUM at a Chromium binary)", pytrace=False,
        )
    return path


def node_path() -> str:
    """The ``node`` binary with playwright-core installed beside the driver script."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found: install Node.js 18+ (e.g. `apt-get install -y nodejs npm`)",
                    pytrace=False)
    if not (BROWSER_DIR / "node_modules" / "playwright-core" / "package.json").is_file():
        pytest.fail("playwright-core is not installed: run `npm ci --prefix tests/browser` "
                    "(it never downloads a browser; Debian's chromium is used)", pytrace=False)
    return node


def stream_list(tps: TpsProcess) -> list[dict[str, Any]]:
    """``GET /api/streams`` as a list of stream objects."""
    with urllib.request.urlopen(tps.url + "/api/streams", timeout=5) as resp:
        payload = json.load(resp)
    streams: list[dict[str, Any]] = payload["streams"] if isinstance(payload, dict) else payload
    return streams


def wait_until_all_streams_receive(tps: TpsProcess, timeout: float = 20.0) -> None:
    """Block until every configured stream has received readings."""
    seen: list[dict[str, Any]] = []

    def receiving() -> bool:
        nonlocal seen
        try:
            seen = stream_list(tps)
        except OSError:
            seen = []
        return {s["name"] for s in seen if s.get("received", 0) > 0} >= set(STREAMS)

    try:
        wait_until(receiving, timeout, what="every stream receiving", step=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {seen}\n{tps.log()[-3000:]}") from None


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[SimulatorProcess]:
    """``tps simulate``: one server, a feed per path (sat1, sat2, ...)."""
    sim = SimulatorProcess(tmp_path, interval=0.2).start()
    yield sim
    sim.close()


@pytest.fixture
def running_tps(
    tmp_path: Path, influx: InfluxServer, influx_db: str, simulator: SimulatorProcess
) -> Iterator[TpsProcess]:
    """TPS (all role, real InfluxDB) consuming three simulated satellites."""
    feeds = ",".join(f"{name}={simulator.url(name)}" for name in STREAMS)
    tps = TpsProcess(tmp_path, {
        "TPS_FEEDS": feeds,
        "TPS_INFLUX_URL": influx.url,
        "TPS_INFLUX_DB": influx_db,
        "TPS_CONTROL_TOKEN": secrets.token_urlsafe(24),
        "TPS_HTTP_HOST": "127.0.0.1",
    })
    try:
        tps.start(timeout=30)
        wait_until_all_streams_receive(tps)
        yield tps
    finally:
        tps.close()


@dataclass(frozen=True)
class BrowserTools:
    """Where node and chromium are (checked before any server starts)."""

    node: str
    chromium: str


@pytest.fixture
def tools() -> BrowserTools:
    """node + playwright-core + chromium, or a failure saying how to install them."""
    return BrowserTools(node=node_path(), chromium=chromium_path())


def run_browser_check(
    tools: BrowserTools, tps: TpsProcess, simulator: SimulatorProcess, screenshot: Path
) -> dict[str, Any]:
    """Run the node driver against ``tps``; returns its JSON report."""
    env = {**os.environ, "TPS_CHROMIUM": tools.chromium}
    completed = subprocess.run(
        [tools.node, str(SCRIPT), tps.url, tps.token(), str(screenshot), "sat1",
         f"{ADDED}={simulator.url(ADDED)}"],
        cwd=BROWSER_DIR, env=env, capture_output=True, text=True, timeout=150,
    )
    lines = completed.stdout.strip().splitlines()
    assert lines, f"driver printed nothing (exit {completed.returncode}):\n{completed.stderr}"
    report: dict[str, Any] = json.loads(lines[-1])
    assert report["ok"], (
        f"browser check failed at {report.get('step')!r}: {report.get('error')}\n"
        f"report: {json.dumps(report, indent=1)}\nstderr: {completed.stderr[-2000:]}\n"
        f"tps log tail:\n{tps.log()[-3000:]}"
    )
    return report


@pytest.mark.slow
def test_dashboard_and_graphiql_work_in_headless_chromium(
    tools: BrowserTools, running_tps: TpsProcess, simulator: SimulatorProcess
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "dashboard.png"
    report = run_browser_check(tools, running_tps, simulator, screenshot)

    # The page showed a real reading and the chart kept drawing new ones.
    assert report["stream"] == "sat1"
    assert isinstance(report["current_value"], float | int)
    assert report["points_after"] > report["points_before"] > 0
    assert report["live_status"] == "live", "the websocket subscription did not connect"
    # The stop button (token typed into the prompt) really stopped the reader ...
    assert report["state_after_stop"] == "stopped"
    assert report["token_stored"]
    assert report["state_after_start"] != "stopped"
    # ... and the server agrees: after the start click the stream runs again.
    states = {s["name"]: s["state"] for s in stream_list(running_tps)}
    assert states["sat1"] != "stopped"
    # The add form created a reader whose readings reached the page.
    assert report["added_stream"] == ADDED
    assert isinstance(report["added_value"], float | int)
    assert ADDED in states
    # GraphiQL came from TPS (HTML on /graphql) and ran the seed's first query.
    assert report["graphiql_content_type"].startswith("text/html")
    assert "currentTemperature" in report["graphiql_query"]
    assert isinstance(report["graphiql_value"], float | int)
    # Nothing was fetched from anywhere but TPS itself, and no script crashed.
    assert report["external_requests"] == []
    assert report["page_errors"] == []
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000
    assert Path(report["graphiql_screenshot"]).is_file()
