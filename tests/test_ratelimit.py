"""RateLimitedLog: one line per kind of repeated event per interval, with a count."""

from __future__ import annotations

import logging
import threading

import pytest

from tps.ratelimit import RateLimitedLog


def test_rate_limited_log_allows_one_per_interval_and_counts_the_rest() -> None:
    log = RateLimitedLog(interval=10)
    assert log.allow("bad_value", now=0) == 0
    assert log.allow("bad_value", now=1) is None
    assert log.allow("bad_value", now=2) is None
    assert log.allow("not_json", now=2) == 0
    assert log.allow("bad_value", now=10.5) == 2


def test_reset_lets_the_next_event_through_at_once() -> None:
    log = RateLimitedLog(interval=10)
    assert log.allow("outage", now=0) == 0
    assert log.allow("outage", now=1) is None
    log.reset("outage")
    assert log.allow("outage", now=2) == 0


def test_log_writes_one_line_and_then_says_how_many_were_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    limited = RateLimitedLog(interval=10, clock=lambda: now[0])
    logger = logging.getLogger("tests.ratelimit")
    with caplog.at_level(logging.WARNING, logger="tests.ratelimit"):
        assert limited.log(logger, logging.WARNING, "k", "store %s down", "B")
        now[0] = 5
        assert not limited.log(logger, logging.WARNING, "k", "store %s down", "B")
        assert not limited.log(logger, logging.WARNING, "k", "store %s down", "B")
        now[0] = 10
        assert limited.log(logger, logging.WARNING, "k", "store %s down", "B")
    assert [r.getMessage() for r in caplog.records] == [
        "store B down", "store B down (2 more like it suppressed)"]


def test_many_threads_get_exactly_one_line_through() -> None:
    log = RateLimitedLog(interval=3600)
    allowed: list[int | None] = []
    start = threading.Barrier(8)

    def hammer() -> None:
        start.wait()
        for _ in range(1000):
            allowed.append(log.allow("k"))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a for a in allowed if a is not None] == [0]
