"""Cluster mode by hand: scaling out ingest, the JetStream path's cost, take-over time.

Parts (``--part``, default all), each against its own simulator, a private ``influxd``
and, for cluster rows, a private three-node NATS JetStream cluster (R3), all on loopback:

- ``scale``: ``--feeds`` feeds (200) at ``--rate`` readings/s (10) each. Rows: single-node
  ``tps serve`` (the baseline), then cluster mode with 1, 2 and 3 ``ingest`` processes
  plus one ``writer``. Columns: CPU (% of one core) of the TPS processes and of the
  NATS servers over the window, CPU microseconds per stored reading (TPS processes
  only), and the end-to-end rate (readings that reached InfluxDB per second).
- ``maxrate``: one feed at the simulator's maximum rate: single-node (local spool ->
  InfluxDB) vs cluster (local spool -> JetStream -> writer -> InfluxDB), readings
  stored per second and the cluster/single ratio.
- ``live``: ``--live-feeds`` feeds (20) at ``--rate`` (10/s) each; one GraphQL
  ``temperature`` subscriber (all streams, ``tests/support/ws_load.py`` in its own
  process) measures, for every reading, the delay from its receipt stamp at the
  process that reads the feed to its arrival at the subscriber (one clock: loopback).
  Rows: single-node ``tps serve`` with the subscriber on that same process (the
  baseline), then cluster mode with the subscriber on an ``api`` instance while an
  ``ingest`` instance reads the feeds (reader -> spool -> JetStream R3 -> the api
  instance's push subscription -> live hub -> GraphQL). p50/p99/max and the
  cluster/single ratio; the issue's target is p99 <= 100 ms.
- ``takeover``: two ``ingest`` processes share 12 feeds; ``--kills`` times, the one
  with the most feeds is killed with SIGKILL and the time until every one of its feeds
  has a new connection at the feed server (emission log) is measured; the killed
  process is restarted and the feeds rebalanced before the next kill.

Usage: ``python bench/cluster.py [--part scale|maxrate|live|takeover] [--seconds 20]``.
Run on a quiet machine (``uptime`` first).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.scale import cpu_seconds  # noqa: E402
from tests.support.influxdb import InfluxServer  # noqa: E402
from tests.support.nats import NatsCluster  # noqa: E402
from tests.support.service import SimulatorProcess, TpsProcess  # noqa: E402
from tps.feeds.simulator import read_emit_log_by_connection  # noqa: E402


def pids(procs: list[TpsProcess]) -> list[int]:
    return [p.proc.pid for p in procs if p.proc is not None]


def cpu(pid_list: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pid_list)


def wait(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("benchmark condition not reached")
        time.sleep(0.2)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def window(tps: list[TpsProcess], others: list[int], influx: InfluxServer, db: str,
           warmup: float, seconds: float) -> tuple[float, float, float, float]:
    """(TPS CPU %, NATS CPU %, us CPU per stored reading, stored readings/s)."""
    time.sleep(warmup)
    tps_pids = pids(tps)
    c0, n0, s0, t0 = cpu(tps_pids), cpu(others), influx.count(db), time.monotonic()
    time.sleep(seconds)
    c1, n1, s1, t1 = cpu(tps_pids), cpu(others), influx.count(db), time.monotonic()
    elapsed, stored = t1 - t0, max(1, s1 - s0)
    return (100 * (c1 - c0) / elapsed, 100 * (n1 - n0) / elapsed, 1e6 * (c1 - c0) / stored,
            stored / elapsed)


def scale(args: argparse.Namespace, tmp: Path, influx: InfluxServer) -> list[list[Any]]:
    sim = SimulatorProcess(tmp, "--keepalive", "3", interval=1 / args.rate).start()
    feeds = ",".join(f"f{i}={sim.url(f'f{i}')}" for i in range(args.feeds))
    rows: list[list[Any]] = []
    try:
        single = TpsProcess(tmp, {"TPS_FEEDS": feeds, "TPS_INFLUX_URL": influx.url,
                                  "TPS_INFLUX_DB": "single"}, name="single").start()
        rows.append(["single-node tps serve", *window([single], [], influx, "single",
                                                      args.warmup, args.seconds)])
        single.signal()
        for count in (1, 2, 3):
            with NatsCluster(3) as nats:
                db = f"cluster{count}"
                common = {"TPS_NATS_URL": nats.url, "TPS_INFLUX_URL": influx.url,
                          "TPS_INFLUX_DB": db, "TPS_FEEDS": feeds}
                procs = [TpsProcess(tmp, {**common, "TPS_ROLE": "ingest",
                                          "TPS_INSTANCE": f"i{count}-{k}"}, name=f"i{count}-{k}")
                         for k in range(count)]
                procs.append(TpsProcess(tmp, {**common, "TPS_ROLE": "writer",
                                              "TPS_INSTANCE": f"w{count}"}, name=f"w{count}"))
                for proc in procs:
                    proc.start()
                nats_pids = [n.proc.pid for n in nats.nodes if n.proc is not None]
                rows.append([f"cluster: {count} ingest + 1 writer",
                             *window(procs, nats_pids, influx, db, args.warmup, args.seconds)])
                for proc in procs:
                    proc.signal()
    finally:
        sim.close()
    return rows


def maxrate(args: argparse.Namespace, tmp: Path, influx: InfluxServer) -> list[list[Any]]:
    sim = SimulatorProcess(tmp, "--max-rate", interval=0.001).start()
    feed = f"fast={sim.url('fast')}"
    rows: list[list[Any]] = []
    try:
        single = TpsProcess(tmp, {"TPS_FEEDS": feed, "TPS_INFLUX_URL": influx.url,
                                  "TPS_INFLUX_DB": "max_single"}, name="max-single").start()
        rows.append(["single-node: spool -> InfluxDB",
                     *window([single], [], influx, "max_single", 3, args.seconds)])
        single.signal()
        with NatsCluster(3) as nats:
            common = {"TPS_NATS_URL": nats.url, "TPS_INFLUX_URL": influx.url,
                      "TPS_INFLUX_DB": "max_cluster", "TPS_FEEDS": feed}
            procs = [TpsProcess(tmp, {**common, "TPS_ROLE": "ingest", "TPS_INSTANCE": "mi"},
                                name="max-ingest"),
                     TpsProcess(tmp, {**common, "TPS_ROLE": "writer", "TPS_INSTANCE": "mw"},
                                name="max-writer")]
            for proc in procs:
                proc.start()
            nats_pids = [n.proc.pid for n in nats.nodes if n.proc is not None]
            rows.append(["cluster: spool -> JetStream R3 -> writer -> InfluxDB",
                         *window(procs, nats_pids, influx, "max_cluster", 3, args.seconds)])
            for proc in procs:
                proc.signal()
    finally:
        sim.close()
    return rows


def subscriber_lags(proc: TpsProcess, expect: int, timeout: float) -> dict[str, Any]:
    """One ``temperature`` subscriber (all streams) on ``proc``, in its own process,
    until it has ``expect`` readings; its summary (lags in seconds)."""
    client = subprocess.Popen(
        [sys.executable, "-m", "tests.support.ws_load", "--url",
         proc.url.replace("http://", "ws://") + "/graphql", "--clients", "1",
         "--expect", str(expect), "--timeout", str(timeout)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert client.stdout is not None
    try:
        if client.stdout.readline().strip() != "READY":
            raise RuntimeError("the subscriber did not start")
        summary: dict[str, Any] = json.loads(client.stdout.readline())
    finally:
        client.wait(timeout + 30)
    if summary["errors"]:
        raise RuntimeError(f"subscriber errors: {summary['errors']}")
    return summary


def live(args: argparse.Namespace, tmp: Path, influx: InfluxServer) -> list[list[Any]]:
    names = [f"l{i}" for i in range(args.live_feeds)]
    sim = SimulatorProcess(tmp, "--keepalive", "3", interval=1 / args.rate).start()
    feeds = ",".join(f"{n}={sim.url(n)}" for n in names)
    expect = int(args.live_feeds * args.rate * args.seconds)
    rows: list[list[Any]] = []

    def subscribed(proc: TpsProcess) -> bool:
        data: list[dict[str, Any]] = get_json(proc.url + "/api/streams")["streams"]
        return len([s for s in data if s["state"] == "subscribed"]) == len(names)

    def measure(name: str, target: TpsProcess) -> None:
        time.sleep(args.warmup)
        summary = subscriber_lags(target, expect, args.seconds * 3 + 30)
        rows.append([name, sum(summary["received"]), 1e3 * summary["lag_p50"],
                     1e3 * summary["lag_p99"], 1e3 * summary["lag_max"]])

    try:
        single = TpsProcess(tmp, {"TPS_FEEDS": feeds, "TPS_INFLUX_URL": influx.url,
                                  "TPS_INFLUX_DB": "live_single"}, name="live-single").start()
        try:
            wait(lambda: subscribed(single), 30)
            measure("single-node: subscriber on the reading process", single)
        finally:
            single.signal()
        with NatsCluster(3) as nats:
            common = {"TPS_NATS_URL": nats.url, "TPS_INFLUX_URL": influx.url,
                      "TPS_INFLUX_DB": "live_cluster", "TPS_FEEDS": feeds}
            procs = [TpsProcess(tmp, {**common, "TPS_ROLE": role, "TPS_INSTANCE": name},
                                name=name)
                     for name, role in (("live-ingest", "ingest"), ("live-writer", "writer"),
                                        ("live-api", "api"))]
            try:
                for proc in procs:
                    proc.start()
                wait(lambda: subscribed(procs[0]), 60)
                measure("cluster: ingest instance -> JetStream R3 -> subscriber on an api "
                        "instance", procs[2])
            finally:
                for proc in procs:
                    proc.signal()
    finally:
        sim.close()
    return rows


def takeover(args: argparse.Namespace, tmp: Path) -> list[float]:
    emit_log = tmp / "takeover-emitted.log"
    sim = SimulatorProcess(tmp, "--emit-log", str(emit_log), interval=0.1).start()
    names = [f"t{i}" for i in range(12)]
    feeds = ",".join(f"{n}={sim.url(n)}" for n in names)
    times: list[float] = []
    with NatsCluster(3) as nats:
        common = {"TPS_NATS_URL": nats.url, "TPS_FEEDS": feeds,
                  "TPS_LEASE_TTL": str(args.ttl)}
        procs = {name: TpsProcess(tmp, {**common, "TPS_ROLE": "ingest", "TPS_INSTANCE": name},
                                  name=name).start() for name in ("x", "y")}

        def owners() -> dict[str, str | None]:
            try:
                data = get_json(procs["x"].url + "/api/streams")["streams"]
            except OSError:
                data = get_json(procs["y"].url + "/api/streams")["streams"]
            return {s["name"]: s["owner"] for s in data}

        try:
            for _ in range(args.kills):
                wait(lambda: sorted(list(owners().values()).count(n) for n in procs) == [6, 6],
                     60)
                victim = "x" if list(owners().values()).count("x") >= 6 else "y"
                lost = [s for s, o in owners().items() if o == victim]
                survivor = "y" if victim == "x" else "x"
                kill_ns = time.time_ns()
                procs[victim].kill()

                wait(functools.partial(retaken, emit_log, lost, kill_ns), args.ttl + 30)
                emitted = read_emit_log_by_connection(emit_log)
                first = max(min(c[0][0] for c in emitted[s].values() if c[0][0] > kill_ns)
                            for s in lost)
                times.append((first - kill_ns) / 1e9)
                print(f"kill of {victim}: its {len(lost)} feeds read again by {survivor} "
                      f"after {times[-1]:.2f} s", flush=True)
                procs[victim].start()
        finally:
            for proc in procs.values():
                proc.close()
            sim.close()
    return times


def retaken(emit_log: Path, streams: list[str], after_ns: int) -> bool:
    """True when every one of ``streams`` has a connection opened after ``after_ns``."""
    emitted = read_emit_log_by_connection(emit_log)
    return all(any(c[0][0] > after_ns for c in emitted.get(s, {}).values()) for s in streams)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("scale", "maxrate", "live", "takeover", "all"),
                        default="all")
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--live-feeds", type=int, default=20)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--ttl", type=float, default=10.0, help="TPS_LEASE_TTL (default 10)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tps-bench-cluster-"))
    influx = InfluxServer().start()
    try:
        if args.part in ("scale", "all"):
            rows = scale(args, tmp, influx)
            print(f"\n{args.feeds} feeds x {args.rate:g}/s, {args.seconds:g} s window\n")
            print("| setup | TPS CPU % | NATS CPU % | us CPU per reading | stored/s |")
            print("|---|---|---|---|---|")
            for name, tps_cpu, nats_cpu, per, rate in rows:
                print(f"| {name} | {tps_cpu:.1f} | {nats_cpu:.1f} | {per:.0f} | {rate:,.0f} |")
        if args.part in ("maxrate", "all"):
            rows = maxrate(args, tmp, influx)
            print("\none feed at maximum rate\n")
            print("| path | stored/s | vs single | TPS CPU % | NATS CPU % |")
            print("|---|---|---|---|---|")
            for name, tps_cpu, nats_cpu, _per, rate in rows:
                print(f"| {name} | {rate:,.0f} | {rate / rows[0][4]:.2f}x | {tps_cpu:.0f} | "
                      f"{nats_cpu:.0f} |")
        if args.part in ("live", "all"):
            rows = live(args, tmp, influx)
            print(f"\nreading receipt -> GraphQL subscriber, {args.live_feeds} feeds x "
                  f"{args.rate:g}/s\n")
            print("| where | readings | p50 ms | p99 ms | max ms | p99 vs single |")
            print("|---|---|---|---|---|---|")
            for name, count, p50, p99, worst in rows:
                print(f"| {name} | {count:,} | {p50:.1f} | {p99:.1f} | {worst:.1f} | "
                      f"{p99 / rows[0][3]:.2f}x |")
        if args.part in ("takeover", "all"):
            times = sorted(takeover(args, tmp))
            print(f"\ntake-over after kill -9, TPS_LEASE_TTL={args.ttl:g}, {len(times)} kills: "
                  f"p50 {statistics.median(times):.2f} s, max {max(times):.2f} s, "
                  f"min {min(times):.2f} s")
    finally:
        influx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
