"""Checks that a store's rollups equal its raw readings, bucket by bucket."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from tests.support.history import assert_same_statistics
from tps.history.answers import read_coverage, to_statistics
from tps.history.buckets import HOUR, MINUTE, TIERS, Aggregate, floor_to
from tps.history.planner import plan
from tps.store.base import Store


def same_aggregate(got: Aggregate, want: Aggregate) -> bool:
    """min, max and count equal; sums within 1e-9 of the values' scale per reading."""
    scale = max(abs(want.min), abs(want.max), 1e-300) * max(want.count, 1)
    return ((got.min, got.max, got.count) == (want.min, want.max, want.count)
            and math.isclose(got.sum, want.sum, rel_tol=0, abs_tol=1e-9 * scale))


def rollup_mismatches(store: Store, streams: Sequence[str], lo: int, hi: int
                      ) -> list[str]:
    """Every bucket (1 m and 1 h) in ``[lo, hi]`` whose stored rollup differs from the
    raw aggregate of its readings, or exists on one side only."""
    problems: list[str] = []
    lo, hi = floor_to(lo, HOUR), floor_to(hi, HOUR) + HOUR - 1
    for width in TIERS:
        raw = store.raw_aggregates(lo, hi, width, list(streams))
        stored = store.rollups(width, lo, hi, list(streams))
        name = "1h" if width == HOUR else "1m"
        for stream in streams:
            want = dict(raw.get(stream, []))
            got = dict(stored.get(stream, []))
            for start in sorted(set(want) | set(got)):
                if start not in got:
                    problems.append(f"{stream} {name} {start}: no rollup (raw {want[start]})")
                elif start not in want:
                    problems.append(f"{stream} {name} {start}: rollup {got[start]} of nothing")
                elif not same_aggregate(got[start], want[start]):
                    problems.append(f"{stream} {name} {start}: rollup {got[start]} "
                                    f"!= raw {want[start]}")
    return problems


def uncovered(store: Store, streams: Sequence[str], lo: int, hi: int) -> list[str]:
    """Streams whose rollup coverage does not hold every whole minute of ``[lo, hi]``."""
    coverage = read_coverage(store)
    out = []
    for stream in streams:
        first, last = floor_to(lo, MINUTE) + MINUTE, floor_to(hi, MINUTE)
        if coverage.for_stream(stream).missing(first, last):
            out.append(stream)
    return out


def check_random_windows(store: Store, streams: Sequence[str], lo: int, hi: int,
                         rng: random.Random, count: int = 60) -> None:
    """Statistics of random windows through the planner (rollups + raw edges) equal a
    raw scan, per stream and over all streams."""
    coverage = read_coverage(store)
    for k in range(count):
        a = rng.randint(lo - MINUTE, hi + MINUTE)
        b = rng.randint(a, min(hi + MINUTE, a + rng.choice((MINUTE, 10 * MINUTE, 2 * HOUR))))
        stream = rng.choice([*streams, None])
        pieces = plan(a, b, coverage.for_stream(stream))
        got = store.aggregate(pieces, stream)
        want = store.statistics(a, b, stream)
        assert_same_statistics(to_statistics(got), want, (k, a, b, stream))
