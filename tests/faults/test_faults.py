"""Nothing received is ever lost (issue 7): real processes, real faults.

Each test runs ``python -m tps serve`` against the simulator (``tps simulate``, which
logs every reading it emits) and a real InfluxDB, injects one fault, and compares what
InfluxDB holds with what the feed servers emitted.

The outage case is the issue's own: InfluxDB down for 60 s at 2,000 readings/s with a
memory limit of 3,000 readings, forty times below what the outage needs, so the spool,
not memory, must carry it.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.influxdb import InfluxServer
from tests.support.service import SimulatorProcess, TpsProcess
from tests.support.wait import eventually, wait_until
from tps.feeds.simulator import read_emit_log
from tps.ingest.spool import Spool, encode_record
from tps.model import Reading

pytestmark = pytest.mark.slow


def metric(tps: TpsProcess, name: str) -> float:
    """One sample of ``GET /metrics`` (Prometheus text), e.g. ``tps_spool_errors_total``."""
    with urllib.request.urlopen(tps.url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


def writer_lines(tps: TpsProcess) -> str:
    """The writer's and spool's log lines (for assertion messages)."""
    return "\n".join(line for line in tps.log().splitlines()
                     if "actors.writer" in line or "ingest.spool" in line)[-3000:]


def stored_values(influx: InfluxServer, db: str, stream: str) -> list[tuple[int, float]]:
    series = influx.query(
        f"SELECT \"value\" FROM \"temperature\" WHERE \"stream\" = '{stream}'", db)
    if not series:
        return []
    values = series[0]["values"]
    assert isinstance(values, list)
    return [(0, float(v[1])) for v in values]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[tuple[SimulatorProcess, Path]]:
    emit_log = tmp_path / "emitted.log"
    sim = SimulatorProcess(tmp_path, "--emit-log", str(emit_log), "--seed", "7",
                           interval=0.05).start()
    yield sim, emit_log
    sim.close()


def feeds(sim: SimulatorProcess, names: list[str]) -> str:
    return ",".join(f"{name}={sim.url(name)}" for name in names)


def test_kill_9_loses_no_reading_emitted_more_than_250_ms_before_the_kill(
    influx: InfluxServer, influx_db: str, tmp_path: Path,
    simulator: tuple[SimulatorProcess, Path],
) -> None:
    sim, emit_log = simulator
    names = [f"k{i}" for i in range(10)]  # 10 feeds at 20 Hz
    env = {"TPS_FEEDS": feeds(sim, names), "TPS_INFLUX_URL": influx.url,
           "TPS_INFLUX_DB": influx_db, "TPS_SPOOL": "on",
           # A long flush interval: at the kill most readings exist only in the spool.
           "TPS_FLUSH_INTERVAL": "30", "TPS_SPOOL_SYNC_INTERVAL": "0.1"}
    tps = TpsProcess(tmp_path, env)
    try:
        tps.start()
        time.sleep(4)  # four seconds of ingest, mostly only in the spool
        kill_ns = time.time_ns()
        tps.kill()
        before_restart = {name: influx.count(influx_db, name) for name in names}
        tps.start()
        emitted = read_emit_log(emit_log)
        must_have = {
            name: [v for t, v in emitted[name] if t < kill_ns - 250_000_000] for name in names
        }
        assert all(len(v) >= 50 for v in must_have.values()), must_have

        def replayed() -> bool:
            return all(influx.count(influx_db, n) >= len(must_have[n]) for n in names)

        assert eventually(replayed, 20, step=0.2), tps.log()[-3000:]
        assert tps.signal(signal.SIGTERM) == 0
    finally:
        tps.close()
    assert sum(before_restart.values()) < sum(len(v) for v in must_have.values())
    for name in names:
        stored = [v for _, v in stored_values(influx, influx_db, name)]
        # The restarted reader subscribes again and the simulator's walk starts over,
        # so the first process's readings are the stored prefix.
        assert stored[: len(must_have[name])] == must_have[name], name


def test_influxdb_outage_longer_than_memory_holds_loses_nothing_and_drains(
    tmp_path: Path, private_influx: InfluxServer,
) -> None:
    influx = private_influx
    names = [f"o{i}" for i in range(4)]
    fast = SimulatorProcess(tmp_path, "--emit-log", str(tmp_path / "fast.log"),
                            "--seed", "3", interval=0.002).start()  # 4 x 500 = 2,000/s
    env = {"TPS_FEEDS": feeds(fast, names), "TPS_INFLUX_URL": influx.url,
           "TPS_INFLUX_DB": "outage", "TPS_SPOOL": "on", "TPS_BUFFER_LIMIT": "3000",
           "TPS_INFLUX_TIMEOUT": "2", "TPS_FLUSH_INTERVAL": "0.5"}
    tps = TpsProcess(tmp_path, env)
    try:
        tps.start()
        time.sleep(2)  # ingest with the store up
        influx.stop()
        assert tps.proc is not None
        rss_start = rss_bytes(tps.proc.pid)
        peak_buffered = spool_bytes = 0.0
        peak_rss = 0
        for _ in range(60):
            time.sleep(1)
            peak_buffered = max(peak_buffered, metric(tps, "tps_writer_buffered_readings"))
            spool_bytes = max(spool_bytes, metric(tps, "tps_spool_bytes"))
            peak_rss = max(peak_rss, rss_bytes(tps.proc.pid))
        influx.start()
        time.sleep(2)  # the store back while the feeds go on
        close_ns = time.time_ns()
        fast.close()  # the feeds stop; what was on the wire at that instant may be cut
        emitted = read_emit_log(tmp_path / "fast.log")
        must_have = {n: [v for t, v in emitted[n] if t < close_ns - 250_000_000]
                     for n in names}
        total = sum(len(v) for v in must_have.values())

        def drained() -> bool:
            return all(influx.count("outage", n) >= len(must_have[n]) for n in names)

        assert eventually(drained, 30, step=0.2), (
            total, sum(influx.count("outage", n) for n in names), writer_lines(tps))
        dropped = metric(tps, "tps_readings_dropped_total")
        stored = {n: [v for _, v in stored_values(influx, "outage", n)] for n in names}
        assert tps.signal(signal.SIGTERM) == 0
    finally:
        tps.close()
        fast.close()
    assert total > 100_000  # the outage needed over thirty times the memory limit
    assert peak_buffered <= 3000 + 500  # memory holds at most the limit (+ one record)
    assert spool_bytes > 0 and dropped == 0
    assert peak_rss - rss_start < 60 << 20, (rss_start, peak_rss)
    for name in names:
        assert stored[name][: len(must_have[name])] == must_have[name], name


def test_a_torn_last_spool_record_is_reported_and_every_complete_record_replayed(
    influx: InfluxServer, influx_db: str, tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    spool = Spool(data_dir / "spool")
    complete = [Reading("torn", 1_700_000_000_000_000_000 + i, i + 0.5) for i in range(300)]
    for i in range(0, 300, 30):
        spool.append(complete[i : i + 30])
    spool.close()
    segment = sorted((data_dir / "spool").glob("*.seg"))[-1]
    with segment.open("ab") as fh:  # the crash hit in the middle of an append
        fh.write(encode_record([Reading("torn", 1, 1.0)] * 10)[:-9])
    env = {"TPS_FEEDS": "", "TPS_INFLUX_URL": influx.url, "TPS_INFLUX_DB": influx_db,
           "TPS_DATA_DIR": str(data_dir), "TPS_SPOOL": "on"}
    tps = TpsProcess(tmp_path, env)
    try:
        tps.start()
        assert eventually(lambda: influx.count(influx_db, "torn") == 300, 15, step=0.2), \
            tps.log()
        assert metric(tps, "tps_spool_truncated_total") == 1
        assert tps.signal(signal.SIGTERM) == 0
    finally:
        tps.close()
    assert "damaged record" in tps.log()


def test_disk_full_for_the_spool_keeps_tps_running_reports_it_and_recovers(
    influx: InfluxServer, influx_db: str, tmp_path: Path,
    simulator: tuple[SimulatorProcess, Path],
) -> None:
    sim, emit_log = simulator
    mount = tmp_path / "small"
    mount.mkdir()
    if os.system(f"mount -t tmpfs -o size=256k tmpfs {mount}") != 0:
        pytest.fail("cannot mount a tmpfs for the disk-full test (run the suite as root)")
    names = ["d0", "d1"]
    env = {"TPS_FEEDS": feeds(sim, names), "TPS_INFLUX_URL": influx.url,
           "TPS_INFLUX_DB": influx_db, "TPS_DATA_DIR": str(mount), "TPS_SPOOL": "on",
           "TPS_FLUSH_INTERVAL": "0.2"}
    tps = TpsProcess(tmp_path, env)
    filler = mount / "filler"
    try:
        tps.start()
        time.sleep(1)  # ingest before the disk fills
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        # Reported: the spool's own log line, and the error counter.
        assert eventually(lambda: "(disk full)" in tps.log(), 20, step=0.2), writer_lines(tps)
        assert metric(tps, "tps_spool_errors_total") > 0
        during = sum(influx.count(influx_db, n) for n in names)
        wait_until(lambda: sum(influx.count(influx_db, n) for n in names) > during, 10,
                   what="readings stored while the disk is full", step=0.2)  # still ingesting
        filler.unlink()
        assert eventually(lambda: "writable again" in tps.log(), 5, step=0.2), writer_lines(tps)
        errors = metric(tps, "tps_spool_errors_total")
        spooled = metric(tps, "tps_spool_bytes")
        # The spool works again: it takes readings (a failed spool refuses them), and the
        # syncer, which counts an error on every failed try, writes them meanwhile.
        wait_until(lambda: metric(tps, "tps_spool_bytes") > spooled + 1000, 10,
                   what="the spool to take readings again", step=0.2)
        assert metric(tps, "tps_spool_errors_total") == errors  # recovered
        stop_ns = time.time_ns()
        assert tps.signal(signal.SIGTERM) == 0
        emitted = read_emit_log(emit_log)
        for name in names:  # and nothing was lost meanwhile
            must_have = [v for t, v in emitted[name] if t < stop_ns - 250_000_000]
            stored = [v for _, v in stored_values(influx, influx_db, name)]
            assert stored[: len(must_have)] == must_have, name
    finally:
        tps.close()
        os.system(f"umount -l {mount}")
