"""ISO 8601 text and epoch nanoseconds, both ways, keeping all nine fraction digits.

``datetime`` keeps microseconds only; readings are stamped in nanoseconds, so the CLI
(``tps ts``) and the GraphQL ``DateTime`` scalar convert through these instead.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_ISO = re.compile(
    r"(?P<base>\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?)"
    r"(?:[.,](?P<frac>\d{1,9}))?"
    r"(?P<tz>Z|z|[+-]\d{2}(?::?\d{2})?)?"
)


def iso8601_to_ns(text: str) -> int:
    """Epoch nanoseconds of an ISO 8601 instant; no zone means UTC; keeps all 9 digits.

    Raises ValueError for anything else.
    """
    match = _ISO.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not an ISO 8601 date-time: {text!r}")
    tz = match["tz"] or "+00:00"
    if tz in ("Z", "z"):
        tz = "+00:00"
    elif len(tz) == 3:
        tz += ":00"
    elif ":" not in tz:
        tz = f"{tz[:3]}:{tz[3:]}"
    base = match["base"].replace(" ", "T")
    if "T" not in base:
        base += "T00:00:00"
    elif base.count(":") == 1:
        base += ":00"
    moment = datetime.fromisoformat(base + tz)
    seconds = int(moment.timestamp())
    fraction = int((match["frac"] or "0").ljust(9, "0"))
    return seconds * 1_000_000_000 + fraction


def ns_to_iso8601(time_ns: int) -> str:
    """ISO 8601 UTC text of epoch nanoseconds, with as many fraction digits as needed."""
    seconds, ns = divmod(time_ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if ns:
        text += "." + f"{ns:09d}".rstrip("0")
    return text + "Z"
