"""History at any range (issue 10): statistics and series over 30 days of one 2 Hz stream.

Run by hand from the repository root (needs ``wrk``: ``apt-get install -y wrk``, and
Debian's ``influxd``)::

    python -m bench.history [--duration 5] [--connections 32] [--days 30]
                            [--skip-ingest] [--skip-rss] [--compare DIR]

Set-up, all in this run: a private ``influxd`` is filled with ``--days`` of one stream
(``bench``) at 2 Hz ending now, written directly as raw points (as the original service
left them), and given time to compact, as weeks-old data is in a deployment (the
``[data]`` cold durations are shortened to 10 s for that; the live shard keeps taking
writes). Then ``tps simulate`` feeds ``bench`` at 2 Hz, a ``tps serve`` in the ``all``
role reads it (hot tier and rollups at their defaults) and backfills the rollups, and a
second ``tps serve`` in the ``api`` role (store only) serves the same database. Every
process runs with ``TPS_QUERY_CACHE_TTL=0``.

Load: ``wrk -t1 -c32`` in its own process. Requests send one fixed GraphQL document
with variables, so the document cache is not what is measured. A *random window* is
``[s, s + L]`` with ``s`` drawn uniformly, to the microsecond, from the stored history
(every request a new question, both ends off any bucket edge); the *last* windows end
at the request's own wall-clock second, as a dashboard's would.

``--compare DIR`` also runs the TPS rows with the code in ``DIR`` (e.g. ``git archive
main | tar -x -C DIR``), in the same run against the same InfluxDB: its ``api`` process
beside ours, its ``all`` process after ours has stopped (two writers of one stream
would write each other's rollup buckets).

References, same run, for how fast this machine is today: a bare Tornado handler that
answers a constant body (what one Tornado process serves before any GraphQL work), and
``currentTemperature`` on the ``all`` process, the first row of the issue's table; the
targets are also printed scaled by ``k`` = 3,428 / today's ``currentTemperature`` req/s
(the issue's figure for it on the machine its targets were set on).

Baseline, same run: the seed's raw-scan statement ``SELECT MIN(value), MAX(value) FROM
temperature WHERE time >= a AND time <= b`` sent straight to InfluxDB's ``/query`` for
the same windows (what answering from raw costs before any Python at all).

Also printed: the backfill's duration (from ``/health``), ingest at maximum rate with
rollups and hot tier on versus off (``bench.ingest``'s pipeline), and the RSS of ``tps
serve`` with 200 feeds x 10 Hz and the default hot window, its hot tier filled from a
store holding more than the byte budget.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.influxdb import InfluxServer, free_port  # noqa: E402
from tests.support.service import SimulatorProcess, TpsProcess  # noqa: E402
from tps.model import Reading  # noqa: E402
from tps.store.influx import InfluxStore  # noqa: E402

SECOND = 1_000_000_000
DAY_S = 86_400
DB = "history"
STREAM = "bench"
COMPACT_QUICKLY = ('cache-snapshot-write-cold-duration = "10s"\n'
                   '  compact-full-write-cold-duration = "10s"')

STATISTICS = ("query($a: DateTime, $b: DateTime) { temperatureStatistics(after: $a, before: $b, "
              'stream: "bench") { min max mean count } }')
SERIES = ("query($a: DateTime!, $b: DateTime!) { temperatureSeries(after: $a, before: $b, "
          'points: 500, stream: "bench") { interval buckets { time min max mean count } } }')
CURRENT = "{ currentTemperature { value } }"
"""The issue's reference row (the script's variables are sent too, and ignored)."""
ISSUE_CURRENT_RPS = 3_428
"""``currentTemperature`` in the issue's own table, on the machine its targets were set on."""
BARE_SERVER = """
import sys, tornado.ioloop, tornado.web
class Bare(tornado.web.RequestHandler):
    def post(self):
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish('{"data":{"temperatureStatistics":{"min":1.0,"max":2.0,"mean":1.5,'
                    '"count":2}}}')
app = tornado.web.Application([(r"/graphql", Bare)])
app.listen(int(sys.argv[1]), "127.0.0.1")
tornado.ioloop.IOLoop.current().start()
"""
"""A bare Tornado handler answering a constant statistics body: what one Tornado process
serves on this machine before any GraphQL or history work."""
RAW_SCAN = ("SELECT MIN(value), MAX(value) FROM temperature WHERE time >= %s AND "
            "time <= %s")

