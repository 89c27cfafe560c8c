"""History end to end: real ``tps serve`` processes, real feeds, a real influxd.

- ``kill -9`` in the middle of a minute, restart: every stored rollup equals the raw
  aggregate of its bucket, and coverage is one unbroken range per stream.
- ``temperatureStatistics`` through GraphQL (variables, both roles) equals a raw scan
  for random windows spanning the restart, and ``temperatureSeries`` equals InfluxQL's
  ``GROUP BY time()``.
- Bad input is a GraphQL error naming the argument, never a 5xx.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.history import assert_same_series, assert_same_statistics, influxql_series
from tests.support.influxdb import InfluxServer
from tests.support.service import SimulatorProcess, TpsProcess
from tests.support.wait import wait_until
from tps.history.buckets import HOUR, MINUTE, SECOND
from tps.history.planner import Coverage
from tps.model import Statistics, ns_to_datetime
from tps.store import InfluxStore, SqliteStore, Store

STATISTICS = ("query($a: DateTime, $b: DateTime, $s: String) { temperatureStatistics("
              "after: $a, before: $b, stream: $s) { min max mean count } }")
SERIES = ("query($a: DateTime!, $b: DateTime!, $p: Int, $s: String) { temperatureSeries("
          "after: $a, before: $b, points: $p, stream: $s) { interval buckets { time min max "
          "mean count } } }")


def _iso(time_ns: int) -> str:
    return ns_to_datetime(time_ns).isoformat()


def _exact_rollups(store: Store, streams: list[str]) -> None:
    """Every stored rollup point equals the raw aggregate of its bucket."""
    coverage = store.coverage(streams)
    newest = store.newest_times(streams)
    for stream in streams:
        covered = Coverage((lo, until + 1) for _, lo, until in coverage[stream])
        assert len(covered.ranges) == 1, (stream, coverage[stream])
        lo, hi = covered.ranges[0]
        assert hi == newest[stream] + 1
        for width in (MINUTE, HOUR):
            raw = store.raw_aggregates(lo - HOUR, hi, width, [stream]).get(stream, [])
            rolled = store.rollups(width, lo - HOUR, hi, [stream]).get(stream, [])
            assert [s for s, _ in rolled] == [s for s, _ in raw], (stream, width)
            for (start, got), (_, want) in zip(rolled, raw, strict=True):
                assert (got.min, got.max, got.count) == (want.min, want.max, want.count), (
                    stream, width, start)
                assert abs(got.sum - want.sum) <= 1e-9 * max(1.0, abs(want.sum))


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(tmp_path, interval=0.01).start()
    yield sim
    sim.close()


def _mid_minute() -> bool:
    return 20 <= time.gmtime().tm_sec <= 40


@pytest.mark.parametrize("kind", ["influx", "sqlite"])
def test_kill_9_in_the_middle_of_a_minute_then_restart_leaves_every_rollup_exact(
        kind: str, tmp_path: Path, simulator: SimulatorProcess,
        request: pytest.FixtureRequest) -> None:
    env = {"TPS_FEEDS": f"s1={simulator.url('s1')},s2={simulator.url('s2')}",
           "TPS_FLUSH_INTERVAL": "0.1", "TPS_BATCH_SIZE": "50"}
    store: Store
    if kind == "influx":
        influx: InfluxServer = request.getfixturevalue("influx")
        db: str = request.getfixturevalue("influx_db")
        env |= {"TPS_INFLUX_URL": influx.url, "TPS_INFLUX_DB": db}
        store = InfluxStore(influx.url, db)
    else:
        store = SqliteStore(tmp_path / "tps-data" / "tps.sqlite3")
    streams = ["s1", "s2"]
    tps = TpsProcess(tmp_path, env).start()
    try:
        wait_until(lambda: sum(store.count(s) for s in streams) > 300, 30, "readings stored")
        wait_until(_mid_minute, 61, "the middle of a minute", step=0.2)
        tps.kill()
        killed_at = sum(store.count(s) for s in streams)
        tps = TpsProcess(tmp_path, env).start()  # same data dir: the spool is replayed
        wait_until(lambda: sum(store.count(s) for s in streams) > killed_at + 300, 30,
                   "readings stored after the restart")
    finally:
        tps.close()
    _exact_rollups(store, streams)
    store.close()


# --- GraphQL against both roles ------------------------------------------------------


def _post(tps: TpsProcess, query: str, variables: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(tps.url + "/graphql", body,
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _statistics(answer: dict[str, Any]) -> Statistics:
    assert "errors" not in answer, answer
    s = answer["data"]["temperatureStatistics"]
    return Statistics(s["count"], s["min"], s["max"], s["mean"])


def test_graphql_answers_equal_raw_scans_in_both_roles_across_a_restart(
        tmp_path: Path, simulator: SimulatorProcess, influx: InfluxServer,
        influx_db: str) -> None:
    env = {"TPS_INFLUX_URL": influx.url, "TPS_INFLUX_DB": influx_db,
           "TPS_QUERY_CACHE_TTL": "0", "TPS_FLUSH_INTERVAL": "0.2"}
    feeds = {"TPS_FEEDS": f"s1={simulator.url('s1')},s2={simulator.url('s2')}"}
    store = InfluxStore(influx.url, influx_db)
    tps = TpsProcess(tmp_path, {**env, **feeds}).start()
    api: TpsProcess | None = None
    try:
        wait_until(lambda: store.count() > 200, 30, "readings stored")
        tps.kill()
        tps = TpsProcess(tmp_path, {**env, **feeds}).start()
        before_restart = store.count()
        wait_until(lambda: store.count() > before_restart + 200, 30, "more readings")
        api = TpsProcess(tmp_path, {**env, "TPS_ROLE": "api"}, "tps-api").start()
        # The feed goes on: compare only windows ending before readings that may still
        # be on their way to the store (written every 0.2 s).
        newest = min(store.newest_times().values()) - 2 * SECOND
        oldest = min(store.oldest_times().values())
        rng = random.Random(5)
        for _ in range(25):
            after = rng.randint(oldest - SECOND, newest)
            before = min(newest, after + rng.choice((0, SECOND, 5 * SECOND, MINUTE,
                                                     newest - oldest)))
            after, before = after // 1000 * 1000, before // 1000 * 1000  # DateTime is in us
            stream = rng.choice(("s1", "s2", None))
            want = store.statistics(after, before, stream)
            for process in (tps, api):
                variables: dict[str, Any] = {"a": _iso(after), "b": _iso(before), "s": stream}
                got = _statistics(_post(process, STATISTICS, variables)[1])
                assert_same_statistics(got, want, (process.name, after, before, stream))
        for points in (1, 7, 60, 500):
            after, before = oldest - 3 * SECOND, newest
            after, before = after // 1000 * 1000, before // 1000 * 1000
            for process in (tps, api):
                status, answer = _post(process, SERIES, {
                    "a": _iso(after), "b": _iso(before), "p": points, "s": "s1"})
                assert status == 200 and "errors" not in answer, answer
                series = answer["data"]["temperatureSeries"]
                reference = influxql_series(influx, influx_db, after, before,
                                            series["interval"] * SECOND, "s1")
                assert_same_series([_bucket(b) for b in series["buckets"]], reference,
                                   (process.name, points))
    finally:
        tps.close()
        if api is not None:
            api.close()
        store.close()


def _bucket(raw: dict[str, Any]) -> Any:
    from datetime import datetime

    from tps.history.answers import SeriesBucket
    from tps.model import datetime_to_ns
    return SeriesBucket(datetime_to_ns(datetime.fromisoformat(raw["time"])), raw["min"],
                        raw["max"], raw["mean"], raw["count"])


BAD_INPUT: list[tuple[str, dict[str, Any], str]] = [
    (STATISTICS, {"a": "2023-07-28T14:00:00Z", "b": "2023-07-28T13:00:00Z"}, "after"),
    (STATISTICS, {"a": "1950-01-01T00:00:00Z", "b": "2050-01-01T00:00:00Z"}, "after"),
    (SERIES, {"a": "2023-07-28T14:00:00Z", "b": "2023-07-28T13:00:00Z"}, "after"),
    (SERIES, {"a": "2023-07-28T13:00:00Z", "b": "2023-07-28T14:00:00Z", "p": 0}, "points"),
    (SERIES, {"a": "2023-07-28T13:00:00Z", "b": "2023-07-28T14:00:00Z", "p": 10_001},
     "points"),
    (SERIES, {"a": "1950-01-01T00:00:00Z", "b": "2050-01-01T00:00:00Z"}, "after"),
    (SERIES, {"a": "2023-07-28T13:00:00Z", "b": "2023-07-28T14:00:00Z", "s": "a b"},
     "stream"),
    (SERIES, {"a": "yesterday", "b": "2023-07-28T14:00:00Z"}, "$a"),
]


def test_bad_history_input_is_an_error_naming_the_argument_never_a_5xx(
        tmp_path: Path, influx: InfluxServer, influx_db: str) -> None:
    tps = TpsProcess(tmp_path, {"TPS_INFLUX_URL": influx.url, "TPS_INFLUX_DB": influx_db,
                                "TPS_ROLE": "api"}).start()
    try:
        for query, variables, argument in BAD_INPUT:
            started = time.monotonic()
            status, answer = _post(tps, query, variables)
            assert status < 500, answer
            messages = " | ".join(e["message"] for e in answer.get("errors", []))
            assert argument in messages, (variables, answer)
            assert time.monotonic() - started < 5, "refused without scanning the store"
    finally:
        tps.close()
