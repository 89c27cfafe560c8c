"""Many slow feeds: 200 feeds at 10 readings/s into a real InfluxDB.

Rows, in one run against the same simulator process and the same private ``influxd``:

- ``bare threads``: one process, one thread per feed doing a blocking websocket-client
  ``recv()`` + ``json.loads`` (the floor: what merely receiving costs in Python);
- ``tps serve``: the real service (``python -m tps serve``, spool on, default settings).

Same-run comparisons (each TPS row writes its own database of the same ``influxd``):
``--baseline-env NAME=VALUE`` (repeatable) adds a TPS row with those settings on top,
e.g. ``TPS_ROLLUPS=off``; ``--compare DIR`` adds a TPS row running the code in ``DIR``
(e.g. ``git archive main | tar -x -C DIR``) with the same settings as ours.

For each: CPU as a percentage of one core and RSS, sampled from ``/proc`` over the
measuring window after a warm-up. For TPS also zero loss: after SIGTERM, the per-stream
counts it logs as received equal what InfluxDB holds.

Usage: ``python -m bench.scale [--feeds 200] [--rate 10] [--seconds 30] [--spool off]
[--env NAME=VALUE] [--baseline-env NAME=VALUE] [--compare DIR] [--rounds N]``.
Run by hand on an otherwise quiet machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.influxdb import InfluxServer, free_port  # noqa: E402
from tests.support.service import SimulatorProcess, TpsProcess  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")

BARE = r'''
import json, sys, threading, websocket
urls = sys.argv[1:]
def run(url):
    ws = websocket.create_connection(url, header=["Sec-WebSocket-Protocol: graphql-ws"])
    ws.send(json.dumps({"type": "start", "id": "1",
                        "payload": {"query": "subscription { temperature }"}}))
    while True:
        msg = json.loads(ws.recv())
        if msg.get("type") == "data":
            float(msg["payload"]["data"]["temperature"])
for url in urls:
    threading.Thread(target=run, args=(url,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
'''


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB."""
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


def measure(pid: int, warmup: float, seconds: float) -> tuple[float, float]:
    """(CPU % of one core over the window, peak RSS MB sampled each second)."""
    time.sleep(warmup)
    start_cpu, start = cpu_seconds(pid), time.monotonic()
    peak = 0.0
    while time.monotonic() - start < seconds:
        peak = max(peak, rss_mb(pid))
        time.sleep(1)
    return 100 * (cpu_seconds(pid) - start_cpu) / (time.monotonic() - start), peak


def settings(items: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` arguments as a dict."""
    return dict(item.split("=", 1) for item in items)


def run_tps(tmp: Path, influx: InfluxServer, db: str, env: dict[str, str],
            args: argparse.Namespace) -> tuple[float, float, str]:
    """One ``tps serve`` row: (CPU %, peak RSS MB, loss check)."""
    tps = TpsProcess(tmp, {**env, "TPS_INFLUX_DB": db, "TPS_HTTP_PORT": str(free_port())},
                     f"tps-{db}")
    try:
        tps.start()
        assert tps.proc is not None
        cpu, rss = measure(tps.proc.pid, args.warmup, args.seconds)
        load = os.getloadavg()[0]
        code = tps.signal(signal.SIGTERM, timeout=60)
    finally:
        tps.close()
    finals = {name: int(n) for name, n in
              re.findall(r"Final count: stream (\S+) received (\d+) readings", tps.log())}
    stored = {name: influx.count(db, name) for name in finals}
    lost = sum(max(0, finals[n] - stored[n]) for n in finals)
    total = sum(finals.values())
    return cpu, rss, (f"exit {code}, {len(finals)} streams, {total} received, {lost} lost; "
                      f"load {load:.2f}")


def main() -> int:
    """Run the rows and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="readings/s per feed")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--spool", choices=("on", "off"), default="on")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra setting for tps serve (repeatable), e.g. TPS_ROLLUPS=off")
    parser.add_argument("--baseline-env", action="append", default=[], metavar="NAME=VALUE",
                        help="also run a tps serve row with this setting on top (repeatable)")
    parser.add_argument("--compare", type=Path, default=None, metavar="DIR",
                        help="also run a tps serve row with the code in DIR")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the tps serve rows this many times, in turn")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tps-bench-scale-"))
    influx = InfluxServer().start()
    sim = SimulatorProcess(tmp, "--keepalive", "3", interval=1 / args.rate).start()
    urls = [sim.url(f"f{i}") for i in range(args.feeds)]
    rows: list[tuple[str, float, float, str]] = []
    try:
        bare = subprocess.Popen([sys.executable, "-c", BARE, *urls], stdout=subprocess.PIPE,
                                text=True)
        assert bare.stdout is not None and bare.stdout.readline().strip() == "ready"
        cpu, rss = measure(bare.pid, args.warmup, args.seconds)
        bare.kill()
        bare.wait()
        rows.append(("bare threads (websocket-client)", cpu, rss,
                     f"load {os.getloadavg()[0]:.2f}"))

        feeds = ",".join(f"f{i}={url}" for i, url in enumerate(urls))
        env = {"TPS_FEEDS": feeds, "TPS_INFLUX_URL": influx.url,
               "TPS_LOG_LEVEL": "INFO", "TPS_SPOOL": args.spool, **settings(args.env)}
        variants: list[tuple[str, dict[str, str]]] = []
        if args.baseline_env:
            extra = settings(args.baseline_env)
            variants.append((" ".join(args.baseline_env), {**env, **extra}))
        if args.compare is not None:
            # PYTHONSAFEPATH: ``python -m`` would put this checkout before PYTHONPATH.
            variants.append(("--compare", {**env, "PYTHONPATH": str(args.compare.resolve()),
                                           "PYTHONSAFEPATH": "1"}))
        variants.append(("", env))
        index = itertools.count()
        for round_ in range(1, args.rounds + 1):
            # Rounds take the variants in turn, so a noisy minute hits one row, not one
            # variant.
            for label, row_env in variants:
                name = f"tps serve (spool {args.spool}{', ' + label if label else ''})"
                if args.rounds > 1:
                    name += f" #{round_}"
                rows.append((name, *run_tps(tmp, influx, f"scale{next(index)}", row_env,
                                            args)))
    finally:
        sim.close()
        influx.close()

    print(f"\n{args.feeds} feeds x {args.rate:g} readings/s, {args.seconds:g} s window "
          f"after {args.warmup:g} s warm-up\n")
    print(f"| {'process':<48} | {'CPU % of one core':>17} | {'peak RSS MB':>11} | "
          f"{'vs bare CPU':>11} | loss check; load (1 min) |")
    print(f"|{'-' * 50}|{'-' * 19}|{'-' * 13}|{'-' * 13}|---|")
    for name, cpu, rss, note in rows:
        ratio = cpu / rows[0][1] if rows[0][1] else float("nan")
        print(f"| {name:<48} | {cpu:>17.1f} | {rss:>11.1f} | {ratio:>10.2f}x | {note} |")
    print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
