"""Wire framing and parsing of the feed protocols - plain code, no sockets.

A reader opens a websocket offering :func:`offered_subprotocols`, then builds the codec
for whatever the server picked with :func:`codec_for`. The codec gives the frames to
send on open and turns every received frame into exactly one outcome:

- :class:`Sample`: a temperature value (and the frame's own time, if it carried one);
- :class:`Control`: protocol chatter (ack, keep-alive, ping/pong), perhaps with a reply
  that must be sent back;
- :class:`ServerEndedError` (raised): the server ended the subscription or reported an error,
  so the reader must reconnect;
- :class:`~tps.errors.FrameError` (raised): the frame is rejected; ``reason`` is the
  metrics label and the reader keeps going.

Three protocols are spoken:

- legacy ``graphql-ws`` (Apollo's subscriptions-transport-ws, spoken by the original
  satellite-temperature server): ``connection_init``/``connection_ack``, ``start``,
  ``data``, ``ka``, ``error``, ``complete``, ``connection_error``;
- ``graphql-transport-ws`` (the graphql-ws library): ``connection_init``/
  ``connection_ack``, ``subscribe``, ``next``, ``error``, ``complete``, ``ping``/``pong``;
- no subprotocol: plain JSON objects such as ``{"value": 21.3}`` or
  ``{"time": "2024-01-01T00:00:00Z", "value": 21.3}``.

A GraphQL payload is ``{"data": {"temperature": 21.37}}``; the value is the first field
of ``data`` that is not a time, so custom documents (``subscription { t: temperature }``)
work too. A ``time`` or ``timestamp`` field beside it (ISO 8601 text, or epoch seconds,
milliseconds, microseconds or nanoseconds) becomes the reading's time. A value beyond
``MAX_VALUE`` is rejected (``bad_value``), and so is a time more than
``MAX_AHEAD_NS`` ahead of this clock is rejected (``bad_time``): readings are stamped
strictly increasing per stream, so one frame dated 2200 would date every later reading
of the stream 2200 too.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tps.errors import FrameError

LEGACY = "graphql-ws"
"""Apollo subscriptions-transport-ws protocol (what satellite-temperature speaks)."""
MODERN = "graphql-transport-ws"
"""The graphql-ws library's protocol."""
PLAIN = "json"
"""No subprotocol: one JSON object per frame."""

# Legacy servers take the FIRST subprotocol offered that they know and close with 1002
# on anything but graphql-ws; modern graphql-ws servers pick graphql-transport-ws
# wherever it appears. Offering legacy first therefore satisfies both.
AUTO_OFFER = (LEGACY, MODERN)
SUBSCRIPTION_ID = "1"
DEFAULT_MAX_FRAME_BYTES = 1 << 20
_TIME_KEYS = frozenset(("time", "timestamp"))


@dataclass(frozen=True, slots=True)
class Sample:
    """One value read from a frame; ``time_ns`` is set only if the frame carried a time."""

    value: float
    time_ns: int | None = None


@dataclass(frozen=True, slots=True)
class Control:
    """Protocol chatter: ``kind`` is ack, ka, ping or pong; ``reply`` must be sent back."""

    kind: str
    reply: str | None = None


Outcome = Sample | Control


class ServerEndedError(FrameError):
    """The server ended the subscription (error, complete, connection_error).

    The reader counts it under ``reason`` like a rejected frame, then reconnects.
    """


def offered_subprotocols(protocol: str) -> list[str]:
    """The subprotocols to offer for a feed's configured ``protocol``.

    ``auto`` offers both (legacy first); a pinned GraphQL protocol offers only itself;
    ``json`` offers none.
    """
    if protocol == "auto":
        return list(AUTO_OFFER)
    if protocol in (LEGACY, MODERN):
        return [protocol]
    if protocol == PLAIN:
        return []
    raise ValueError(f"unknown feed protocol {protocol!r}")