LUA = r"""
local mode, target, doc, db, lo, hi, length, expect = %s
local function iso(sec, micros)
  return os.date("!%%Y-%%m-%%dT%%H:%%M:%%S", sec) .. string.format(".%%06dZ", micros)
end
local function encode(s)
  return (string.gsub(s, "[^%%w%%-_%%.~]", function(c)
    return string.format("%%%%%%02X", string.byte(c)) end))
end
math.randomseed(os.time() + math.floor(os.clock() * 1000000))
request = function()
  local s, us
  if mode == "random" then
    s = math.random(lo, hi - length)
    us = math.random(0, 999999)
  else
    s = os.time() - length
    us = 0
  end
  if target == "influx" then
    local a = string.format("%%d%%06d000", s, us)
    local b = string.format("%%d%%06d000", s + length, us)
    local q = string.format(doc, a, b)
    return wrk.format("GET", "/query?db=" .. db .. "&epoch=ns&q=" .. encode(q))
  end
  local body = '{"query": ' .. string.format("%%q", doc) .. ', "variables": {"a": "' ..
    iso(s, us) .. '", "b": "' .. iso(s + length, us) .. '"}}'
  return wrk.format("POST", "/graphql", {["Content-Type"] = "application/json"}, body)
end
local failed = 0
local sample = ""
response = function(status, headers, body)
  if string.find(body, '"error', 1, true) or not string.find(body, expect, 1, true) then
    failed = failed + 1
    sample = body
  end
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d %%d\n", summary.requests,
    summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.timeout, failed))
  io.write("SAMPLE " .. string.sub(sample, 1, 300) .. "\n")
end
"""


def lua_args(*values: Any) -> str:
    """Lua literals for the script's header."""
    return ", ".join(json.dumps(v) if isinstance(v, str) else str(int(v)) for v in values)


def wrk(url: str, mode: str, target: str, doc: str, lo: int, hi: int, length: int,
        connections: int, duration: float, warmup: float = 0.0, expect: str = '"min'
        ) -> dict[str, float]:
    """One wrk run; req/s, p50 and p99 in ms, errors (HTTP, timeouts, and answers that
    carry an error or lack ``expect``). ``warmup`` seconds of the same load run first,
    unmeasured (a long-running server has read its closed rollup buckets already)."""
    if warmup > 0:
        wrk(url, mode, target, doc, lo, hi, length, connections, warmup, expect=expect)
    script = LUA % lua_args(mode, target, doc, DB, lo, hi, length, expect)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout",
             "10s", "-s", handle.name, url], capture_output=True, text=True, check=True).stdout
    finally:
        Path(handle.name).unlink()
    match = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out)
    assert match, out
    requests, micros, p50, p99, bad, timeouts, failed = (int(g) for g in match.groups())
    if failed:
        print(f"{failed} answers without a result, e.g. {out.split('SAMPLE ', 1)[1][:300]}",
              flush=True)
    return {"rps": requests / (micros / 1e6), "p50": p50 / 1000, "p99": p99 / 1000,
            "errors": bad + timeouts + failed, "load": load_average()}


def load_average() -> float:
    """The 1-minute load average now (noted beside every row: the machine is shared)."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def prefill(influx: InfluxServer, days: int, stream: str, rate: float, db: str,
            streams: int = 1) -> tuple[int, int]:
    """Raw readings of ``streams`` streams over ``days`` ending now; (first, last) ns."""
    store = InfluxStore(influx.url, db, timeout=120)
    store.ensure_ready()
    step = int(SECOND / rate)
    end = time.time_ns() // step * step
    count = int(days * DAY_S * rate)
    start = end - count * step
    names = [stream] if streams == 1 else [f"{stream}{i}" for i in range(streams)]
    started = time.monotonic()
    batch: list[Reading] = []
    for k in range(count):
        t = start + k * step
        value = 15.0 + (k % 1000) / 100
        for name in names:
            batch.append(Reading(name, t, value))
        if len(batch) >= 50_000:
            store.write(batch)
            batch = []
    store.write(batch)
    store.close()
    print(f"prefill: {count * len(names):,} readings in {time.monotonic() - started:.0f} s",
          flush=True)
    return start, end - step


def health(tps: TpsProcess) -> dict[str, Any]:
    with urllib.request.urlopen(tps.url + "/health", timeout=10) as resp:
        body: dict[str, Any] = json.load(resp)
    return body


def wait_history(tps: TpsProcess, timeout: float, hot: bool) -> dict[str, Any]:
    """Wait until the backfill is done (and the hot tier loaded); the /health history."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = health(tps).get("history") or {}
        backfill = history.get("backfill") or {}
        loaded = not hot or (history.get("hot") or {}).get("loading") == 0
        if backfill.get("state") == "done" and loaded:
            return history
        time.sleep(0.5)
    raise SystemExit(f"history not ready in {timeout} s: {health(tps).get('history')}\n"
                     f"{tps.log()[-3000:]}")


