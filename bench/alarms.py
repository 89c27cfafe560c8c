"""Alarms: what limits cost ingest, and how fast an alarm reaches people.

Sections (``--only ingest|latency`` runs one):

- **ingest**: one feed at maximum rate into a private ``influxd``, the pipeline of
  ``bench/ingest.py`` (real ``StreamReader`` on a ``FeedPoller``, ``WriterHandle``,
  batching writer, ``InfluxStore``, spool on), once with the service's sink as it is
  without limits and once with the limit checker in it (limits set, every value in
  limits - the common case), rounds interleaved; the ratio of the best rounds.
- **latency**: ``tps serve`` (a subprocess, SQLite store) reading a feed whose values
  this script controls, a GraphQL ``alarmEvents`` subscriber (graphql-transport-ws) and
  a real Alertmanager. Each sample pushes a value beyond yellowHigh, waits for the
  RAISED event, then pushes one back inside and waits for RETURNED; the latency is
  from the reading's arrival (its ``triggeredAt``: TPS stamps readings on receipt) to
  the event on the subscriber, and to the alert being listed by Alertmanager (polled
  every 10 ms, so that figure includes up to 10 ms of polling).

Usage: ``python -m bench.alarms [--seconds 4] [--rounds 3] [--samples 200]``.
Run by hand on a quiet machine (``uptime`` first).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.reader import start_simulator  # noqa: E402
from tests.support.influxdb import InfluxServer  # noqa: E402
from tps.actors.alarms import LimitsTable, checking_sink  # noqa: E402
from tps.actors.reader import StreamReader  # noqa: E402
from tps.actors.stats import StreamStats, WriterStats  # noqa: E402
from tps.actors.writer import WriterHandle  # noqa: E402
from tps.alarms.checker import LimitChecker  # noqa: E402
from tps.alarms.limits import parse_limits  # noqa: E402
from tps.config.settings import FeedConfig, Settings  # noqa: E402
from tps.feeds.poller import FeedPoller  # noqa: E402
from tps.live import LiveHub  # noqa: E402
from tps.model import Reading  # noqa: E402
from tps.store.influx import InfluxStore  # noqa: E402

LIMITS = {"yellowLow": -30, "yellowHigh": 70, "redLow": -40, "redHigh": 80,
          "deadband": 0.5, "persistence": 2, "staleAfter": 60}


class _Keeper:
    """Stands in for the keeper's actor ref: counts what the sink would tell it."""

    def __init__(self) -> None:
        self.told = 0

    def tell(self, message: object) -> None:
        self.told += 1


def _pipeline(url: str, influx: InfluxServer, db: str, seconds: float, limits: bool,
              tmp: Path) -> tuple[float, int, int, float, float]:
    """(readings/s end to end, readings written, reports told, seconds spent checking,
    this process's CPU seconds per reading)."""
    settings = Settings(influx_url=influx.url, influx_db=db, data_dir=tmp / db, spool=True)
    stats = WriterStats()
    handle = WriterHandle(settings, lambda: InfluxStore(influx.url, db), stats)
    handle.start()
    hub = LiveHub()
    table = LimitsTable()
    keeper = _Keeper()
    if limits:
        table.replace("bench", LimitChecker("bench", parse_limits(LIMITS)))
    check = checking_sink(table, keeper)  # type: ignore[arg-type]
    received = [0]
    checking = [0.0]
    first: list[float] = []
    lock = threading.Lock()
    clock = time.perf_counter

    def sink(batch: Sequence[Reading]) -> None:
        # The service's composition: writer first, then alarms, then the live hub.
        handle.submit(batch)
        if limits:
            started = clock()
            check(batch)
            checking[0] += clock() - started
        hub.publish(batch)
        with lock:
            if not first:
                first.append(time.perf_counter())
            received[0] += len(batch)

    feed = FeedConfig(name="bench", url=url, protocol="auto")
    cpu_start = time.process_time()
    poller = FeedPoller().start()
    ref = StreamReader.start(feed, sink, StreamStats(feed.name, feed.url, feed.protocol,
                                                     feed.query), poller=poller)
    time.sleep(seconds)
    ref.stop()
    poller.stop()
    if not handle.flush(120):
        raise SystemExit(f"writer did not flush: {stats}")
    done = time.perf_counter()
    cpu = time.process_time() - cpu_start
    handle.stop(10)
    written = influx.count(db)
    if written != received[0]:
        raise SystemExit(f"loss: received {received[0]}, InfluxDB holds {written}")
    return written / (done - first[0]), written, keeper.told, checking[0], cpu / written


