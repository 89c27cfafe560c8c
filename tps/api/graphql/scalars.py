"""The scalars and enums of the TPS schema.

- ``DateTime``: an instant. Answers are ISO 8601 in UTC (``2023-07-28T13:00:00+00:00``,
  microseconds when there are any). Arguments take ISO 8601 (a time without a zone is
  UTC) or epoch nanoseconds, as an integer or as a string of digits - what InfluxDB
  and ``tps ts`` print - and keep all nine fraction digits (:class:`Instant`).
- ``Counter``: a count that can pass 2^31 (GraphQL's ``Int`` is 32-bit); sent as a JSON
  integer, exact for any 64-bit value (JavaScript numbers are exact up to 2^53).
- Enums whose values are what REST and the CLI show: ``FeedStatus`` (on, off),
  ``StreamState`` (connecting, subscribed, ...), ``FeedProtocol`` (auto, graphql_ws,
  graphql_transport_ws, json - GraphQL names cannot hold a hyphen). As arguments they
  also accept the strings clients sent before they were enums (``"off"``,
  ``"graphql-ws"``); see :mod:`tps.compat.graphene`.
"""

from __future__ import annotations

import enum
import re
from datetime import UTC, datetime
from typing import Any

import graphene
from graphql import GraphQLError, IntValueNode, StringValueNode, ValueNode, print_ast

from tps.actors.stats import StreamState as StreamStateValue
from tps.config.settings import PROTOCOLS
from tps.model import datetime_to_ns, ns_to_datetime
from tps.timefmt import iso8601_to_ns

_DIGITS = re.compile(r"-?\d{1,20}")
_UTC_TEXT = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:Z|\+00:00)?")
"""The spelling clients send (``toISOString()``, ``isoformat()``): a UTC date-time with
seconds. Parsed straight into an :class:`Instant`; every other spelling (zones,
missing seconds, a space, week dates) takes the general path."""

_MAX_NS = 253_402_300_799_999_999_999  # 9999-12-31T23:59:59.999999999Z
_MIN_NS = -62_135_596_800_000_000_000  # 0001-01-01T00:00:00Z
_DATETIME_HELP = (
    "expected an ISO 8601 date-time such as 2023-07-28T13:00:00+00:00, or epoch "
    "nanoseconds such as 1690549200000000000"
)


class Instant(datetime):
    """An aware UTC datetime that also carries its exact epoch nanoseconds (``ns``);
    a datetime alone keeps microseconds only."""

    ns: int

    @classmethod
    def of(cls, time_ns: int) -> Instant:
        """The instant ``time_ns`` nanoseconds after the epoch."""
        moment = ns_to_datetime(time_ns)
        instant = cls(moment.year, moment.month, moment.day, moment.hour, moment.minute,
                      moment.second, moment.microsecond, tzinfo=UTC)
        instant.ns = time_ns
        return instant


def instant_ns(moment: datetime) -> int:
    """Epoch nanoseconds of an argument (exact for an :class:`Instant`)."""
    exact = getattr(moment, "ns", None)
    return exact if isinstance(exact, int) else datetime_to_ns(moment)


def parse_instant(value: Any) -> Instant:
    """A ``DateTime`` argument's value as an Instant; GraphQLError saying what is
    accepted otherwise."""
    if isinstance(value, datetime):
        return Instant.of(datetime_to_ns(value))
    if isinstance(value, bool):
        raise GraphQLError(f"{_DATETIME_HELP}; got {value!r}")
    if isinstance(value, int):
        time_ns = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        time_ns = int(value.strip())
    elif isinstance(value, str):
        instant = _utc_instant(value)
        if instant is not None:
            return instant
        try:
            time_ns = iso8601_to_ns(value)
        except (ValueError, OverflowError):
            time_ns = _iso_fallback(value)
    else:
        raise GraphQLError(f"{_DATETIME_HELP}; got {value!r}")
    if not _MIN_NS <= time_ns <= _MAX_NS:
        raise GraphQLError(f"{_DATETIME_HELP}; {value!r} is out of range")
    return Instant.of(time_ns)


_EPOCH = Instant(1970, 1, 1, tzinfo=UTC)