def check_answer(tps: TpsProcess, influx: InfluxServer, a_ns: int, b_ns: int) -> None:
    """One statistics answer equals the raw scan (the rows would hide GraphQL errors)."""
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(a_ns // SECOND))
    iso_b = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(b_ns // SECOND))
    body = tps.graphql(STATISTICS, {"a": iso + "Z", "b": iso_b + "Z"})
    assert "errors" not in body, body
    got = body["data"]["temperatureStatistics"]
    a_s, b_s = a_ns // SECOND * SECOND, b_ns // SECOND * SECOND
    raw = influx.query('SELECT MIN(value), MAX(value), COUNT(value) FROM temperature WHERE '
                       f"stream = '{STREAM}' AND time >= {a_s} AND time <= {b_s}", DB)
    values = raw[0]["values"]
    assert isinstance(values, list)
    want = values[0]
    assert (got["min"], got["max"], got["count"]) == (want[1], want[2], want[3]), (got, want)


def rss_mb(pid: int) -> float:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


def query_rows(args: argparse.Namespace, influx: InfluxServer, tmp: Path) -> list[str]:
    first, last = prefill(influx, args.days, STREAM, 2.0, DB)
    lo, hi = first // SECOND + 1, last // SECOND - 1
    time.sleep(25)  # let the history shards go cold and compact
    sim = SimulatorProcess(tmp, interval=0.5).start()
    env = {"TPS_INFLUX_URL": influx.url, "TPS_INFLUX_DB": DB, "TPS_QUERY_CACHE_TTL": "0",
           "TPS_LOG_LEVEL": "INFO"}
    # PYTHONSAFEPATH: ``python -m`` would put the current directory (this checkout)
    # before PYTHONPATH on sys.path.
    old = ({"PYTHONPATH": str(args.compare.resolve()), "PYTHONSAFEPATH": "1"}
           if args.compare else None)
    hour, week, month = 3600, 7 * DAY_S, args.days * DAY_S - 60
    cases = [
        ("temperatureStatistics, random 1 h window", "random", hour, STATISTICS),
        ("temperatureStatistics, random 7 d window", "random", week, STATISTICS),
        ("temperatureStatistics, the last 30 d", "last", month, STATISTICS),
        ("temperatureSeries, the last 30 d, 500 points", "last", month, SERIES),
    ]
    c, d = args.connections, args.duration
    table: list[tuple[str, str, dict[str, float]]] = []
    lines: list[str] = []
    started = time.monotonic()
    tps_all = TpsProcess(tmp, {**env, "TPS_FEEDS": f"{STREAM}={sim.url(STREAM)}"},
                         "tps-all")
    apis: dict[str, TpsProcess] = {}
    try:
        tps_all.start(timeout=60)
        history = wait_history(tps_all, 600, hot=True)
        ready = time.monotonic() - started
        lines.append(f"backfill of {args.days} d x 2 Hz ({args.days * DAY_S * 2:,} readings): "
                     f"{history['backfill']['seconds']} s (target < 60 s); hot tier loaded "
                     f"{history['hot']['bytes'] / 1e6:.0f} MB; all ready {ready:.0f} s after "
                     "start")
        apis["TPS api role"] = TpsProcess(tmp, {**env, "TPS_ROLE": "api"}, "tps-api").start()
        if old is not None:
            apis["TPS api role (--compare)"] = TpsProcess(
                tmp, {**env, **old, "TPS_ROLE": "api"}, "tps-api-old").start()
        for process in (tps_all, *apis.values()):
            check_answer(process, influx, first + 1234 * SECOND, first + 5678 * SECOND)
        reference = reference_rows(tps_all, lo, hi, c, d, args.warmup)
        for label, mode, length, doc in cases:
            if doc is STATISTICS:
                table.append((label, "InfluxDB raw scan (baseline)",
                              wrk(influx.url, mode, "influx", RAW_SCAN, lo, hi, length, c, d)))
            table.append((label, "TPS all role", wrk(tps_all.url, mode, "tps", doc, lo, hi,
                                                     length, c, d, args.warmup)))
            for name, process in apis.items():
                table.append((label, name, wrk(process.url, mode, "tps", doc, lo, hi,
                                               length, c, d, args.warmup)))
        assert tps_all.proc is not None
        lines.append(f"tps-all RSS after the rows: {rss_mb(tps_all.proc.pid):.0f} MB")
        if old is not None:
            tps_all.close()
            tps_all = TpsProcess(tmp, {**env, **old, "TPS_FEEDS": f"{STREAM}={sim.url(STREAM)}"},
                                 "tps-all-old")
            tps_all.start(timeout=60)
            wait_history(tps_all, 600, hot=True)
            check_answer(tps_all, influx, first + 1234 * SECOND, first + 5678 * SECOND)
            for label, mode, length, doc in cases:
                table.append((label, "TPS all role (--compare)",
                              wrk(tps_all.url, mode, "tps", doc, lo, hi, length, c, d,
                                  args.warmup)))
        lines += scaled_targets(reference, table)
        lines.append("")
        lines.append("| request | server | req/s | p50 ms | p99 ms | errors | load |")
        lines.append("|---|---|---|---|---|---|---|")
        for label, server, row in sorted(table, key=lambda t: [x[0] for x in cases].index(t[0])):
            lines.append(f"| {label} | {server} | {row['rps']:,.0f} | {row['p50']:.1f} | "
                         f"{row['p99']:.1f} | {row['errors']:.0f} | {row['load']:.1f} |")
        # Answer reuse: many clients asking the same question (the last hour, ending at
        # the current second) of an api process, with reuse off and at 0.25 s.
        reuse = TpsProcess(tmp, {**env, "TPS_ROLE": "api", "TPS_QUERY_CACHE_TTL": "0.25"},
                           "tps-api-reuse")
        try:
            reuse.start()
            lines.append("")
            for name, process in (("0", apis["TPS api role"]), ("0.25", reuse)):
                row = wrk(process.url, "last", "tps", STATISTICS, lo, hi, hour, c, d)
                lines.append(f"api role, TPS_QUERY_CACHE_TTL={name}, statistics of the last "
                             f"1 h (one question per second): {row['rps']:,.0f} req/s, p50 "
                             f"{row['p50']:.1f} ms, p99 {row['p99']:.1f} ms")
        finally:
            reuse.close()
    finally:
        for process in apis.values():
            process.close()
        tps_all.close()
        sim.close()
    return lines


def reference_rows(tps_all: TpsProcess, lo: int, hi: int, connections: int, duration: float,
                   warmup: float) -> dict[str, dict[str, float]]:
    """Same-run references for the machine's speed: a bare Tornado handler, and
    ``currentTemperature`` on the ``all`` process (the issue's table row)."""
    port = free_port()
    bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)])
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(url + "/graphql", b"{}"),
                                       timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        out = {"bare Tornado handler (constant body)": wrk(url, "random", "tps", STATISTICS,
                                                           lo, hi, 3600, connections, duration,
                                                           warmup)}
    finally:
        bare.terminate()
        bare.wait(timeout=10)
    out["currentTemperature (TPS all role)"] = wrk(tps_all.url, "random", "tps", CURRENT, lo,
                                                   hi, 3600, connections, duration, warmup,
                                                   expect='"value')
    return out


