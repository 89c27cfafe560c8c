"""Limits of one stream: the JSON shape, the dataclass, and the rules a set must obey.

The JSON object (REST body, GraphQL ``LimitsInput``, the TOML ``[[limits]]`` table and
the registry file) uses these camelCase names, every one optional:

===============  =====================================================================
``yellowLow``     below it: WARNING
``yellowHigh``    above it: WARNING
``redLow``        below it: CRITICAL (must not be above ``yellowLow``)
``redHigh``       above it: CRITICAL (must not be below ``yellowHigh``)
``staleAfter``    seconds without a reading before the stream is STALE (1 s to 366 days)
``deadband``      how far back inside a limit a value must come to count as returned
                  (>= 0, default 0)
``persistence``   consecutive out-of-limit readings before an alarm is raised
                  (whole number >= 1, default 1)
===============  =====================================================================

A value exactly on a limit is inside it. ``null`` means "not set". Validation refuses a
whole set at the first problem with :class:`~tps.errors.InvalidArgument` whose
``argument`` is the offending field, so callers answer 400 / a GraphQL error naming it,
and nothing changes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tps.errors import InvalidArgument

logger = logging.getLogger(__name__)

LEVEL_FIELDS = ("yellowLow", "yellowHigh", "redLow", "redHigh")
FIELDS = (*LEVEL_FIELDS, "staleAfter", "deadband", "persistence")
MAX_STALE_AFTER = 366 * 86_400.0
# Below a second a stream at a normal rate flaps STALE/OK several times a second: events
# to the journal, the store and every notifier, forever.
MIN_STALE_AFTER = 1.0
"""A year: longer would only hide a typo (milliseconds for seconds, say)."""
MAX_PERSISTENCE = 1_000_000
MAX_MAGNITUDE = 1e12
"""Limits beyond this are refused: no temperature is that large, and it keeps every
derived threshold (limit +/- deadband) exact enough to compare."""


@dataclass(frozen=True, slots=True)
class Limits:
    """A validated set of limits (build with :func:`parse_limits` or :meth:`checked`)."""

    yellow_low: float | None = None
    yellow_high: float | None = None
    red_low: float | None = None
    red_high: float | None = None
    stale_after: float | None = None
    deadband: float = 0.0
    persistence: int = 1

    @property
    def has_levels(self) -> bool:
        """True when at least one of the four value limits is set."""
        return any(v is not None for v in (self.yellow_low, self.yellow_high,
                                           self.red_low, self.red_high))

    @property
    def is_empty(self) -> bool:
        """True when nothing would ever be raised (no value limit, no staleness)."""
        return not self.has_levels and self.stale_after is None

    def to_json(self) -> dict[str, Any]:
        """The camelCase JSON object (unset limits as ``null``)."""
        return {
            "yellowLow": self.yellow_low, "yellowHigh": self.yellow_high,
            "redLow": self.red_low, "redHigh": self.red_high,
            "staleAfter": self.stale_after, "deadband": self.deadband,
            "persistence": self.persistence,
        }

    def checked(self) -> Limits:
        """Return self after checking the rules between fields (see :func:`parse_limits`)."""
        _check_relations(self)
        return self


def parse_limits(data: Any) -> Limits:
    """Validate a JSON-like mapping into :class:`Limits`; InvalidArgument names the field.

    Refused: a non-object, unknown keys, booleans and strings where numbers belong, NaN
    and infinities, a ``staleAfter`` under 1 s, a negative ``deadband``, a
    ``persistence`` that is not a whole number >= 1, red inside yellow, a low limit not
    below a high one, and a deadband so wide a value could never count as returned.
    """
    if not isinstance(data, Mapping):
        raise InvalidArgument("limits", f"must be an object, got {_kind(data)}")
    for key in data:
        if key not in FIELDS:
            raise InvalidArgument(str(key)[:64], "unknown limit; expected one of "
                                  + ", ".join(FIELDS))
    levels = {name: _number(name, data.get(name)) for name in LEVEL_FIELDS}
    stale_after = _number("staleAfter", data.get("staleAfter"))
    if stale_after is not None and not MIN_STALE_AFTER <= stale_after <= MAX_STALE_AFTER:
        raise InvalidArgument("staleAfter", f"must be between {MIN_STALE_AFTER:g} and "
                              f"{MAX_STALE_AFTER:g} seconds, got {stale_after:g}")
    deadband = _number("deadband", data.get("deadband"))
    if deadband is not None and deadband < 0:
        raise InvalidArgument("deadband", f"must not be negative, got {deadband:g}")
    persistence = _persistence(data.get("persistence"))
    limits = Limits(
        yellow_low=levels["yellowLow"], yellow_high=levels["yellowHigh"],
        red_low=levels["redLow"], red_high=levels["redHigh"], stale_after=stale_after,
        deadband=deadband or 0.0, persistence=persistence,
    )
    return limits.checked()


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _number(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(name, f"must be a number or null, got {_kind(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidArgument(name, f"must be a finite number, got {value!r}")
    if abs(number) > MAX_MAGNITUDE:
        raise InvalidArgument(name, f"must be between {-MAX_MAGNITUDE:g} and "
                              f"{MAX_MAGNITUDE:g}, got {number:g}")
    return number


def _persistence(value: Any) -> int:
    if value is None:
        return 1
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument("persistence", f"must be a whole number, got {_kind(value)}")
    if not 1 <= value <= MAX_PERSISTENCE:
        raise InvalidArgument("persistence", f"must be between 1 and {MAX_PERSISTENCE}, "
                              f"got {value}")
    return value


def _check_relations(limits: Limits) -> None:
    named = {
        "yellowLow": limits.yellow_low, "yellowHigh": limits.yellow_high,
        "redLow": limits.red_low, "redHigh": limits.red_high,
    }
    for name, value in named.items():
        if value is not None and (not math.isfinite(value) or abs(value) > MAX_MAGNITUDE):
            raise InvalidArgument(name, f"must be a finite number within +/-{MAX_MAGNITUDE:g}")
    if limits.red_low is not None and limits.yellow_low is not None \
            and limits.red_low > limits.yellow_low:
        raise InvalidArgument("redLow", f"red must be outside yellow: redLow "
                              f"{limits.red_low:g} is above yellowLow {limits.yellow_low:g}")
    if limits.red_high is not None and limits.yellow_high is not None \
            and limits.red_high < limits.yellow_high:
        raise InvalidArgument("redHigh", f"red must be outside yellow: redHigh "
                              f"{limits.red_high:g} is below yellowHigh {limits.yellow_high:g}")
    deadband = limits.deadband
    if not math.isfinite(deadband) or deadband < 0:
        raise InvalidArgument("deadband", f"must be a finite number >= 0, got {deadband!r}")
    # Every low limit must lie below every high limit by more than two deadbands:
    # otherwise some level could never be left (no value would count as back inside).
    for low_name in ("yellowLow", "redLow"):
        low = named[low_name]
        for high_name in ("yellowHigh", "redHigh"):
            high = named[high_name]
            if low is None or high is None:
                continue
            if low >= high:
                raise InvalidArgument(high_name, f"must be above {low_name} ({low:g}), "
                                      f"got {high:g}")
            if high - low <= 2 * deadband:
                raise InvalidArgument("deadband", f"{deadband:g} is too wide: it must be "
                                      f"less than half of {high_name} - {low_name} "
                                      f"({high - low:g})")
    if (limits.stale_after is not None
            and not MIN_STALE_AFTER <= limits.stale_after <= MAX_STALE_AFTER):
        raise InvalidArgument("staleAfter", f"must be between {MIN_STALE_AFTER:g} and "
                              f"{MAX_STALE_AFTER:g} seconds")
    if not 1 <= limits.persistence <= MAX_PERSISTENCE:
        raise InvalidArgument("persistence", f"must be between 1 and {MAX_PERSISTENCE}")