def _utc_instant(text: str) -> Instant | None:
    """The Instant of ``text`` spelled as :data:`_UTC_TEXT` matches, or None (another
    spelling, or fields out of range: the general path reports those)."""
    match = _UTC_TEXT.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction = match.groups()
    fraction_ns = int(fraction.ljust(9, "0")) if fraction else 0
    try:
        instant = Instant(int(year), int(month), int(day), int(hour), int(minute),
                          int(second), fraction_ns // 1000, tzinfo=UTC)
    except ValueError:
        return None
    delta = instant - _EPOCH
    instant.ns = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + fraction_ns
    return instant


def _iso_fallback(text: str) -> int:
    """Other ISO 8601 spellings (basic format, week dates) through Graphene's parser."""
    try:
        moment = graphene.DateTime.parse_value(text)
    except (GraphQLError, ValueError, OverflowError):
        moment = None
    if not isinstance(moment, datetime):
        raise GraphQLError(f"{_DATETIME_HELP}; got {text!r}") from None
    return datetime_to_ns(moment)


class DateTime(graphene.Scalar):  # type: ignore[misc]
    """An instant. Answers: ISO 8601 in UTC, e.g. `2023-07-28T13:00:00+00:00`.
    Arguments: ISO 8601 (no zone means UTC), or epoch nanoseconds as an integer or a
    string of digits (e.g. `1690549200000000000`); all nine fraction digits count."""

    @staticmethod
    def serialize(value: Any) -> str:
        """ISO 8601 text (as Graphene's own DateTime writes it)."""
        if not isinstance(value, datetime):
            raise GraphQLError(f"DateTime cannot represent value: {value!r}")
        return value.isoformat()

    @staticmethod
    def parse_value(value: Any) -> Instant:
        """A variable's value."""
        return parse_instant(value)

    @staticmethod
    def parse_literal(node: ValueNode, _variables: Any = None) -> Instant:
        """A literal in the document: a string, or an integer of epoch nanoseconds."""
        if isinstance(node, StringValueNode | IntValueNode):
            return parse_instant(node.value if isinstance(node, StringValueNode)
                                 else int(node.value))
        raise GraphQLError(f"{_DATETIME_HELP}; got {print_ast(node)}")


_COUNTER_MAX = 2**64 - 1


class Counter(graphene.Scalar):  # type: ignore[misc]
    """A non-negative count that may pass 2^31 (Int is 32-bit): a JSON integer, exact for
    any 64-bit value (JavaScript numbers are exact up to 2^53)."""

    @staticmethod
    def serialize(value: Any) -> int:
        """The count as an integer."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise GraphQLError(f"Counter cannot represent value: {value!r}")
        return int(value)

    @staticmethod
    def parse_value(value: Any) -> int:
        """An integer, or a string of digits."""
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _COUNTER_MAX:
            raise GraphQLError(f"expected a whole number from 0 to 2^64-1, got {value!r}")
        return value

    @staticmethod
    def parse_literal(node: ValueNode, _variables: Any = None) -> int:
        """An integer literal, or a string of digits."""
        if isinstance(node, IntValueNode | StringValueNode):
            return Counter.parse_value(node.value if isinstance(node, StringValueNode)
                                       else int(node.value))
        raise GraphQLError(f"expected a whole number, got {print_ast(node)}")


def _graphql_name(value: str) -> str:
    return value.replace("-", "_")


FeedStatus = graphene.Enum(
    "FeedStatus", [("on", "on"), ("off", "off")],
    description="Whether a stream's reader should run: on (start) or off (stop).",
)
StreamState = graphene.Enum(
    "StreamState", [(state.value, state.value) for state in StreamStateValue],
    description="What a stream's reader is doing (as REST and `tps streams list` show it).",
)
FeedProtocol = graphene.Enum(
    "FeedProtocol", [(_graphql_name(p), p) for p in PROTOCOLS],
    description="A feed's wire protocol: auto (whichever the server picks), graphql_ws "
    "(subscriptions-transport-ws), graphql_transport_ws (the graphql-ws library) or json. "
    "As an argument the hyphenated names (graphql-ws) are accepted too.",
)
LENIENT_ENUMS = ("FeedStatus", "StreamState", "FeedProtocol")
"""Enums that also accept their values as strings (see :mod:`tps.compat.graphene`)."""


def enum_value(value: Any) -> Any:
    """The plain value of an enum argument (Graphene passes the Python enum member)."""
    return value.value if isinstance(value, enum.Enum) else value
