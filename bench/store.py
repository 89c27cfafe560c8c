"""Store write throughput, with baselines measured in the same run.

Run by hand (starts a private influxd unless TPS_TEST_INFLUX_URL is set)::

    python -m bench.store [--batches 20] [--batch-size 5000] [--rounds 3]

Rows: line-protocol encoding alone; InfluxStore.write (one kept-alive connection);
the same batches encoded and posted with urllib (a new connection per batch); a
naive writer that sends each reading in its own request; SqliteStore.write. Cases
are interleaved over several rounds and the best round is shown, because the
machine is shared.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path

from tests.support.influxdb import from_environment
from tps.model import Reading
from tps.store import InfluxStore, SqliteStore
from tps.store.lineprotocol import encode_readings

logger = logging.getLogger(__name__)

T0 = 1_690_587_027_046_286_592


def batches(count: int, size: int, stream: str) -> list[list[Reading]]:
    """``count`` batches of ``size`` readings with distinct, increasing timestamps."""
    return [[Reading(stream, T0 + (b * size + i) * 1000, 20.0 + (i % 997) / 100)
             for i in range(size)] for b in range(count)]


def write_all(write: Callable[[list[Reading]], None], data: list[list[Reading]]) -> None:
    """Write every batch in order."""
    for batch in data:
        write(batch)


def rate(points: int, run: Callable[[], object]) -> float:
    """Points per second of one timed run."""
    started = time.perf_counter()
    run()
    return points / (time.perf_counter() - started)


def encode_all(data: list[list[Reading]]) -> None:
    """Encode every batch (and throw the bodies away)."""
    for batch in data:
        encode_readings(batch)


def post_batch(url: str, batch: list[Reading]) -> None:
    """Encode and send one batch with urllib: a new connection per request."""
    request = urllib.request.Request(url, data=encode_readings(batch), method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def main() -> None:
    """Measure and print the table (best of ``--rounds`` interleaved rounds per case)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--naive", type=int, default=300, help="readings for the naive row")
    args = parser.parse_args()
    n, size = args.batches, args.batch_size
    points = n * size
    server = from_environment()
    server.start()
    tmp = tempfile.TemporaryDirectory()
    best: dict[str, float] = {}
    try:
        store = InfluxStore(server.url, "bench_store")
        store.ensure_ready()
        store.write(batches(1, size, "warm-up")[0])  # the first write creates the shard
        sqlite = SqliteStore(Path(tmp.name) / "bench.sqlite3")
        sqlite.ensure_ready()
        url = f"{server.url}/write?db=bench_store&precision=ns"
        naive = batches(1, args.naive, "naive")[0]
        for round_no in range(args.rounds):
            # Fresh points for every case and round: nobody overwrites another's.
            enc, inf, url_, sql = (batches(n, size, f"{tag}-{round_no}")
                                   for tag in ("encode", "influx", "urllib", "sqlite"))
            cases: list[tuple[str, int, Callable[[], object]]] = [
                ("encode_readings (no I/O)", points,
                 partial(encode_all, enc)),
                (f"InfluxStore.write, {size}/batch (kept-alive connection)", points,
                 partial(write_all, store.write, inf)),
                (f"urllib: encode + new connection per {size}-batch", points,
                 partial(write_all, partial(post_batch, url), url_)),
                ("naive: one urllib write per reading", len(naive),
                 partial(write_all, partial(post_batch, url), [[r] for r in naive])),
                (f"SqliteStore.write, {size}/batch", points,
                 partial(write_all, sqlite.write, sql)),
            ]
            for name, count, run in cases:
                best[name] = max(best.get(name, 0.0), rate(count, run))
        store.close()
        sqlite.close()
        server.drop_database("bench_store")
    finally:
        server.close()
        tmp.cleanup()

    base = best[f"InfluxStore.write, {size}/batch (kept-alive connection)"]
    print(f"{'case (best of ' + str(args.rounds) + ' rounds)':60} {'points/s':>12} "
          f"{'vs InfluxStore':>15}")
    for name, value in best.items():
        print(f"{name:60} {value:12,.0f} {value / base:14.3g}x")


if __name__ == "__main__":
    main()