TARGETS = {  # row label -> (req/s target or 0, p99 target ms), TPS all role
    "temperatureStatistics, random 1 h window": (2_000, 25),
    "temperatureStatistics, random 7 d window": (1_500, 30),
    "temperatureStatistics, the last 30 d": (1_500, 30),
    "temperatureSeries, the last 30 d, 500 points": (0, 50),
}
API_P99 = 100


def scaled_targets(reference: dict[str, dict[str, float]],
                   table: list[tuple[str, str, dict[str, float]]]) -> list[str]:
    """The references, and every target scaled to this machine's speed.

    The issue's targets were set where TPS answered ``currentTemperature`` at 3,428 req/s.
    ``k`` = 3,428 / today's ``currentTemperature`` req/s: a req/s target is divided by
    ``k``, a p99 target (latency at fixed concurrency goes as 1 / throughput) multiplied.
    """
    current = reference["currentTemperature (TPS all role)"]
    k = ISSUE_CURRENT_RPS / current["rps"]
    lines = ["", "| reference (same run) | req/s | p50 ms | p99 ms | load |",
             "|---|---|---|---|---|"]
    for name, row in reference.items():
        lines.append(f"| {name} | {row['rps']:,.0f} | {row['p50']:.1f} | {row['p99']:.1f} | "
                     f"{row['load']:.1f} |")
    lines += ["", f"machine factor k = {ISSUE_CURRENT_RPS:,} / {current['rps']:,.0f} = {k:.2f} "
              "(currentTemperature in the issue's table / today)", "",
              "| request | server | req/s | p99 ms | target | target x k | met x k |",
              "|---|---|---|---|---|---|---|"]
    for label, server, row in table:
        if label not in TARGETS or "raw scan" in server or "compare" in server:
            continue
        rps, p99 = TARGETS[label] if "all role" in server else (0, API_P99)
        want = (f">= {rps:,} req/s, " if rps else "") + f"p99 <= {p99} ms"
        scaled = (f">= {rps / k:,.0f} req/s, " if rps else "") + f"p99 <= {p99 * k:.0f} ms"
        met = row["rps"] >= rps / k and row["p99"] <= p99 * k
        lines.append(f"| {label} | {server} | {row['rps']:,.0f} | {row['p99']:.1f} | {want} | "
                     f"{scaled} | {'yes' if met else 'no'} |")
    return lines


