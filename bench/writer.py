"""Writer throughput into a real InfluxDB, against a naive writer in the same run.

Rows (all into the same private ``influxd``, one database per row, verified by count):

- ``naive``: one HTTP write per reading (``InfluxStore.write([r])``) - the baseline;
- ``batching, spool off`` / ``batching, spool on``: ``WriterHandle.submit`` one reading
  at a time (as a feed delivers them) until all are acknowledged (``flush``);
- ``replay``: a spool holding N unwritten readings (an outage's worth) drained into
  InfluxDB by a fresh writer, as after a restart;
- ``submit only``: the feed-thread cost of ``submit`` with the spool off and on (no
  store involved), i.e. what the spool adds to the ingest path.

Usage: ``python bench/writer.py [--readings 200000] [--naive 2000]``.
``TPS_BENCH_INFLUX_URL`` uses an existing InfluxDB instead of a private one.
Run by hand; the machine should be otherwise quiet.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.influxdb import InfluxServer  # noqa: E402
from tps.actors.stats import WriterStats  # noqa: E402
from tps.actors.writer import WriterHandle  # noqa: E402
from tps.config.settings import Settings  # noqa: E402
from tps.ingest.spool import Spool  # noqa: E402
from tps.model import Reading  # noqa: E402
from tps.store.base import Store  # noqa: E402
from tps.store.influx import InfluxStore  # noqa: E402

T0 = 1_700_000_000_000_000_000


def readings(n: int, stream: str) -> list[Reading]:
    """``n`` readings 1 ms apart, values like a sensor's."""
    return [Reading(stream, T0 + i * 1_000_000, 20.0 + (i % 1000) / 1000) for i in range(n)]


def count(url: str, db: str) -> int:
    """Points in ``db`` according to InfluxDB."""
    server = InfluxServer(url)
    return server.count(db)


def naive(url: str, db: str, n: int) -> float:
    """Readings/s of one HTTP write per reading."""
    store = InfluxStore(url, db)
    store.ensure_ready()
    data = readings(n, "naive")
    started = time.perf_counter()
    for r in data:
        store.write([r])
    elapsed = time.perf_counter() - started
    store.close()
    assert count(url, db) == n
    return n / elapsed


def settings_for(url: str, db: str, data_dir: Path, spool: bool) -> Settings:
    """Defaults (batch 5000, flush 1 s, buffer 1M) except the store and the spool."""
    return Settings(influx_url=url, influx_db=db, data_dir=data_dir, spool=spool)


def factory(url: str, db: str) -> Callable[[], Store]:
    """Opens InfluxDB stores for the writer."""
    return lambda: InfluxStore(url, db)


def batching(url: str, db: str, n: int, spool: bool, tmp: Path) -> float:
    """Readings/s from the first submit until InfluxDB acknowledged the last."""
    data_dir = tmp / f"data-{db}"
    handle = WriterHandle(settings_for(url, db, data_dir, spool), factory(url, db),
                          WriterStats())
    handle.start()
    data = readings(n, "batched")
    started = time.perf_counter()
    for r in data:
        handle.submit([r])
    assert handle.flush(120)
    elapsed = time.perf_counter() - started
    handle.stop(10)
    assert count(url, db) == n
    return n / elapsed


def replay(url: str, db: str, n: int, tmp: Path) -> float:
    """Readings/s of draining a spool of ``n`` readings into InfluxDB at start-up."""
    data_dir = tmp / f"data-{db}"
    spool = Spool(data_dir / "spool")
    data = readings(n, "replayed")
    for i in range(0, n, 20):  # records of 20, like a feed's frames
        spool.append(data[i : i + 20])
    spool.close()
    started = time.perf_counter()
    stats = WriterStats()
    handle = WriterHandle(settings_for(url, db, data_dir, True), factory(url, db), stats)
    handle.start()
    assert handle.flush(120)
    elapsed = time.perf_counter() - started
    handle.stop(10)
    assert count(url, db) == n and stats.spool_replayed == n
    return n / elapsed


def submit_only(n: int, spool: bool, tmp: Path) -> float:
    """Readings/s of ``submit`` alone (the store is unreachable, nothing is written)."""
    settings = Settings(influx_url="http://127.0.0.1:9", data_dir=tmp / f"submit-{spool}",
                        spool=spool, buffer_limit=max(n, 1), flush_interval=3600)
    handle = WriterHandle(settings, factory("http://127.0.0.1:9", "none"), WriterStats())
    data = readings(n, "submit")
    started = time.perf_counter()
    for r in data:
        handle.submit([r])
    elapsed = time.perf_counter() - started
    handle.stop(0.1)
    return n / elapsed


def main() -> int:
    """Run every row once and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--naive", type=int, default=2_000)
    args = parser.parse_args()
    external = os.environ.get("TPS_BENCH_INFLUX_URL")
    server = InfluxServer(external).start()
    tmp = Path(tempfile.mkdtemp(prefix="tps-bench-writer-"))
    try:
        url = server.url
        rows: list[tuple[str, int, float]] = []
        naive_rate = naive(url, "bench_naive", args.naive)
        rows.append(("naive (one HTTP write per reading)", args.naive, naive_rate))
        off = batching(url, "bench_off", args.readings, False, tmp)
        rows.append(("batching writer, spool off", args.readings, off))
        on = batching(url, "bench_on", args.readings, True, tmp)
        rows.append(("batching writer, spool on", args.readings, on))
        replayed = replay(url, "bench_replay", args.readings, tmp)
        rows.append(("replay of a spool after an outage", args.readings, replayed))
        sub_off = submit_only(args.readings, False, tmp)
        rows.append(("submit only, spool off", args.readings, sub_off))
        sub_on = submit_only(args.readings, True, tmp)
        rows.append(("submit only, spool on", args.readings, sub_on))
        print(f"{'case':<40} {'readings':>9} {'readings/s':>12}")
        for name, n, rate in rows:
            print(f"{name:<40} {n:>9} {rate:>12,.0f}")
        print()
        print(f"batching (spool off) / naive: {off / naive_rate:6.1f}x   (target >= 20x)")
        print(f"batching (spool on)  / naive: {on / naive_rate:6.1f}x")
        print(f"spool on / spool off (end to end): {on / off:5.2f}   (target >= 0.85)")
        print(f"replay rate: {replayed:,.0f} readings/s   (target >= 100,000)")
    finally:
        if not external:
            server.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
