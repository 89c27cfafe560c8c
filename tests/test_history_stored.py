"""Kept rollup chunks (tps/history/stored.py): only buckets that can no longer change.

A stream keeps being written while questions are asked: the hour (or day) still being
filled must be read from the store each time, so answers follow the new readings, and
every answer equals a raw scan.
"""

from __future__ import annotations

import random

from tests.support.history import assert_same_statistics, irregular, write_like_the_writer
from tps.history.answers import History
from tps.history.buckets import HOUR, MINUTE, SECOND
from tps.history.rollup import RollupState
from tps.store import Store

T0 = 1_690_549_200_000_000_000  # 2023-07-28T13:00:00Z


def _ask(history: History, store: Store, rng: random.Random, lo: int, hi: int) -> None:
    windows = [(lo, hi), (lo + 61 * SECOND + 3, hi - 7)]
    windows += [(a, a + rng.randrange(0, 2 * HOUR)) for a in
                (rng.randrange(lo, hi) for _ in range(25))]
    for after, before in windows:
        for stream in ("s", None):
            got = history.statistics_finish(store, history.statistics_plan(after, before,
                                                                           stream))
            assert_same_statistics(got, store.statistics(after, before, stream),
                                   (after, before, stream))


def test_the_bucket_being_filled_is_never_kept(store: Store) -> None:
    rng = random.Random(5)
    readings = irregular("s", T0, T0 + 3 * HOUR, rng, max_step=10 * SECOND)
    first = [r for r in readings if r.time_ns < T0 + 90 * MINUTE]
    state = RollupState()
    write_like_the_writer(store, state, first)
    history = History(None)
    history.board.ttl = 0.0  # read coverage for every question: it grows below
    history.board.settle = 0.0  # and keep what it covers at once (no write is in flight)
    _ask(history, store, rng, T0 - MINUTE, T0 + 90 * MINUTE)
    assert len(history.stored) >= 1, "the first hour is covered: kept"
    write_like_the_writer(store, state, readings[len(first):])
    _ask(history, store, rng, T0 - MINUTE, T0 + 3 * HOUR + MINUTE)
    fetches = history.stored.fetches
    _ask(history, store, random.Random(5), T0, T0 + 2 * HOUR)
    assert history.stored.fetches <= fetches + 1, "covered hours are read once"