def ingest(seconds: float, rounds: int) -> None:
    """The limits-off / limits-on table."""
    external = os.environ.get("TPS_BENCH_INFLUX_URL")
    influx = InfluxServer(external).start()
    tmp = Path(tempfile.mkdtemp(prefix="tps-bench-alarms-"))
    proc, url = start_simulator()
    rates: dict[bool, list[float]] = {False: [], True: []}
    per_reading: list[float] = []
    cpu: dict[bool, list[float]] = {False: [], True: []}
    try:
        for round_ in range(rounds):
            order = (False, True) if round_ % 2 == 0 else (True, False)
            for limits in order:
                rate, written, told, spent, cpu_per = _pipeline(
                    url, influx, f"bench_{int(limits)}_{round_}", seconds, limits, tmp)
                rates[limits].append(rate)
                cpu[limits].append(cpu_per)
                if limits:
                    per_reading.append(spent / written)
                print(f"round {round_} limits {'on ' if limits else 'off'}: {rate:,.0f} "
                      f"readings/s ({written} written, verified; {told} report(s))",
                      flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if not external:
            influx.close()
        shutil.rmtree(tmp, ignore_errors=True)
    off, on = max(rates[False]), max(rates[True])
    print(f"\nOne feed at max rate into InfluxDB, spool on, {rounds} rounds of {seconds:g} s "
          "each way (best round)\n")
    print(f"{'variant':<40} {'readings/s':>12} {'vs off':>8}")
    print(f"{'limits off':<40} {off:>12,.0f} {1:>7.2f}x")
    print(f"{'limits on (every reading checked)':<40} {on:>12,.0f} {on / off:>7.2f}x")
    print("target: limits on >= 0.95x off")
    ratios = [b / a for a, b in zip(rates[False], rates[True], strict=True)]
    print("per-round on/off:", [round(r, 3) for r in ratios],
          "median", round(statistics.median(ratios), 3))
    # The load-insensitive figure: what the check itself costs per reading (timed in
    # the sink, timer calls included), against the time one reading takes end to end.
    cpu_off, cpu_on = statistics.median(cpu[False]), statistics.median(cpu[True])
    print(f"TPS process CPU per reading (median of rounds): off {cpu_off * 1e6:.2f} us, "
          f"on {cpu_on * 1e6:.2f} us: readings per CPU second on/off "
          f"{cpu_off / cpu_on:.3f}")
    cost = statistics.median(per_reading)
    print(f"checker cost: {cost * 1e9:.0f} ns per reading (median of rounds) = "
          f"{cost * off:.2%} of the limits-off time per reading; implied ratio "
          f"{1 / (1 + cost * off):.3f}")


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def latency(samples: int) -> None:
    """Reading -> subscriber and reading -> Alertmanager, p50/p99."""
    from tests.support.alertmanager import AlertmanagerServer
    from tests.support.controlled_feed import ControlledFeed
    from tests.support.service import TpsProcess

    tmp = Path(tempfile.mkdtemp(prefix="tps-bench-alarms-"))
    feed = ControlledFeed().start()
    alertmanager = AlertmanagerServer().start()
    tps = TpsProcess(tmp, {"TPS_FEEDS": f"bench={feed.url}|json",
                           "TPS_ALERTMANAGER_URL": alertmanager.url,
                           "TPS_LOG_LEVEL": "WARNING"})
    to_subscriber: list[float] = []
    to_alertmanager: list[float] = []
    try:
        tps.start()
        _request(tps.url, tps.token(), "PUT", "/api/streams/bench/limits",
                 {"yellowHigh": 30.0, "redHigh": 40.0, "deadband": 0.5})
        feed.wait_connected()
        token = tps.token()
        events: asyncio.Queue[tuple[float, dict[str, Any]]]
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        queue_box: list[Any] = []

        async def subscribe() -> None:
            import websockets

            nonlocal events
            events = asyncio.Queue()
            queue_box.append(events)
            async with websockets.connect(
                    tps.url.replace("http", "ws") + "/graphql",
                    subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
                await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
                await ws.recv()
                query = ('subscription { alarmEvents(stream: "bench") { type alarm { id '
                         "stream severity state triggeredAt } } }")
                await ws.send(json.dumps({"id": "1", "type": "subscribe",
                                          "payload": {"query": query}}))
                loop.call_soon(ready.set)
                try:
                    async for raw in ws:
                        now = time.time()
                        message = json.loads(raw)
                        if message.get("type") == "next":
                            await events.put((now, message["payload"]["data"]["alarmEvents"]))
                except websockets.ConnectionClosed:
                    return  # TPS stopped at the end of the run

        threading.Thread(target=loop.run_until_complete, args=(subscribe(),),
                         daemon=True).start()
        assert ready.wait(20), "subscription did not start"
        time.sleep(0.5)
        feed.push(20.0)

        def next_event(kind: str) -> tuple[float, dict[str, Any]]:
            future = asyncio.run_coroutine_threadsafe(queue_box[0].get(), loop)
            arrived, event = future.result(10)
            assert event["type"] == kind, event
            return arrived, event

        def poll(condition: Callable[[], bool], timeout: float = 10) -> float:
            deadline = time.monotonic() + timeout
            while not condition():
                if time.monotonic() > deadline:
                    raise SystemExit("timed out polling Alertmanager")
                time.sleep(0.01)
            return time.time()

        for _ in range(samples):
            feed.push(31.0)
            arrived, event = next_event("RAISED")
            triggered = datetime.fromisoformat(event["alarm"]["triggeredAt"]).timestamp()
            to_subscriber.append((arrived - triggered) * 1000)
            shown = poll(lambda: bool(alertmanager.alerts()))
            to_alertmanager.append((shown - triggered) * 1000)
            feed.push(20.0)
            next_event("RETURNED")
            _request(tps.url, token, "POST", f"/api/alarms/{event['alarm']['id']}/acknowledge",
                     {"comment": "bench"})
            next_event("CLEARED")
            poll(lambda: not alertmanager.alerts())
    finally:
        tps.close()
        alertmanager.close()
        feed.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nTriggering reading -> alarm, {samples} samples\n")
    print(f"{'path':<44} {'p50 ms':>8} {'p99 ms':>8} {'target p99':>11}")
    for label, values, target in (
            ("reading -> alarmEvents subscriber", to_subscriber, "50"),
            ("reading -> listed by Alertmanager (10 ms poll)", to_alertmanager, "1,000")):
        print(f"{label:<44} {_percentile(values, 50):>8.1f} {_percentile(values, 99):>8.1f} "
              f"{target:>11}")


def _request(base: str, token: str, method: str, path: str, body: Any) -> None:
    """One authorised JSON request to TPS."""
    import urllib.request

    request = urllib.request.Request(
        base + path, json.dumps(body).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method=method)
    urllib.request.urlopen(request, timeout=10).close()


def main() -> int:
    """Run the chosen sections."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--only", choices=("ingest", "latency"))
    args = parser.parse_args()
    print("load:", os.getloadavg())
    if args.only in (None, "ingest"):
        ingest(args.seconds, args.rounds)
    if args.only in (None, "latency"):
        latency(args.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
