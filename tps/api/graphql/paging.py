"""Cursor paging of readings, oldest first (plain code, no store).

A cursor says where the previous page ended: the time of its newest reading and the
streams that had a reading at exactly that time (one stream never has two readings at
one instant, so that set is small - usually one name). The next page asks the store
for readings from that time on (inclusive) and drops the ones already delivered, so
no reading is skipped or repeated whatever the order of ties. Cursors are opaque to
clients (URL-safe base64 of a small JSON document) and checked when decoded.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass

from tps.api.requests import loads_bounded
from tps.errors import InvalidArgument
from tps.model import Reading

_VERSION = 1
MAX_CURSOR_CHARS = 65_536
"""Longest cursor accepted: 500 streams of 64-character names at one instant fit; a
longer text is forged (each name in it would be one more row fetched)."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """The end of a page: its newest instant and the streams delivered at that instant."""

    time_ns: int
    streams: frozenset[str]

    def encode(self) -> str:
        """The opaque text handed to clients."""
        doc = {"v": _VERSION, "t": self.time_ns, "s": sorted(self.streams)}
        raw = json.dumps(doc, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def decode(text: str, argument: str = "cursor") -> Cursor:
        """The cursor in ``text``; InvalidArgument naming ``argument`` when it is not one."""
        try:
            if len(text) > MAX_CURSOR_CHARS:
                raise ValueError("too long")
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            doc = loads_bounded(raw)  # a forged cursor may nest deep: JsonTooDeep
            time_ns, streams = doc["t"], doc["s"]
            valid = (doc.get("v") == _VERSION and isinstance(time_ns, int)
                     and isinstance(streams, list) and all(isinstance(s, str) for s in streams))
        except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
            valid = False
        if not valid:
            raise InvalidArgument(argument, "not a cursor from a previous page (pass the "
                                  "nextCursor of that page unchanged)")
        return Cursor(time_ns, frozenset(streams))


@dataclass(frozen=True, slots=True)
class Page:
    """One page: its readings (oldest first), where the next starts, and whether more
    readings were already there when it was read."""

    readings: list[Reading]
    next_cursor: Cursor | None
    has_more: bool


def fetch_limit(first: int, cursor: Cursor | None) -> int:
    """How many readings to ask the store for: the page, one more to learn ``has_more``,
    and the ones at the cursor's instant that will be dropped."""
    return first + 1 + (len(cursor.streams) if cursor is not None else 0)


def start_ns(after_ns: int | None, cursor: Cursor | None) -> int | None:
    """Where the store query starts (inclusive): the later of ``after`` and the cursor."""
    if cursor is None:
        return after_ns
    return cursor.time_ns if after_ns is None else max(after_ns, cursor.time_ns)


def make_page(rows: Sequence[Reading], first: int, cursor: Cursor | None) -> Page:
    """The page out of ``rows`` (what the store returned for :func:`fetch_limit`)."""
    if cursor is not None:
        rows = [r for r in rows
                if not (r.time_ns == cursor.time_ns and r.stream in cursor.streams)]
    readings = list(rows[:first])
    has_more = len(rows) > first
    if not readings:
        return Page([], cursor, False)
    newest = readings[-1].time_ns
    at_newest = {r.stream for r in readings if r.time_ns == newest}
    if cursor is not None and cursor.time_ns == newest:
        at_newest |= cursor.streams
    return Page(readings, Cursor(newest, frozenset(at_newest)), has_more)
