"""End-to-end ingest: one feed at maximum rate into a real InfluxDB, spool off and on.

Rows, in one run against the same max-rate simulator and the same private ``influxd``:

- ``bare loop``: websocket-client ``recv()`` + ``json.loads`` + value extraction
  (``bench/reader.py``'s baseline: the practical limit of a websocket-client reader);
- ``pipeline, spool off`` / ``pipeline, spool on``: the real ``StreamReader`` actor (on a
  shared ``FeedPoller``, as the service runs it) whose
  sink is ``WriterHandle.submit`` (the service's composition), the real batching
  writer and ``InfluxStore``. The rate is readings written / time from the first
  reading received until InfluxDB acknowledged the last one (the reader stops after
  ``--seconds``, then the writer flushes); the count is verified in InfluxDB.

Usage: ``python bench/ingest.py [--seconds 5] [--rounds 2]``.
``TPS_BENCH_INFLUX_URL`` uses an existing InfluxDB instead of a private one.
Run by hand; the machine should be otherwise quiet.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.reader import bare_loop, start_simulator  # noqa: E402
from tests.support.influxdb import InfluxServer  # noqa: E402
from tps.actors.reader import StreamReader  # noqa: E402
from tps.actors.stats import StreamStats, WriterStats  # noqa: E402
from tps.actors.writer import WriterHandle  # noqa: E402
from tps.config.settings import FeedConfig, Settings  # noqa: E402
from tps.feeds.poller import FeedPoller  # noqa: E402
from tps.history.hot import HotTier  # noqa: E402
from tps.model import Reading  # noqa: E402
from tps.store.influx import InfluxStore  # noqa: E402


def pipeline(url: str, influx: InfluxServer, db: str, seconds: float, spool: bool,
             tmp: Path, rollups: bool = False) -> tuple[float, int, float]:
    """(readings/s end to end, readings written, seconds the final flush took).

    ``rollups``: the writer keeps rollups and feeds a hot tier, as in the ``all`` role."""
    settings = Settings(influx_url=influx.url, influx_db=db, data_dir=tmp / db, spool=spool,
                        rollups=rollups)
    stats = WriterStats()
    hot = HotTier(int(settings.hot_window * 1e9), settings.hot_max_bytes) if rollups else None
    handle = WriterHandle(settings, lambda: InfluxStore(influx.url, db), stats, hot=hot)
    handle.start()
    received = [0]
    first: list[float] = []
    lock = threading.Lock()

    def sink(batch: Sequence[Reading]) -> None:
        handle.submit(batch)
        with lock:
            if not first:
                first.append(time.perf_counter())
            received[0] += len(batch)

    feed = FeedConfig(name="bench", url=url, protocol="auto")
    poller = FeedPoller().start()  # as the service runs its readers
    ref = StreamReader.start(feed, sink, StreamStats(feed.name, feed.url, feed.protocol,
                                                     feed.query), poller=poller)
    time.sleep(seconds)
    ref.stop()
    poller.stop()
    flush_started = time.perf_counter()
    if not handle.flush(120):
        raise SystemExit(f"writer did not flush: {stats}")
    done = time.perf_counter()
    handle.stop(10)
    written = influx.count(db)
    if written != received[0]:
        raise SystemExit(f"loss: received {received[0]}, InfluxDB holds {written}")
    return written / (done - first[0]), written, done - flush_started


def main() -> int:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    external = os.environ.get("TPS_BENCH_INFLUX_URL")
    influx = InfluxServer(external).start()
    tmp = Path(tempfile.mkdtemp(prefix="tps-bench-ingest-"))
    proc, url = start_simulator()
    results: dict[str, list[float]] = {"bare": [], "off": [], "on": []}
    details: list[str] = []
    try:
        for round_ in range(args.rounds):
            results["bare"].append(bare_loop(url, "auto", args.seconds, True))
            for key, spool in (("off", False), ("on", True)):
                rate, written, lag = pipeline(url, influx, f"bench_{key}_{round_}",
                                              args.seconds, spool, tmp)
                results[key].append(rate)
                details.append(f"round {round_} spool {key}: {written} written, verified "
                               f"by count; final flush {lag:.2f} s")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if not external:
            influx.close()
        shutil.rmtree(tmp, ignore_errors=True)
    best = {key: max(rates) for key, rates in results.items()}
    print(f"\nOne feed at max rate into InfluxDB, {args.rounds} rounds of {args.seconds:g} s "
          "(best round shown)\n")
    print(f"{'variant':<52} {'readings/s':>12} {'vs bare':>8}")
    for label, key in (("bare websocket-client receive-and-parse loop", "bare"),
                       ("pipeline (reader -> writer -> InfluxDB), spool off", "off"),
                       ("pipeline (reader -> writer -> InfluxDB), spool on", "on")):
        print(f"{label:<52} {best[key]:>12,.0f} {best[key] / best['bare']:>7.2f}x")
    print(f"\nspool on / spool off: {best['on'] / best['off']:.2f}  (target >= 0.85)")
    print("targets: pipeline >= 0.7x bare and >= 30,000 readings/s")
    print("\n".join(details))
    print("all rounds:", {k: [round(r) for r in v] for k, v in results.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
