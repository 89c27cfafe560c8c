"""Reader throughput: one feed at maximum rate from the simulator.

Compares, in one run and against the same simulator process:

- ``bare loop``: websocket-client ``recv()`` + ``json.loads`` + value extraction, the
  practical limit of any reader built on websocket-client (with UTF-8 validation off,
  as the reader runs; a second row shows websocket-client's defaults);
- ``StreamReader``: the real actor with a counting sink (framing, validation,
  timestamps, batching, stats included).

Usage: ``python bench/reader.py [--seconds 3] [--rounds 2] [--protocol auto]``.
Run by hand; the machine should be otherwise quiet.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import websocket

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tps.actors.reader import StreamReader  # noqa: E402
from tps.actors.stats import StreamStats  # noqa: E402
from tps.config.settings import FeedConfig  # noqa: E402
from tps.feeds.protocol import offered_subprotocols  # noqa: E402
from tps.model import Reading  # noqa: E402

WARMUP = 0.5


def start_simulator() -> tuple[subprocess.Popen[str], str]:
    """A max-rate simulator subprocess and its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tps.feeds.simulator", "--port", "0", "--max-rate",
         "--seed", "1"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"127\.0\.0\.1:(\d+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return proc, f"ws://127.0.0.1:{match.group(1)}/graphql"


def bare_loop(url: str, protocol: str, seconds: float, skip_utf8: bool) -> float:
    """Readings/s of a plain websocket-client receive-and-parse loop."""
    offer = offered_subprotocols(protocol)
    ws = websocket.create_connection(url, timeout=5, subprotocols=offer or None,
                                     skip_utf8_validation=skip_utf8)
    chosen = ws.subprotocol
    if chosen == "graphql-ws":
        ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        ws.send(json.dumps({"id": "1", "type": "start",
                            "payload": {"query": "subscription { temperature }"}}))
    elif chosen == "graphql-transport-ws":
        ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        json.loads(ws.recv())  # connection_ack
        ws.send(json.dumps({"id": "1", "type": "subscribe",
                            "payload": {"query": "subscription { temperature }"}}))
    count = 0
    values: list[float] = []
    start = time.monotonic()
    measured_from = start + WARMUP
    end = measured_from + seconds
    counted_at = 0
    while True:
        message = json.loads(ws.recv())
        if chosen:
            if message.get("type") not in ("data", "next"):
                continue
            value = message["payload"]["data"]["temperature"]
        else:
            value = message["value"]
        values.append(value)
        count += 1
        if count & 0xFF == 0:
            now = time.monotonic()
            if counted_at == 0 and now >= measured_from:
                counted_at, measured_from = count, now
            elif counted_at and now >= end:
                break
    ws.close()
    return (count - counted_at) / (time.monotonic() - measured_from)


def actor(url: str, protocol: str, seconds: float) -> float:
    """Readings/s through a StreamReader into a counting sink."""
    counted = [0]
    lock = threading.Lock()

    def sink(batch: Sequence[Reading]) -> None:
        with lock:
            counted[0] += len(batch)

    feed = FeedConfig(name="bench", url=url, protocol=protocol)
    stats = StreamStats(feed.name, feed.url, feed.protocol, feed.query)
    ref = StreamReader.start(feed, sink, stats)
    time.sleep(WARMUP)
    before, t0 = counted[0], time.monotonic()
    time.sleep(seconds)
    after, t1 = counted[0], time.monotonic()
    ref.stop()
    if stats.rejected:
        print(f"  (reader rejected {stats.rejected}: {stats.rejected_by_reason})")
    return (after - before) / (t1 - t0)


def main() -> int:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--protocol", default="auto",
                        choices=("auto", "graphql-ws", "graphql-transport-ws", "json"))
    args = parser.parse_args()
    proc, url = start_simulator()
    results: dict[str, list[float]] = {"bare": [], "bare-defaults": [], "reader": []}
    try:
        for _ in range(args.rounds):
            results["bare"].append(bare_loop(url, args.protocol, args.seconds, True))
            results["reader"].append(actor(url, args.protocol, args.seconds))
            results["bare-defaults"].append(bare_loop(url, args.protocol, args.seconds, False))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    best = {name: max(rates) for name, rates in results.items()}
    baseline = best["bare"]
    print(f"\nOne feed at max rate, protocol {args.protocol}, {args.rounds} rounds of "
          f"{args.seconds:g} s (best round shown)\n")
    print(f"{'variant':<48} {'readings/s':>12} {'vs bare':>8}")
    rows = [
        ("bare websocket-client loop (skip_utf8_validation)", "bare"),
        ("bare websocket-client loop (library defaults)", "bare-defaults"),
        ("StreamReader actor -> counting sink", "reader"),
    ]
    for label, key in rows:
        print(f"{label:<48} {best[key]:>12,.0f} {best[key] / baseline:>7.2f}x")
    ratios = sorted(r / b for r, b in zip(results["reader"], results["bare"], strict=True))
    print(f"\nreader / bare per round (each pair measured back to back): "
          f"{', '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}")
    print("all rounds:", {k: [round(r) for r in v] for k, v in results.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
