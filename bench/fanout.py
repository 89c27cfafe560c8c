"""Subscriber fan-out: readings delivered per second to N subscribers, and latency.

Run by hand from the repository root::

    python -m bench.fanout [--subscribers 1,100,500] [--rate 10] [--duration 5]

For each N, TPS's /graphql route runs on one IO-loop thread in this process with a
live hub; N ``graphql-transport-ws`` subscribers run in a separate process
(``tests/support/ws_load.py``, the ``websockets`` library). Readings are published to
the hub at ``--rate`` per second, as a reader's sink does. Reported: messages
delivered per second (N x rate when nobody falls behind), arrival-to-delivery latency
p50/p99 as seen by the clients (reading time to client receipt; includes the client
process's own parsing), and the server's fan-out time per reading on the IO loop.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support.graphql_server import ApiServer, make_context
from tests.support.influxdb import InfluxServer, from_environment
from tests.support.wait import wait_until
from tps.live import LiveHub
from tps.model import Reading
from tps.store.influx import InfluxStore

ROOT = Path(__file__).resolve().parent.parent


def run_one(
    influx: InfluxServer, subscribers: int, rate: float, duration: float
) -> dict[str, float]:
    """One N: start a server, subscribe N clients, publish, summarise."""
    db = "tps_bench_fanout"
    InfluxStore(influx.url, db).ensure_ready()
    hub = LiveHub()
    ctx = make_context(influx.url, db, hub=hub, subscriber_queue=1000)
    server = ApiServer(ctx).start()
    service = ctx.on_close[-1].__self__  # type: ignore[attr-defined]
    manager = service.subscriptions
    fanout: list[float] = []
    original = manager.dispatch

    def timed(readings: Sequence[Reading]) -> None:
        started = time.perf_counter()
        original(readings)
        fanout.append(time.perf_counter() - started)

    manager.dispatch = timed
    count = max(1, int(rate * duration))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.ws_load", "--url", server.ws_url,
         "--clients", str(subscribers), "--expect", str(count), "--stream", "fan",
         "--timeout", str(duration + 30)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        wait_until(lambda: server.call(manager.subscriber_count) == subscribers, 10)
        started = time.monotonic()
        for i in range(count):
            hub.publish([Reading("fan", time.time_ns(), float(i))])
            time.sleep(max(0.0, started + (i + 1) / rate - time.monotonic()))
        out, _ = proc.communicate(timeout=duration + 60)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()
        influx.drop_database(db)
    summary = json.loads(out.strip().splitlines()[-1])
    fanout.sort()
    return {
        "delivered_per_s": sum(summary["received"]) / elapsed,
        "complete": float(all(n == count for n in summary["received"])),
        "p50_ms": (summary["lag_p50"] or 0) * 1000,
        "p99_ms": (summary["lag_p99"] or 0) * 1000,
        "fanout_ms": fanout[len(fanout) // 2] * 1000 if fanout else 0.0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", default="1,100,500")
    parser.add_argument("--rate", type=float, default=10.0, help="readings per second")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per N")
    parser.add_argument("--influx-url", default=None)
    args = parser.parse_args(argv)
    influx = InfluxServer(args.influx_url) if args.influx_url else from_environment()
    influx.start()
    rows = []
    try:
        for n in (int(x) for x in args.subscribers.split(",")):
            rows.append((n, run_one(influx, n, args.rate, args.duration)))
    finally:
        if not args.influx_url:
            influx.close()
    print(f"\nfan-out at {args.rate:g} readings/s for {args.duration:g} s per row "
          "(clients in a separate process)\n")
    print(f"{'subscribers':>11} {'delivered/s':>12} {'all got all':>12} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'server fan-out ms/reading':>26}")
    for n, row in rows:
        print(f"{n:>11} {row['delivered_per_s']:>12.0f} {'yes' if row['complete'] else 'NO':>12}"
              f" {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['fanout_ms']:>26.2f}")


if __name__ == "__main__":
    main()
