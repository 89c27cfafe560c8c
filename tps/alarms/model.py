"""Alarm value types: severities, states, event types, snapshots and events.

An :class:`AlarmSnapshot` is an alarm as it stands after one transition; an
:class:`AlarmEvent` is that transition (its ``type``) with the snapshot. Snapshots are
immutable, so the same object can go to subscribers, the event log and Alertmanager
from the actor's thread without copies or locks.

Two JSON forms: :meth:`AlarmSnapshot.to_record` (times as integer ns, for the store,
exact) and :meth:`AlarmSnapshot.to_json` (times as ISO 8601 UTC, the field names of
the GraphQL ``Alarm`` type, for REST).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from tps.model import ns_to_datetime

logger = logging.getLogger(__name__)


class Severity(StrEnum):
    """How bad: ``WARNING`` (yellow), ``CRITICAL`` (red), ``STALE`` (silent stream)."""

    WARNING = "WARNING"
    CRITICAL = "CRITICAL"
    STALE = "STALE"


class AlarmState(StrEnum):
    """Where an alarm is in its lifecycle (Yamcs semantics, see ``lifecycle``)."""

    ACTIVE = "ACTIVE"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    RETURNED = "RETURNED"
    SHELVED = "SHELVED"
    CLEARED = "CLEARED"


class EventType(StrEnum):
    """What one transition did."""

    RAISED = "RAISED"
    ESCALATED = "ESCALATED"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    RETURNED = "RETURNED"
    SHELVED = "SHELVED"
    UNSHELVED = "UNSHELVED"
    CLEARED = "CLEARED"


class StreamAlarmState(StrEnum):
    """A stream's condition as the limits see it right now (``Stream.alarmState``)."""

    OK = "OK"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"
    STALE = "STALE"


_NS_FIELDS = ("triggered_at_ns", "updated_at_ns", "acknowledged_at_ns", "shelved_until_ns",
              "returned_at_ns", "cleared_at_ns")


@dataclass(frozen=True, slots=True)
class AlarmSnapshot:
    """One alarm as it stands (see the module docstring)."""

    id: str
    stream: str
    severity: Severity
    state: AlarmState
    value: float
    limit: float | None
    limit_name: str | None
    triggered_at_ns: int
    updated_at_ns: int
    most_severe_value: float
    out_of_limits: bool
    acknowledged: bool
    acknowledged_at_ns: int | None = None
    acknowledge_comment: str | None = None
    shelved_until_ns: int | None = None
    shelve_comment: str | None = None
    returned_at_ns: int | None = None
    cleared_at_ns: int | None = None

    @property
    def is_open(self) -> bool:
        """Not yet CLEARED (``alarms(active: true)`` lists these)."""
        return self.state is not AlarmState.CLEARED

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict with integer ns times (the event log's form)."""
        record = asdict(self)
        record["severity"] = str(self.severity)
        record["state"] = str(self.state)
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> AlarmSnapshot:
        """The inverse of :meth:`to_record`; ValueError/KeyError/TypeError if malformed."""
        values = dict(record)
        values["severity"] = Severity(values["severity"])
        values["state"] = AlarmState(values["state"])
        snapshot = cls(**values)
        if not isinstance(snapshot.id, str) or not isinstance(snapshot.stream, str):
            raise TypeError("alarm id and stream must be strings")
        for name in _NS_FIELDS:
            value = getattr(snapshot, name)
            if value is not None and type(value) is not int:
                raise TypeError(f"{name} must be an integer")
        return snapshot

    def to_json(self) -> dict[str, Any]:
        """The REST/GraphQL shape: camelCase names, ISO 8601 UTC times."""
        return {
            "id": self.id,
            "stream": self.stream,
            "severity": str(self.severity),
            "state": str(self.state),
            "value": self.value,
            "limit": self.limit,
            "limitName": self.limit_name,
            "triggeredAt": _iso(self.triggered_at_ns),
            "updatedAt": _iso(self.updated_at_ns),
            "mostSevereValue": self.most_severe_value,
            "outOfLimits": self.out_of_limits,
            "acknowledged": self.acknowledged,
            "acknowledgedAt": _iso(self.acknowledged_at_ns),
            "acknowledgeComment": self.acknowledge_comment,
            "shelvedUntil": _iso(self.shelved_until_ns),
            "shelveComment": self.shelve_comment,
            "returnedAt": _iso(self.returned_at_ns),
            "clearedAt": _iso(self.cleared_at_ns),
        }


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One transition of one alarm: ``type``, when, the alarm after it, a comment.

    ``seq`` numbers the events of one alarm from 1; (alarm id, seq) identifies an event,
    which makes writing it to the store twice harmless.
    """

    type: EventType
    time_ns: int
    seq: int
    alarm: AlarmSnapshot
    comment: str | None = None

    def to_record(self) -> dict[str, Any]:
        """JSON-ready, exact (the event log's form)."""
        return {"type": str(self.type), "time_ns": self.time_ns, "seq": self.seq,
                "comment": self.comment, "alarm": self.alarm.to_record()}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> AlarmEvent:
        """The inverse of :meth:`to_record`; ValueError/KeyError/TypeError if malformed."""
        time_ns, seq, comment = record["time_ns"], record["seq"], record.get("comment")
        if type(time_ns) is not int or type(seq) is not int:
            raise TypeError("time_ns and seq must be integers")
        if comment is not None and not isinstance(comment, str):
            raise TypeError("comment must be a string")
        return cls(EventType(record["type"]), time_ns, seq,
                   AlarmSnapshot.from_record(record["alarm"]), comment)

    def to_json(self) -> dict[str, Any]:
        """The REST/GraphQL shape of an ``AlarmEvent``."""
        return {"type": str(self.type), "time": _iso(self.time_ns), "seq": self.seq,
                "comment": self.comment, "alarm": self.alarm.to_json()}


def _iso(time_ns: int | None) -> str | None:
    return None if time_ns is None else ns_to_datetime(time_ns).isoformat()
