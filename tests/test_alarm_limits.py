"""Limits: the camelCase JSON shape, and every way a limit set can be wrong."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tps.alarms.limits import Limits, parse_limits
from tps.errors import InvalidArgument


def test_any_subset_of_limits_is_accepted_and_round_trips() -> None:
    data = {"yellowLow": 10, "yellowHigh": 30.5, "redLow": 0, "redHigh": 40,
            "staleAfter": 5, "deadband": 0.5, "persistence": 3}
    limits = parse_limits(data)
    assert limits == Limits(10.0, 30.5, 0.0, 40.0, 5.0, 0.5, 3)
    assert parse_limits(limits.to_json()) == limits
    assert parse_limits({"redHigh": 40}) == Limits(red_high=40.0)
    assert parse_limits({"staleAfter": 1.5}).stale_after == 1.5
    assert parse_limits({}).is_empty
    assert parse_limits({"yellowHigh": None, "persistence": 2.0}).persistence == 2


def test_a_value_exactly_on_red_and_yellow_together_is_allowed() -> None:
    assert parse_limits({"yellowHigh": 30, "redHigh": 30}).red_high == 30.0


@pytest.mark.parametrize(("data", "field"), [
    ({"yellowHigh": 30, "redHigh": 25}, "redHigh"),          # red inside yellow
    ({"yellowLow": 10, "redLow": 12}, "redLow"),             # red inside yellow
    ({"yellowLow": 30, "yellowHigh": 10}, "yellowHigh"),     # low above high
    ({"redLow": 5, "yellowHigh": 5}, "yellowHigh"),          # low equal to high
    ({"yellowHigh": math.nan}, "yellowHigh"),
    ({"redLow": -math.inf}, "redLow"),
    ({"yellowLow": "10"}, "yellowLow"),
    ({"yellowLow": True}, "yellowLow"),
    ({"redHigh": [40]}, "redHigh"),
    ({"yellowHigh": 1e300}, "yellowHigh"),
    ({"staleAfter": -1}, "staleAfter"),
    ({"staleAfter": 0}, "staleAfter"),
    ({"staleAfter": 1e-300}, "staleAfter"),  # would flap STALE/OK forever
    ({"staleAfter": 0.5}, "staleAfter"),
    ({"staleAfter": 1e12}, "staleAfter"),
    ({"staleAfter": "5s"}, "staleAfter"),
    ({"deadband": -0.1}, "deadband"),
    ({"deadband": math.inf}, "deadband"),
    ({"yellowLow": 10, "yellowHigh": 11, "deadband": 0.5}, "deadband"),  # never back
    ({"persistence": 0}, "persistence"),
    ({"persistence": 1.5}, "persistence"),
    ({"persistence": "3"}, "persistence"),
    ({"persistence": 10**9}, "persistence"),
    ({"yellowHi": 3}, "yellowHi"),
])
def test_invalid_limits_are_refused_naming_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_limits(data)
    assert caught.value.argument == field, caught.value


@pytest.mark.parametrize("data", [None, [], "limits", 3])
def test_a_non_object_is_refused(data: Any) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_limits(data)
    assert caught.value.argument == "limits"


def test_a_huge_unknown_key_is_named_but_cut_short() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_limits({"x" * 10_000: 1})
    assert len(caught.value.argument) == 64