def codec_for(
    chosen: str | None,
    query: str,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    offered: list[str] | None = None,
) -> Codec:
    """The codec for the subprotocol the server chose (``None`` or empty: plain JSON).

    With ``offered``, a choice the client did not offer is rejected (``bad_protocol``).
    """
    chosen = (chosen or "").strip().lower() or None
    if chosen and offered is not None and chosen not in offered:
        raise FrameError("bad_protocol", f"server chose subprotocol {chosen!r}, "
                         f"which was not offered ({', '.join(offered) or 'none'})")
    if not chosen:
        return PlainJsonCodec(query, max_frame_bytes)
    if chosen == LEGACY:
        return LegacyCodec(query, max_frame_bytes)
    if chosen == MODERN:
        return TransportCodec(query, max_frame_bytes)
    raise FrameError("bad_protocol", f"server chose unknown subprotocol {chosen!r}")


class Codec:
    """Base of the per-connection codecs; one instance per websocket connection."""

    protocol = ""

    def __init__(self, query: str, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.query = query
        self.max_frame_bytes = max_frame_bytes
        self._handlers: dict[str, Callable[[dict[str, Any]], Outcome]] = {}

    def opening_frames(self) -> list[str]:
        """Frames to send right after the websocket opens, in order."""
        return []

    def handle(self, frame: str | bytes) -> Outcome:
        """Turn one received frame into an outcome (raises FrameError / ServerEndedError)."""
        message = decode(frame, self.max_frame_bytes)
        if not isinstance(message, dict):
            raise FrameError("bad_shape", f"expected a JSON object, got {_kind(message)}")
        kind = message.get("type")
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            raise FrameError("bad_shape", f"unexpected {self.protocol} message type {kind!r}")
        return handler(message)

    def _data(self, message: dict[str, Any]) -> Sample:
        if message.get("id") != SUBSCRIPTION_ID:
            raise FrameError("bad_shape", f"data for unknown subscription {message.get('id')!r}")
        payload = message.get("payload")
        if not isinstance(payload, dict):
            raise FrameError("bad_shape", f"payload must be an object, got {_kind(payload)}")
        data = payload.get("data")
        if type(data) is dict and len(data) == 1:
            # Fast path for the usual {"temperature": 21.37}; anything else takes the
            # general route below, which gives the precise rejection.
            (raw,) = data.values()
            if type(raw) is float and math.isfinite(raw):
                return Sample(raw)
        if data is None and payload.get("errors"):
            raise FrameError("graphql_error", f"GraphQL errors: {_errors(payload['errors'])}")
        if not isinstance(data, dict):
            raise FrameError("bad_shape", f"payload.data must be an object, got {_kind(data)}")
        return sample_from_object(data)

    def _ended(self, reason: str, what: str) -> Callable[[dict[str, Any]], Outcome]:
        def ended(message: dict[str, Any]) -> Outcome:
            detail = message.get("payload")
            suffix = f": {_errors(detail)}" if detail else ""
            raise ServerEndedError(reason, f"server sent {what}{suffix}")

        return ended


class LegacyCodec(Codec):
    """Apollo subscriptions-transport-ws (``graphql-ws``) client side."""

    protocol = LEGACY

    def __init__(self, query: str, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        super().__init__(query, max_frame_bytes)
        self._handlers = {
            "data": self._data,
            "ka": lambda _: Control("ka"),
            "connection_ack": lambda _: Control("ack"),
            "error": self._ended("server_error", "error"),
            "complete": self._ended("server_complete", "complete"),
            "connection_error": self._ended("connection_error", "connection_error"),
        }

    def opening_frames(self) -> list[str]:
        """``connection_init`` then ``start`` at once: legacy servers queue the start
        until the connection is initialised (satellite-temperature needs no init)."""
        start = {
            "id": SUBSCRIPTION_ID,
            "type": "start",
            "payload": {"query": self.query, "variables": {}},
        }
        return [json.dumps({"type": "connection_init", "payload": {}}), json.dumps(start)]


class TransportCodec(Codec):
    """graphql-ws (``graphql-transport-ws``) client side.

    ``subscribe`` is sent only after ``connection_ack``: the server closes the socket
    (4401) on a subscribe before the ack.
    """

    protocol = MODERN
    PING = json.dumps({"type": "ping"})

    def __init__(self, query: str, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        super().__init__(query, max_frame_bytes)
        subscribe = {"id": SUBSCRIPTION_ID, "type": "subscribe", "payload": {"query": query}}
        self._subscribe = json.dumps(subscribe)
        self._handlers = {
            "next": self._data,
            "connection_ack": lambda _: Control("ack", self._subscribe),
            "ping": lambda _: Control("ping", json.dumps({"type": "pong"})),
            "pong": lambda _: Control("pong"),
            "error": self._ended("server_error", "error"),
            "complete": self._ended("server_complete", "complete"),
        }

    def opening_frames(self) -> list[str]:
        """Only ``connection_init``; the subscribe is the reply to the ack."""
        return [json.dumps({"type": "connection_init", "payload": {}})]


class PlainJsonCodec(Codec):
    """No subprotocol: every frame is an object with a value and an optional time."""

    protocol = PLAIN

    def handle(self, frame: str | bytes) -> Outcome:
        """Parse ``{"value": 21.3}`` or ``{"time": ..., "value": 21.3}``."""
        message = decode(frame, self.max_frame_bytes)
        if not isinstance(message, dict):
            raise FrameError("bad_shape", f"expected a JSON object, got {_kind(message)}")
        return sample_from_object(message)


# --- parsing helpers -----------------------------------------------------------------


def decode(frame: str | bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Any:
    """Check the size of ``frame`` and parse it as JSON (FrameError on failure)."""
    size = len(frame)
    # A str has at most 4 UTF-8 bytes per character: encode only when it could matter.
    if isinstance(frame, str) and max_frame_bytes < size * 4:
        size = len(frame.encode("utf-8", "surrogatepass"))
    if size > max_frame_bytes:
        raise FrameError("too_large", f"frame of {size} bytes exceeds {max_frame_bytes} bytes")
    if isinstance(frame, bytes):
        # Decoding first is faster than json.loads(bytes), which sniffs the encoding.
        try:
            frame = frame.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("not_utf8", "frame is not valid UTF-8 text") from None
    try:
        return json.loads(frame)
    except (ValueError, RecursionError) as exc:
        raise FrameError("not_json", f"frame is not JSON: {_short(exc)}") from None


def sample_from_object(data: dict[str, Any]) -> Sample:
    """Take the value (``value`` or the first non-time field) and optional time."""
    if "value" in data:
        raw = data["value"]
        field = "value"
    else:
        field, raw = _first_value_field(data)
        if isinstance(raw, dict):
            # One level of nesting: subscription { reading { value time } }
            nested = sample_from_object(raw)
            if nested.time_ns is not None:
                return nested
            return Sample(nested.value, _time_of(data))
    return Sample(_value(field, raw), _time_of(data))


def _first_value_field(data: dict[str, Any]) -> tuple[str, Any]:
    for key, raw in data.items():
        if key not in _TIME_KEYS:
            return key, raw
    raise FrameError("bad_shape", "no value field in the message")


def _value(field: str, raw: Any) -> float:
    # bool is an int subclass: test it first so true/false are rejected, not read as 1/0.
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise FrameError("bad_value", f"{field} must be a number, got {_kind(raw)}")
    try:
        value = float(raw)
    except OverflowError:
        raise FrameError("bad_value", f"{field} is too large for a float") from None
    if not math.isfinite(value):
        raise FrameError("bad_value", f"{field} must be finite, got {value}")
    if abs(value) > MAX_VALUE:
        raise FrameError("bad_value", f"{field} must be within +/-{MAX_VALUE:g}, got {value:g}")
    return value


def _time_of(data: dict[str, Any]) -> int | None:
    for key in _TIME_KEYS:
        if key in data and data[key] is not None:
            return parse_time(data[key])
    return None


MAX_VALUE = 1e12
"""Largest magnitude of a reading's value. Beyond it the value is no measurement, and
sums of a few such values overflow a float: two readings of 1e308 crashed the writer's
rollups (``math.fsum``) on every restart, so no stream was stored any more."""

MAX_AHEAD_NS = 300 * 1_000_000_000
"""How far ahead of this machine's clock a frame's own time may be (clock skew)."""


_ISO_FRACTION = re.compile(r"^(.*T\d\d:\d\d:\d\d)\.(\d+)(.*)$")


def parse_time(raw: Any, now_ns: int | None = None) -> int:
    """A frame's time as epoch nanoseconds: ISO 8601 text, or an epoch number whose unit
    (s, ms, us, ns) is inferred from its magnitude. A naive ISO time is taken as UTC.
    FrameError ``bad_time`` for anything else, for a time not after 1970, and for one
    more than ``MAX_AHEAD_NS`` after ``now_ns`` (default: this clock)."""
    time_ns = _parse_time(raw)
    if time_ns <= 0:
        raise FrameError("bad_time", f"time {_short(raw)[:64]} is not after 1970")
    limit = (time.time_ns() if now_ns is None else now_ns) + MAX_AHEAD_NS
    if time_ns > limit:
        raise FrameError("bad_time", f"time {_short(raw)[:64]} is more than "
                         f"{MAX_AHEAD_NS // 1_000_000_000} s ahead of this clock")
    return time_ns


def _parse_time(raw: Any) -> int:
    if isinstance(raw, str):
        return _parse_iso(raw)
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise FrameError("bad_time", f"time must be ISO 8601 text or a number, got {_kind(raw)}")
    if not math.isfinite(raw) or raw <= 0:
        raise FrameError("bad_time", f"time must be a positive epoch number, got {raw}")
    magnitude = abs(raw)
    # Epoch now is ~1.7e9 s = 1.7e12 ms = 1.7e15 us = 1.7e18 ns; the thresholds sit far
    # from any plausible value of a neighbouring unit.
    if magnitude >= 1e17:
        return int(raw)
    if magnitude >= 1e14:
        return int(raw * 1_000)
    if magnitude >= 1e11:
        return int(raw * 1_000_000)
    return int(raw * 1_000_000_000)


def _parse_iso(text: str) -> int:
    fraction_ns = 0
    base = text.strip()
    match = _ISO_FRACTION.match(base)
    if match:
        # datetime keeps microseconds only; keep all nine digits of a nanosecond time.
        base = match.group(1) + match.group(3)
        digits = match.group(2)[:9]
        fraction_ns = int(digits.ljust(9, "0"))
    if base.endswith(("Z", "z")):
        base = base[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(base)
    except (ValueError, OverflowError):
        raise FrameError("bad_time", f"time {text[:64]!r} is not ISO 8601") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000_000 + fraction_ns


def _kind(raw: Any) -> str:
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "a bool"
    if isinstance(raw, str):
        return f"a string ({raw[:32]!r})"
    if isinstance(raw, list):
        return "an array"
    if isinstance(raw, dict):
        return "an object"
    return type(raw).__name__


def _errors(detail: Any) -> str:
    if isinstance(detail, list):
        parts = [_errors(item) for item in detail[:3]]
        return "; ".join(parts)
    if isinstance(detail, dict) and "message" in detail:
        return str(detail["message"])[:200]
    return _short(detail)


def _short(detail: Any) -> str:
    text = str(detail)
    return text if len(text) <= 200 else text[:197] + "..."


class Stamper:
    """Per-stream timestamps: receipt time unless the frame carried one, and always
    strictly greater than the previous timestamp of the stream.

    Strictly increasing times matter because the store's writes are idempotent on
    (stream, time): two readings with one timestamp would merge into one point.
    """

    def __init__(self, last_ns: int = 0) -> None:
        self.last_ns = last_ns

    def stamp(self, own_ns: int | None, now_ns: int) -> int:
        """The timestamp for a reading received at ``now_ns`` (``own_ns``: frame time)."""
        time_ns = now_ns if own_ns is None else own_ns
        if time_ns <= self.last_ns:
            time_ns = self.last_ns + 1
        self.last_ns = time_ns
        return time_ns
