"""GraphQL types of limits and alarms (issue 11); the root fields live in ``schema``.

``Alarm`` and ``AlarmEvent`` resolve from :class:`~tps.alarms.model.AlarmSnapshot` and
:class:`~tps.alarms.model.AlarmEvent` (the same field names as the REST JSON);
``Limits`` from :class:`~tps.alarms.limits.Limits`; ``LimitsInput`` turns into the
camelCase mapping :func:`~tps.alarms.limits.parse_limits` checks, so GraphQL and REST
refuse the same limits with the same field names.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import graphene

from tps.alarms.limits import Limits
from tps.alarms.model import AlarmEvent as AlarmEventValue
from tps.alarms.model import AlarmSnapshot, AlarmState, EventType, Severity, StreamAlarmState
from tps.api.graphql.scalars import DateTime
from tps.model import ns_to_datetime

logger = logging.getLogger(__name__)

AlarmSeverityEnum = graphene.Enum.from_enum(Severity, description="WARNING (yellow), "
                                            "CRITICAL (red) or STALE (silent stream).")
AlarmStateEnum = graphene.Enum.from_enum(AlarmState, description="Where the alarm is in "
                                         "its lifecycle.")
AlarmEventTypeEnum = graphene.Enum.from_enum(EventType, description="What one transition did.")
StreamAlarmStateEnum = graphene.Enum.from_enum(StreamAlarmState, description="A stream's "
                                               "condition under its limits right now.")


def _time(root: AlarmSnapshot, name: str) -> datetime | None:
    value = getattr(root, name)
    return None if value is None else ns_to_datetime(value)


class LimitsType(graphene.ObjectType):  # type: ignore[misc]
    """A stream's limits; null fields are not set."""

    class Meta:
        name = "Limits"

    yellow_low = graphene.Float()
    yellow_high = graphene.Float()
    red_low = graphene.Float()
    red_high = graphene.Float()
    stale_after = graphene.Float(description="Seconds without a reading before STALE.")
    deadband = graphene.Float(description="How far back inside a limit counts as returned.")
    persistence = graphene.Int(description="Consecutive readings out before raising.")


class LimitsInput(graphene.InputObjectType):  # type: ignore[misc]
    """Any subset of the limits; red outside yellow (see the REST ``Limits`` schema)."""

    yellow_low = graphene.Float()
    yellow_high = graphene.Float()
    red_low = graphene.Float()
    red_high = graphene.Float()
    stale_after = graphene.Float()
    deadband = graphene.Float()
    persistence = graphene.Int()


_INPUT_NAMES = {"yellow_low": "yellowLow", "yellow_high": "yellowHigh", "red_low": "redLow",
                "red_high": "redHigh", "stale_after": "staleAfter", "deadband": "deadband",
                "persistence": "persistence"}


def limits_input(data: dict[str, Any]) -> dict[str, Any]:
    """A ``LimitsInput`` value as the camelCase mapping ``parse_limits`` expects."""
    return {_INPUT_NAMES.get(key, key): value for key, value in data.items()}


def limits_or_blank(limits: Limits | None) -> Limits | dict[str, None]:
    """What ``clearLimits`` answers for no limits: every field null."""
    return limits if limits is not None else dict.fromkeys(_INPUT_NAMES)


class AlarmEventType(graphene.ObjectType):  # type: ignore[misc]
    """One transition of one alarm."""

    class Meta:
        name = "AlarmEvent"

    type = graphene.Field(graphene.NonNull(AlarmEventTypeEnum))
    time = DateTime(required=True)
    seq = graphene.Int(required=True, description="Event number within its alarm, from 1.")
    comment = graphene.String()
    alarm = graphene.Field(graphene.NonNull(lambda: AlarmType),
                           description="The alarm as it stood after this event.")

    @staticmethod
    def resolve_time(root: AlarmEventValue, _info: graphene.ResolveInfo) -> datetime:
        return ns_to_datetime(root.time_ns)


class AlarmType(graphene.ObjectType):  # type: ignore[misc]
    """An alarm: a stream out of its limits (or silent), and what operators did about it."""

    class Meta:
        name = "Alarm"

    id = graphene.ID(required=True)
    stream = graphene.String(required=True)
    severity = graphene.Field(graphene.NonNull(AlarmSeverityEnum))
    state = graphene.Field(graphene.NonNull(AlarmStateEnum))
    value = graphene.Float(required=True, description="The value that triggered it (STALE: "
                           "seconds without a reading).")
    limit = graphene.Float(description="The limit it crossed.")
    limit_name = graphene.String(description="yellowHigh, redLow, staleAfter, ...")
    triggered_at = DateTime(required=True)
    updated_at = DateTime(required=True)
    most_severe_value = graphene.Float(required=True)
    out_of_limits = graphene.Boolean(required=True)
    acknowledged = graphene.Boolean(required=True)
    acknowledged_at = DateTime()
    acknowledge_comment = graphene.String()
    shelved_until = DateTime()
    shelve_comment = graphene.String()
    returned_at = DateTime()
    cleared_at = DateTime()

    @staticmethod
    def resolve_triggered_at(root: AlarmSnapshot, _info: graphene.ResolveInfo) -> datetime | None:
        return _time(root, "triggered_at_ns")

    @staticmethod
    def resolve_updated_at(root: AlarmSnapshot, _info: graphene.ResolveInfo) -> datetime | None:
        return _time(root, "updated_at_ns")

    @staticmethod
    def resolve_acknowledged_at(root: AlarmSnapshot,
                                _info: graphene.ResolveInfo) -> datetime | None:
        return _time(root, "acknowledged_at_ns")

    @staticmethod
    def resolve_shelved_until(root: AlarmSnapshot,
                              _info: graphene.ResolveInfo) -> datetime | None:
        return _time(root, "shelved_until_ns")

    @staticmethod
    def resolve_returned_at(root: AlarmSnapshot, _info: graphene.ResolveInfo) -> datetime | None:
        return _time(root, "returned_at_ns")

    @staticmethod
    def resolve_cleared_at(root: AlarmSnapshot, _info: graphene.ResolveInfo) -> datetime | None:
        return _time(root, "cleared_at_ns")
