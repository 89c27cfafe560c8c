"""Headless Chromium against a real running TPS: the dashboard and GraphiQL work.

``python -m tps serve`` runs as a subprocess, fed by ``python -m tps simulate``;
playwright-core drives Debian's chromium:

- ``tests/browser/check_dashboard.mjs`` (real InfluxDB) loads ``/``, reads a current
  value, watches the chart grow, stops a stream with its button, adds one, and runs the
  ``currentTemperature`` query in GraphiQL;
- ``tests/browser/check_dashboard_items.mjs`` (embedded store with three hours of
  history, plus a feed whose values the test pushes) walks the dashboard items of issues
  10, 11 and 15: ranges, statistics, the URL, zoom, CSV, gaps, limits, alarms, health,
  Remove, protocols and a 390 px screen.

Screenshots land in ``tests/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import json
import math
import os
import random
import secrets
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.controlled_feed import ControlledFeed
from tests.support.influxdb import InfluxServer
from tests.support.service import SimulatorProcess, TpsProcess
from tests.support.wait import wait_until
from tps.model import Reading
from tps.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
BROWSER_DIR = ROOT / "tests" / "browser"
SCRIPT = BROWSER_DIR / "check_dashboard.mjs"
ITEMS_SCRIPT = BROWSER_DIR / "check_dashboard_items.mjs"
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


# --- the dashboard items of issues 10, 11 and 15 --------------------------------------

SECOND = 1_000_000_000
HISTORY_S = 3 * 3600
"""Stored history before TPS starts: three hours, ending six minutes before the start (so
the live five minutes hold live readings only)."""
HISTORY_STEP_S = 5
SAT2_HOLE_S = (100 * 60, 80 * 60)
"""sat2 has no readings from 100 to 80 minutes before the start: a gap on the chart."""


def prefill_history(path: Path, now_ns: int) -> tuple[int, int]:
    """Raw readings of sat1..sat3 (a slow wave plus noise, so bands are visible), as a
    deployment without rollups left them; TPS backfills the rollups when it starts.
    Returns sat2's hole as (from, to) in ns."""
    end = now_ns - 6 * 60 * SECOND
    hole = (now_ns - SAT2_HOLE_S[0] * SECOND, now_ns - SAT2_HOLE_S[1] * SECOND)
    rng = random.Random(10)
    readings: list[Reading] = []
    for i, stream in enumerate(STREAMS):
        t = end - HISTORY_S * SECOND
        while t < end:
            if not (stream == "sat2" and hole[0] <= t <= hole[1]):
                wave = 21 + 2 * math.sin(t / SECOND / 1800 + i)
                readings.append(Reading(stream, t, round(wave + rng.gauss(0, 0.4), 3)))
            t += HISTORY_STEP_S * SECOND
    path.parent.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(path)
    try:
        store.ensure_ready()
        store.write(readings)
    finally:
        store.close()
    return hole


def run_items_check(tools: BrowserTools, tps: TpsProcess, feed: ControlledFeed,
                    simulator: SimulatorProcess) -> dict[str, Any]:
    """Run the items driver; answer its asks (push feed values) until its report."""
    env = {**os.environ, "TPS_CHROMIUM": tools.chromium}
    proc = subprocess.Popen(
        [tools.node, str(ITEMS_SCRIPT), tps.url, tps.token(), str(ARTIFACTS), feed.url,
         simulator.url("sat4")],
        cwd=BROWSER_DIR, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    watchdog = threading.Timer(150, proc.kill)
    watchdog.start()
    stderr: list[str] = []
    drain = threading.Thread(target=lambda: stderr.extend(proc.stderr or ()), daemon=True)
    drain.start()
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            message = json.loads(line) if line.startswith("{") else {}
            if "ask" not in message:
                continue
            if message["ask"] == "push":
                feed.push(*message["values"])
            elif message["ask"] == "connected":
                feed.wait_connected()
            proc.stdin.write("ok\n")
            proc.stdin.flush()
        proc.wait(10)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    drain.join(5)
    assert lines, f"driver printed nothing (exit {proc.returncode}):\n{''.join(stderr)}"
    report: dict[str, Any] = json.loads(lines[-1])
    assert report["ok"], (
        f"browser check failed at {report.get('step')!r}: {report.get('error')}\n"
        f"report: {json.dumps(report, indent=1)}\nstderr: {''.join(stderr)[-2000:]}\n"
        f"tps log tail:\n{tps.log()[-3000:]}"
    )
    return report


@pytest.mark.slow
def test_dashboard_ranges_alarms_health_export_and_small_screens_in_headless_chromium(
    tools: BrowserTools, tmp_path: Path, simulator: SimulatorProcess
) -> None:
    started = time.time_ns()
    hole = prefill_history(tmp_path / "tps-data" / "tps.sqlite3", started)
    feed = ControlledFeed().start()
    feeds = ",".join(f"{name}={simulator.url(name)}" for name in STREAMS)
    tps = TpsProcess(tmp_path, {
        "TPS_FEEDS": feeds,
        "TPS_INFLUX_URL": "",  # the embedded store, prefilled above
        "TPS_CONTROL_TOKEN": secrets.token_urlsafe(24),
        "TPS_HTTP_HOST": "127.0.0.1",
        "TPS_FLUSH_INTERVAL": "0.2",
    })
    try:
        tps.start(timeout=30)
        wait_until_all_streams_receive(tps)
        report = run_items_check(tools, tps, feed, simulator)
    finally:
        tps.close()
        feed.close()

    # Issue 10: the picked range asked temperatureSeries per stream, one bucket per pixel,
    # drew a band per stream and sat2's stored hole as a gap; the statistics shown are
    # the server's for the same window; the URL reproduced the view; a drag zoomed in.
    series = report["series_6h"]
    assert series["streams"] == ["sat1", "sat2", "sat3"] and series["bands"] == 3
    assert abs(series["points"] - series["plot_width"]) <= 2
    assert any(hole[0] / SECOND <= t <= hole[1] / SECOND for t in report["sat2_gap_times"])
    shown, truth = report["stats_6h"]["shown"], report["stats_6h"]["truth"]
    assert 0 <= truth["count"] - shown["count"] < 40 and shown["min"] == truth["min"]
    assert report["round_trip"]["pressed"] == "6h" and report["round_trip"]["stream"] == "sat1"
    assert report["zoom"]["interval_after"] < report["zoom"]["interval_before"]
    assert report["csv_history"]["header"] == "stream,time,min,max,mean,count"
    assert report["csv_live"]["header"] == "stream,time,value"
    # Issue 11: limits shaded, rows coloured (and labelled) by alarm state, the panel's
    # acknowledge and shelve reached the server, a comment stayed text.
    assert {"yellowHigh", "yellowLow"} <= set(report["limit_bands"].split())
    rows = report["rows"]
    assert (rows["warning_text"], rows["critical_text"]) == ("WARNING", "CRITICAL")
    assert report["acknowledged"]["state"] == "ACKNOWLEDGED"
    assert report["shelved"]["state"] == "SHELVED"
    # Issue 15: gap for a stopped stream, protocols, health, remove, 390 px.
    assert len(report["stop_gap"]["gap_times"]) == 1
    assert report["sat4_row"]["protocol"] == "graphql-transport-ws"
    assert report["health"]["panel"]["store"]["value"] == "true"
    assert "hot1" not in report["after_remove"]
    assert report["scroll_width_live"] <= 390 and report["scroll_width_history"] <= 390
    assert report["external_requests"] == [] and report["console_errors"] == []
    for path in report["screenshots"]:
        assert Path(path).is_file() and Path(path).stat().st_size > 10_000, path