def ingest_rows(args: argparse.Namespace, influx: InfluxServer, tmp: Path) -> list[str]:
    from bench.ingest import pipeline
    from bench.reader import start_simulator
    proc, url = start_simulator()
    rates: dict[bool, list[float]] = {False: [], True: []}
    try:
        for round_ in range(args.rounds):
            for rollups in (False, True):
                rate, _, _ = pipeline(url, influx, f"ingest_{int(rollups)}_{round_}",
                                      args.ingest_seconds, True, tmp, rollups=rollups)
                rates[rollups].append(rate)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    off, on = max(rates[False]), max(rates[True])
    return ["", f"ingest at max rate, best of {args.rounds} x {args.ingest_seconds:g} s: "
            f"rollups + hot tier off {off:,.0f}/s, on {on:,.0f}/s, ratio {on / off:.2f} "
            "(target >= 0.9)", f"all rounds: {rates}"]


def rss_rows(args: argparse.Namespace, tmp: Path) -> list[str]:
    influx = InfluxServer(data_settings=COMPACT_QUICKLY).start()
    sim: SimulatorProcess | None = None
    tps: TpsProcess | None = None
    try:
        prefill(influx, args.rss_minutes / (24 * 60), "f", 10.0, "rss", streams=args.feeds)
        sim = SimulatorProcess(tmp, "--keepalive", "3", interval=0.1).start()
        feeds = ",".join(f"f{i}={sim.url(f'f{i}')}" for i in range(args.feeds))
        tps = TpsProcess(tmp, {"TPS_FEEDS": feeds, "TPS_INFLUX_URL": influx.url,
                               "TPS_INFLUX_DB": "rss", "TPS_HTTP_PORT": str(free_port())},
                         "tps-rss")
        tps.start(timeout=120)  # assigned first, so a failed start is still cleaned up
        history = wait_history(tps, 900, hot=True)
        assert tps.proc is not None
        peak = 0.0
        until = time.monotonic() + args.rss_seconds
        while time.monotonic() < until:
            peak = max(peak, rss_mb(tps.proc.pid))
            time.sleep(1)
        hot = health(tps)["history"]["hot"]
        return ["", f"{args.feeds} feeds x 10 Hz, store prefilled with {args.rss_minutes} min: "
                f"peak RSS {peak:.0f} MB over {args.rss_seconds} s after the hot tier loaded "
                f"(target <= 250 MB); hot tier {hot['bytes'] / 1e6:.0f} MB of "
                f"{hot['max_bytes'] / 1e6:.0f} MB, window {hot['window_s'] / 3600:.0f} h; "
                f"backfill {history['backfill']['seconds']} s"]
    finally:
        if tps is not None:
            tps.close()
        if sim is not None:
            sim.close()
        influx.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ingest-seconds", type=float, default=4)
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--rss-minutes", type=int, default=70)
    parser.add_argument("--rss-seconds", type=int, default=30)
    parser.add_argument("--skip-queries", action="store_true")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--warmup", type=float, default=0.0,
                        help="seconds of unmeasured load before each TPS row")
    parser.add_argument("--compare", type=Path, default=None,
                        help="also run the TPS rows with the code in this directory")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    print(f"uptime: {Path('/proc/loadavg').read_text().split()[:3]}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="tps-bench-history-"))
    lines: list[str] = []
    influx = InfluxServer(data_settings=COMPACT_QUICKLY).start()
    try:
        if not args.skip_queries:
            lines += query_rows(args, influx, tmp)
        if not args.skip_ingest:
            lines += ingest_rows(args, influx, tmp)
    finally:
        influx.close()
    if not args.skip_rss:
        lines += rss_rows(args, tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nwrk -t1 -c{args.connections}, {args.duration:g} s per row "
          f"({args.warmup:g} s warm-up per TPS row), TPS_QUERY_CACHE_TTL=0\n")
    print("\n".join(lines))
    print(f"uptime: {Path('/proc/loadavg').read_text().split()[:3]}", flush=True)


if __name__ == "__main__":
    main()
