"""The per-stream limit checker: levels, persistence, deadband, staleness, cost."""

from __future__ import annotations

import time

from tps.alarms.checker import (
    CRITICAL,
    OK,
    WARNING,
    LevelChanged,
    LimitChecker,
    PeakChanged,
    Report,
    StreamFresh,
)
from tps.alarms.limits import parse_limits
from tps.model import Reading

LIMITS = {"yellowLow": 10, "yellowHigh": 30, "redLow": 0, "redHigh": 40}


class Clock:
    def __init__(self) -> None:
        self.ns = 1_000_000_000

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * 1e9)


def _checker(clock: Clock | None = None, **extra: float) -> LimitChecker:
    return LimitChecker("s", parse_limits({**LIMITS, **extra}), clock=clock or Clock())


def _feed(checker: LimitChecker, *values: float, start: int = 0) -> list[Report]:
    """One reading per batch, as a slow feed delivers them."""
    reports: list[Report] = []
    for i, value in enumerate(values):
        reports += checker.check([Reading("s", start + i, value)])
    return reports


def _levels(reports: list[Report]) -> list[int]:
    return [r.level for r in reports if isinstance(r, LevelChanged)]


def test_first_reading_decides_the_level_even_in_limits() -> None:
    checker = _checker()
    assert _feed(checker, 20.0) == [LevelChanged("s", OK, 0, 20.0)]
    assert _feed(checker, 21.0, 22.0) == []


def test_yellow_then_red_then_back_reports_each_level_once() -> None:
    checker = _checker()
    reports = _feed(checker, 20, 31, 32, 41, 42, 35, 20)
    assert _levels(reports) == [OK, WARNING, CRITICAL, WARNING, OK]
    raised = [r for r in reports if isinstance(r, LevelChanged)][1]
    assert (raised.value, raised.limit_name, raised.limit) == (31, "yellowHigh", 30)
    escalated = [r for r in reports if isinstance(r, LevelChanged)][2]
    assert (escalated.limit_name, escalated.limit) == ("redHigh", 40)


def test_low_side_names_the_low_limits() -> None:
    checker = _checker()
    reports = [r for r in _feed(checker, 20, 9, -1) if isinstance(r, LevelChanged)]
    assert [(r.limit_name, r.limit) for r in reports[1:]] == [("yellowLow", 10), ("redLow", 0)]


def test_a_value_on_the_limit_is_inside() -> None:
    checker = _checker()
    assert _levels(_feed(checker, 30.0, 10.0, 40.0 - 10)) == [OK]


def test_deadband_keeps_the_level_until_the_value_is_back_by_that_much() -> None:
    checker = _checker(deadband=0.5)
    reports = _feed(checker, 20, 30.2, 29.9, 30.1, 29.6, 30.4, 29.5)
    # 29.9 and 29.6 are inside the limit but not by 0.5: no flapping.
    assert _levels(reports) == [OK, WARNING, OK]


def test_deadband_applies_to_leaving_red_as_well() -> None:
    checker = _checker(deadband=1)
    assert _levels(_feed(checker, 20, 41, 39.5, 39.0)) == [OK, CRITICAL, WARNING]


def test_persistence_needs_consecutive_readings_out() -> None:
    checker = _checker(persistence=3)
    reports = _feed(checker, 20, 31, 31, 20, 31, 31, 31)
    assert _levels(reports) == [OK, WARNING]
    assert [r.time_ns for r in reports if isinstance(r, LevelChanged)] == [0, 6]


def test_persistence_enters_the_level_all_of_the_last_n_readings_reached() -> None:
    checker = _checker(persistence=3)
    assert _levels(_feed(checker, 20, 31, 41, 41)) == [OK, WARNING]
    assert _levels(_feed(checker, 41)) == [CRITICAL]


def test_persistence_two_reds_raise_critical_directly() -> None:
    checker = _checker(persistence=2)
    assert _levels(_feed(checker, 20, 41, 41)) == [OK, CRITICAL]


def test_persistence_from_the_unknown_start_waits_for_a_decision() -> None:
    checker = _checker(persistence=2)
    assert _feed(checker, 31) == []
    assert _levels(_feed(checker, 31)) == [WARNING]


def test_a_whole_batch_is_evaluated_reading_by_reading_when_it_crosses() -> None:
    checker = _checker()
    batch = [Reading("s", i, v) for i, v in enumerate([20, 25, 31, 45, 35, 20, 21])]
    assert _levels(list(checker.check(batch))) == [OK, WARNING, CRITICAL, WARNING, OK]


def test_peak_reports_when_an_alarmed_value_gets_worse() -> None:
    checker = _checker()
    _feed(checker, 20, 31)
    reports = _feed(checker, 33, 32, 34)
    assert [r.value for r in reports if isinstance(r, PeakChanged)] == [33, 34]


def test_only_staleness_is_checked_without_value_limits() -> None:
    clock = Clock()
    checker = LimitChecker("s", parse_limits({"staleAfter": 2}), clock=clock)
    assert checker.check([Reading("s", 5, 1e9)]) == [StreamFresh("s", 5)]
    clock.advance(1)
    assert checker.check([Reading("s", 6, -1e9)]) == ()
    clock.advance(2.5)
    assert checker.check([Reading("s", 7, 0)]) == [StreamFresh("s", 7)]
    assert checker.last_seen_ns == clock.ns


def test_empty_limits_report_nothing() -> None:
    checker = LimitChecker("s", parse_limits({}))
    assert checker.check([Reading("s", 1, 1e9)]) == ()
    assert checker.check([]) == ()


def test_in_limits_batches_cost_no_more_than_two_comparisons_per_reading() -> None:
    """The common case: about what a bare loop comparing each value with two limits costs."""
    checker = _checker(deadband=0.5, persistence=2)
    batch = [Reading("s", i, 20.0 + (i % 7) * 0.1) for i in range(500)]
    checker.check(batch)

    def timed(fn: object) -> float:
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(200):
                fn(batch)  # type: ignore[operator]
            best = min(best, time.perf_counter() - start)
        return best

    def bare(readings: list[Reading]) -> bool:
        for reading in readings:
            value = reading.value
            if value < 10.0 or value > 30.0:
                return True
        return False

    assert timed(checker.check) < timed(bare) * 1.5
