"""Value types shared by every layer: a reading and the answers built from readings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class Reading:
    """One temperature value of one stream at one instant (UTC, integer nanoseconds)."""

    stream: str
    time_ns: int
    value: float

    @property
    def time(self) -> datetime:
        """The instant as an aware UTC datetime (microsecond precision)."""
        return ns_to_datetime(self.time_ns)


@dataclass(frozen=True, slots=True)
class Statistics:
    """Aggregate of the readings in a window; min/max/mean are None when count is 0."""

    count: int
    min: float | None
    max: float | None
    mean: float | None


def ns_to_datetime(time_ns: int) -> datetime:
    """Convert epoch nanoseconds to an aware UTC datetime."""
    seconds, ns = divmod(time_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=ns // 1000)


def datetime_to_ns(moment: datetime) -> int:
    """Convert a datetime to epoch nanoseconds; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
