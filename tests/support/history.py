"""Helpers for history tests: write readings the way the writer does, compare answers."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from tests.support.influxdb import InfluxServer
from tps.history.answers import SeriesBucket
from tps.history.buckets import SECOND, Aggregate, fold_sorted
from tps.history.rollup import RollupState, adopt
from tps.model import Reading, Statistics
from tps.store.base import Store


def write_like_the_writer(store: Store, state: RollupState, readings: Sequence[Reading],
                          batch_size: int = 50) -> None:
    """Adopt new streams, then write batches with their rollups and commit each."""
    for start in range(0, len(readings), batch_size):
        batch = readings[start:start + batch_size]
        adopt(store, state, state.unadopted(batch))
        pending = state.prepare(batch)
        store.write(batch, pending.write)
        state.commit(pending)


def irregular(stream: str, start: int, end: int, rng: random.Random,
              max_step: int = 20 * SECOND) -> list[Reading]:
    """Readings of ``stream`` in ``[start, end)`` at random gaps with random values."""
    out: list[Reading] = []
    t = start
    while t < end:
        out.append(Reading(stream, t, round(rng.uniform(-40.0, 60.0), rng.choice((0, 1, 3, 9)))))
        t += rng.randint(1, max_step)
    return out


def assert_same_statistics(got: Statistics, want: Statistics, context: Any = "") -> None:
    """count/min/max equal; mean within 1e-9 relative to the values' scale."""
    assert (got.count, got.min, got.max) == (want.count, want.min, want.max), context
    if want.mean is None:
        assert got.mean is None, context
    else:
        assert got.mean is not None, context
        scale = max(abs(want.min or 0.0), abs(want.max or 0.0), 1e-300)
        assert abs(got.mean - want.mean) <= 1e-9 * scale, (context, got.mean, want.mean)


def influxql_series(influx: InfluxServer, db: str, after_ns: int, before_ns: int,
                    interval_ns: int, stream: str | None) -> list[tuple[int, float, float,
                                                                          float, int]]:
    """InfluxDB's own ``MIN/MAX/MEAN/COUNT ... GROUP BY time(interval)`` over raw readings."""
    where = f"time >= {after_ns} AND time <= {before_ns}"
    if stream is not None:
        where = f"\"stream\" = '{stream}' AND {where}"
    series = influx.query(
        f'SELECT MIN("value"), MAX("value"), MEAN("value"), COUNT("value") FROM "temperature" '
        f"WHERE {where} GROUP BY time({interval_ns // SECOND}s) fill(none)", db)
    if not series:
        return []
    values = series[0]["values"]
    assert isinstance(values, list)
    return [(int(r[0]), float(r[1]), float(r[2]), float(r[3]), int(r[4])) for r in values]


def assert_same_series(got: list[SeriesBucket],
                       want: list[tuple[int, float, float, float, int]], context: Any = "") -> None:
    """Same bucket times, min, max and count; means within 1e-9 of the values' scale."""
    assert [(b.time_ns, b.min, b.max, b.count) for b in got] == \
        [(t, lo, hi, n) for t, lo, hi, _, n in want], context
    for bucket, (_, lo, hi, mean, _) in zip(got, want, strict=True):
        scale = max(abs(lo), abs(hi), 1e-300)
        assert math.isclose(bucket.mean, mean, rel_tol=0, abs_tol=1e-9 * scale), context


def assert_buckets_equal_folds(stored: dict[tuple[int, int], Aggregate],
                               times: Sequence[int], values: Sequence[float],
                               widths: Sequence[int]) -> None:
    """``stored`` ((width, start) -> aggregate) holds exactly the buckets of folding the
    readings at once, for each of ``widths`` (sums within 1e-12 relative)."""
    for width in widths:
        expected = {(width, start): agg for start, agg in fold_sorted(times, values, width)}
        got = {key: agg for key, agg in stored.items() if key[0] == width}
        assert got.keys() == expected.keys()
        for key, agg in got.items():
            want = expected[key]
            assert (agg.min, agg.max, agg.count) == (want.min, want.max, want.count)
            assert math.isclose(agg.sum, want.sum, rel_tol=1e-12, abs_tol=1e-9)
