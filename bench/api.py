"""Benchmark of /graphql against a bare Tornado handler, in the same run.

Run by hand from the repository root (needs ``wrk``: ``apt-get install -y wrk``, and
Debian's ``influxd`` or ``--influx-url``)::

    python -m bench.api [--duration 5] [--connections 32]

The server (TPS's /graphql route plus a ``/bare`` handler returning a constant JSON
body) runs on one IO-loop thread in this process; the load comes from ``wrk`` in its
own process. While it runs, an ingest thread does what the readers' sink does: it
publishes 10 readings/s to the live hub and writes them to InfluxDB once a second.
InfluxDB holds 7,200 readings in one hour (2023-07-28 13:00-14:00 UTC) for the
statistics query. Printed: requests/s, p50/p99 latency and the ratio to the bare
handler; then parse+validate versus cache hit, per request, measured in-process.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import tornado.web

from tests.support.graphql_server import ApiServer, make_context
from tests.support.influxdb import InfluxServer, from_environment
from tps.actors.query import QueryPool
from tps.api.graphql.cache import DocumentCache
from tps.api.graphql.schema import build_schema
from tps.config import Settings
from tps.live import LiveHub
from tps.model import Reading
from tps.store.influx import InfluxStore

CURRENT = "{ currentTemperature { timestamp value } }"
STATISTICS = ('{ temperatureStatistics(after: "2023-07-28T13:00:00+00:00", '
              'before: "2023-07-28T14:00:00+00:00") { min max mean count } }')
HOUR_START_NS = 1_690_549_200_000_000_000  # 2023-07-28T13:00:00Z

BARE_BODY = json.dumps({"data": {"currentTemperature": {
    "timestamp": "2023-07-28T13:00:00.000000+00:00", "value": 21.5}}})


class BareHandler(tornado.web.RequestHandler):
    """The baseline: a POST answered with a constant JSON body."""

    def post(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(BARE_BODY)


LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local query = %s
local mode = "%s"
local n = 0
request = function()
  local q = query
  if mode == "unique" then
    n = n + 1
    q = q .. " # " .. tostring(n) .. "-" .. tostring(math.random(1, 1000000000))
  elseif mode == "windows" then
    local start = string.format("13:%%02d:%%02d", math.random(0, 59), math.random(0, 59))
    q = string.gsub(query, "13:00:00", start)
  end
  return wrk.format(nil, "%s", nil, '{"query": ' .. string.format("%%q", q) .. '}')
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d\\n", summary.requests,
    summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.timeout))
end
"""


def wrk(port: int, path: str, query: str, mode: str, connections: int,
        duration: float) -> dict[str, float]:
    """Run wrk against ``path`` POSTing ``query``; req/s and latency in ms.

    ``mode``: ``same`` (one document), ``unique`` (a new document text per request,
    defeating the document cache) or ``windows`` (a random window start per request,
    so identical statistics questions rarely meet in flight).
    """
    script = LUA % (json.dumps(query), mode, path)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "-s", handle.name,
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True).stdout
    Path(handle.name).unlink()
    match = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out)
    assert match, out
    requests, micros, p50, p99, bad, timeouts = (int(g) for g in match.groups())
    return {"rps": requests / (micros / 1e6), "p50": p50 / 1000, "p99": p99 / 1000,
            "errors": bad + timeouts}


def ingest(hub: LiveHub, store: InfluxStore, stop: threading.Event) -> None:
    """10 readings/s into the hub as they arrive, flushed to InfluxDB every second."""
    batch: list[Reading] = []
    i = 0
    while not stop.wait(0.1):
        reading = Reading("live", time.time_ns(), 20.0 + (i % 50) / 10)
        i += 1
        hub.publish([reading])
        batch.append(reading)
        if len(batch) >= 10:
            store.write(batch)
            batch = []


def cache_costs(repeat: int = 2000) -> tuple[float, float]:
    """Microseconds per request for parse+validate versus a cache hit."""
    schema = build_schema().graphql_schema
    cache = DocumentCache(schema)
    started = time.perf_counter()
    for n in range(repeat):
        cache.build(f"{CURRENT} # {n}")
    uncached = (time.perf_counter() - started) / repeat * 1e6
    cache.get(CURRENT)
    started = time.perf_counter()
    for _ in range(repeat * 10):
        cache.get(CURRENT)
    cached = (time.perf_counter() - started) / (repeat * 10) * 1e6
    return uncached, cached


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--influx-url", default=None)
    args = parser.parse_args(argv)

    influx: InfluxServer = InfluxServer(args.influx_url) if args.influx_url \
        else from_environment()
    influx.start()
    db = "tps_bench_api"
    store = InfluxStore(influx.url, db)
    store.ensure_ready()
    store.write([Reading("bench", HOUR_START_NS + i * 500_000_000, 15 + (i % 100) / 10)
                 for i in range(7200)])
    hub = LiveHub()
    ttl = Settings().query_cache_ttl  # the service's default answer reuse
    ctx = make_context(influx.url, db, hub=hub, pool_size=4, answer_ttl=ttl)
    server = ApiServer(ctx, extra=[(r"/bare", BareHandler, {})]).start()
    stop = threading.Event()
    feeder = threading.Thread(target=ingest, args=(hub, InfluxStore(influx.url, db), stop),
                              daemon=True)
    feeder.start()
    time.sleep(0.5)
    gc.freeze()  # as tps.service.Service.start does once everything is up
    rows: list[tuple[str, dict[str, Any]]] = []
    try:
        c, d = args.connections, args.duration
        rows.append(("bare Tornado handler (constant JSON)",
                     wrk(server.port, "/bare", CURRENT, "same", c, d)))
        rows.append(("currentTemperature, cached document",
                     wrk(server.port, "/graphql", CURRENT, "same", c, d)))
        rows.append(("currentTemperature, new document each request",
                     wrk(server.port, "/graphql", CURRENT, "unique", c, d)))
        rows.append(("temperatureStatistics, 1 h of 7,200 readings",
                     wrk(server.port, "/graphql", STATISTICS, "same", c, d)))
        rows.append(("temperatureStatistics, random ~1 h windows",
                     wrk(server.port, "/graphql", STATISTICS, "windows", c, d)))
        rows.append(("temperatureStatistics, 1 h, concurrency 1",
                     wrk(server.port, "/graphql", STATISTICS, "same", 1, d)))
        pool = ctx.queries
        assert isinstance(pool, QueryPool)
        pool.answer_ttl = 0.0
        rows.append(("temperatureStatistics, 1 h, answer reuse off",
                     wrk(server.port, "/graphql", STATISTICS, "same", c, d)))
    finally:
        stop.set()
        feeder.join(5)
        server.stop()
        store.close()
        influx.drop_database(db)
        if not args.influx_url:
            influx.close()

    bare = rows[0][1]["rps"]
    print(f"\n/graphql at concurrency {args.connections}, {args.duration:g} s per row "
          f"(wrk -t1, separate process), ingest running, TPS_QUERY_CACHE_TTL={ttl:g}\n")
    print(f"{'request':<48} {'req/s':>8} {'vs bare':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, row in rows:
        print(f"{name:<48} {row['rps']:>8.0f} {row['rps'] / bare:>8.0%} {row['p50']:>8.2f} "
              f"{row['p99']:>8.2f} {row['errors']:>7.0f}")
    uncached, cached = cache_costs()
    print(f"\ndocument handling per request: parse+validate {uncached:.1f} us, "
          f"cache hit {cached:.2f} us ({uncached / cached:.0f}x)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
