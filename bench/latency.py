"""Arrival-to-queryable latency: from a reading's receipt to InfluxDB answering it.

Rows, in one run against the same private ``influxd``:

- ``direct write (baseline)``: a point written straight to ``/write`` and polled for
  the same way - the resolution of this measurement and InfluxDB's own visibility lag;
- ``TPS, flush interval X s``: the real service (in process, spool on) reading the
  simulator; each reading's arrival stamp is its time in InfluxDB, and a poller thread
  asks InfluxDB every 10 ms for points newer than the last seen one.

The issue's target: p99 at most the flush interval + 250 ms.

Usage: ``python bench/latency.py [--seconds 20] [--rate 20]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.influxdb import InfluxServer  # noqa: E402
from tps.config import FeedConfig, load_settings  # noqa: E402
from tps.feeds.simulator import Simulator, SimulatorConfig  # noqa: E402
from tps.service import Service  # noqa: E402


class Poller:
    """Polls InfluxDB for new points and records when each became visible."""

    def __init__(self, url: str, db: str) -> None:
        self.url, self.db = url, db
        self.latencies_ms: list[float] = []
        self._last = time.time_ns()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Poller:
        """Start polling."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            query = f'SELECT "value" FROM "temperature" WHERE time > {self._last}'
            params = urllib.parse.urlencode({"q": query, "db": self.db, "epoch": "ns"})
            try:
                with urllib.request.urlopen(f"{self.url}/query?{params}", timeout=5) as resp:
                    body = json.load(resp)
            except OSError:
                continue
            seen = time.time_ns()
            for series in body["results"][0].get("series", []):
                for stamp, _ in series["values"]:
                    self.latencies_ms.append((seen - int(stamp)) / 1e6)
                    self._last = max(self._last, int(stamp))


def direct(influx: InfluxServer, seconds: float, rate: float) -> list[float]:
    """Latencies of points written straight to InfluxDB, one at a time."""
    influx.query('CREATE DATABASE "direct"')
    poller = Poller(influx.url, "direct").start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = f"temperature,stream=d value=1.0 {time.time_ns()}".encode()
        request = urllib.request.Request(f"{influx.url}/write?db=direct&precision=ns", line)
        urllib.request.urlopen(request, timeout=5).close()
        time.sleep(1 / rate)
    time.sleep(0.5)
    poller.stop()
    return poller.latencies_ms


def through_tps(influx: InfluxServer, seconds: float, rate: float, flush: float,
                tmp: Path) -> list[float]:
    """Latencies of simulator readings going through the whole TPS pipeline."""
    db = f"tps_{str(flush).replace('.', '_')}"
    sim = Simulator(SimulatorConfig(port=0, interval=1 / rate)).start()
    settings = load_settings({
        "TPS_INFLUX_URL": influx.url, "TPS_INFLUX_DB": db, "TPS_HTTP_PORT": "0",
        "TPS_DATA_DIR": str(tmp / db), "TPS_FLUSH_INTERVAL": str(flush),
        "TPS_FEED_ALLOW": "127.0.0.1",  # the simulator listens on loopback
    }).with_feeds((FeedConfig("lat", sim.url("lat")),))
    service = Service(settings)
    service.start()
    time.sleep(1.5)  # connect and first flush: not part of the steady state
    poller = Poller(influx.url, db).start()
    time.sleep(seconds)
    service.stop()
    time.sleep(0.3)
    poller.stop()
    sim.stop()
    return poller.latencies_ms


def main() -> int:
    """Measure every row and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=20.0, help="readings/s")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tps-bench-latency-"))
    influx = InfluxServer().start()
    rows: list[tuple[str, list[float], float | None]] = []
    try:
        rows.append(("direct write (baseline)", direct(influx, args.seconds, args.rate), None))
        for flush in (1.0, 0.2):
            rows.append((f"TPS, flush interval {flush:g} s",
                         through_tps(influx, args.seconds, args.rate, flush, tmp),
                         flush * 1000 + 250))
    finally:
        influx.close()
    print(f"\n{args.rate:g} readings/s for {args.seconds:g} s per row\n")
    print("| path | readings | p50 ms | p99 ms | max ms | target p99 ms |")
    print("|---|---|---|---|---|---|")
    for name, lat, target in rows:
        if not lat:
            print(f"| {name} | 0 | - | - | - | - |")
            continue
        lat.sort()
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        verdict = "-"
        if target is not None:
            verdict = f"{target:.0f} ({'met' if p99 <= target else 'MISSED'})"
        print(f"| {name} | {len(lat)} | {statistics.median(lat):.1f} | {p99:.1f} | "
              f"{lat[-1]:.1f} | {verdict} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
