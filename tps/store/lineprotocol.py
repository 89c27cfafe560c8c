"""InfluxDB line protocol for readings: ``temperature,stream=<name> value=<float> <ns>``.

Plain functions on the ingest hot path (a 5,000-reading batch per write at 30k+
readings/s), so the per-stream prefix is escaped once per batch and the body is
joined and encoded once.

Escaping follows what InfluxDB's parser actually accepts (verified against 1.6):
commas, equals signs and spaces in a tag value are backslash-escaped; any other
character, backslashes included, is literal. Two things cannot be carried in a tag
value at all - a newline (it ends the line) and a trailing backslash (it would escape
the separator that follows) - and an empty value drops the tag; a carriage return is
stored but cannot be queried back. Such names are refused with ValueError rather than
stored under a different name (config only allows ``[A-Za-z0-9_.:-]{1,64}`` anyway).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

from tps.history.types import RollupWrite
from tps.model import Reading

logger = logging.getLogger(__name__)

MEASUREMENT = "temperature"
TAG_KEY = "stream"
FIELD_KEY = "value"
ROLLUP_MEASUREMENTS = {60_000_000_000: "temperature_1m", 3_600_000_000_000: "temperature_1h"}
"""Rollup measurement of each bucket width (ns); see :mod:`tps.history.types`."""
COVERAGE_MEASUREMENT = "temperature_coverage"

_TAG_ESCAPES = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})


def is_storable(stream: str) -> bool:
    """True when InfluxDB can store *and* query back a point tagged with ``stream``.

    Besides what line protocol cannot carry, a carriage return is refused: InfluxQL's
    scanner turns it into a newline inside string literals and has no escape for it,
    so such a name could be written but never selected.
    """
    return bool(stream) and "\n" not in stream and "\r" not in stream and (
        not stream.endswith("\\"))


def escape_tag_value(value: str) -> str:
    """Escape ``value`` for use as a tag value; ValueError if no escaping can carry it."""
    if not value:
        raise ValueError("a stream name must not be empty in line protocol")
    if "\n" in value or "\r" in value:
        raise ValueError(f"stream name {value!r} contains a line break, which InfluxDB "
                         "cannot store and query back")
    if value.endswith("\\"):
        raise ValueError(f"stream name {value!r} ends with a backslash, which line protocol "
                         "cannot carry")
    return value.translate(_TAG_ESCAPES)


def line_prefix(stream: str) -> str:
    """``temperature,stream=<escaped> value=``: everything of a line before the value."""
    return f"{MEASUREMENT},{TAG_KEY}={escape_tag_value(stream)} {FIELD_KEY}="


def encode_reading(reading: Reading) -> str:
    """One reading as one line (without the newline)."""
    return encode_readings((reading,)).decode()


def encode_readings(readings: Iterable[Reading]) -> bytes:
    """Encode a batch as one UTF-8 line-protocol body, lines separated by ``\\n``.

    Raises ValueError for a non-finite value, a non-integer timestamp or a stream name
    line protocol cannot carry; nothing is encoded then (the caller sends all or none).
    """
    prefixes: dict[str, str] = {}
    lines: list[str] = []
    append = lines.append
    isfinite = math.isfinite
    for reading in readings:
        stream = reading.stream
        prefix = prefixes.get(stream)
        if prefix is None:
            prefix = prefixes[stream] = line_prefix(stream)
        value = reading.value
        if value.__class__ is not float:
            # An int would be fine, but a bool would be written as the boolean True
            # and then conflict with the float field forever.
            value = float(value)
        if not isfinite(value):
            raise ValueError(f"stream {stream!r}: value {value!r} is not a finite number")
        time_ns = reading.time_ns
        if time_ns.__class__ is not int:
            raise ValueError(f"stream {stream!r}: time_ns {time_ns!r} is not an integer")
        append(f"{prefix}{value!r} {time_ns}")
    return "\n".join(lines).encode()


def encode_rollups(rollups: RollupWrite) -> bytes:
    """Rollup points and coverage marks as line protocol (see :mod:`tps.history.types`).

    ``count``, ``from`` and ``until`` are integer fields (``i`` suffix). Raises ValueError for a
    non-finite aggregate or a stream name line protocol cannot carry.
    """
    lines: list[str] = []
    append = lines.append
    isfinite = math.isfinite
    tags: dict[str, str] = {}
    for point in rollups.points:
        tag = tags.get(point.stream)
        if tag is None:
            tag = tags[point.stream] = escape_tag_value(point.stream)
        agg = point.agg
        if not (isfinite(agg.min) and isfinite(agg.max) and isfinite(agg.sum)):
            raise ValueError(f"stream {point.stream!r}: rollup at {point.start} is not finite")
        append(f"{ROLLUP_MEASUREMENTS[point.width]},{TAG_KEY}={tag} min={float(agg.min)!r},"
               f"max={float(agg.max)!r},sum={float(agg.sum)!r},count={int(agg.count)}i "
               f"{int(point.start)}")
    for mark in rollups.coverage:
        tag = tags.get(mark.stream)
        if tag is None:
            tag = tags[mark.stream] = escape_tag_value(mark.stream)
        fields = []
        if mark.lo is not None:
            fields.append(f"from={int(mark.lo)}i")
        if mark.until is not None:
            fields.append(f"until={int(mark.until)}i")
        if not fields:
            raise ValueError(f"stream {mark.stream!r}: a coverage mark must set from or until")
        append(f"{COVERAGE_MEASUREMENT},{TAG_KEY}={tag} {','.join(fields)} {int(mark.at)}")
    return "\n".join(lines).encode()
_UNESCAPES = (("\\,", ","), ("\\=", "="), ("\\ ", " "))
_HEAD = f"{MEASUREMENT},{TAG_KEY}="
_VALUE_SEP = f" {FIELD_KEY}="


def decode_readings(body: bytes) -> list[Reading]:
    """Read back what :func:`encode_readings` wrote (cluster mode's NATS payload).

    Only TPS's own shape is accepted - measurement ``temperature``, tag ``stream``,
    field ``value``, an integer nanosecond timestamp - so anything else on the subject
    is refused with ValueError (naming the line) rather than guessed at.
    """
    streams: dict[str, str] = {}
    readings: list[Reading] = []
    append = readings.append
    for number, line in enumerate(body.decode().split("\n"), 1):
        if not line:
            continue
        rest, sep, stamp = line.rpartition(" ")
        head, sep2, value = rest.rpartition(_VALUE_SEP)
        if not sep or not sep2 or not head.startswith(_HEAD):
            raise ValueError(f"line {number}: not a TPS reading: {line[:80]!r}")
        stream = streams.get(head)
        if stream is None:
            stream = head[len(_HEAD):]
            for escaped, plain in _UNESCAPES:
                stream = stream.replace(escaped, plain)
            if not stream:
                raise ValueError(f"line {number}: empty stream tag")
            streams[head] = stream
        try:
            append(Reading(stream, int(stamp), float(value)))
        except ValueError:
            raise ValueError(f"line {number}: bad value or timestamp: {line[:80]!r}") from None
    return readings
