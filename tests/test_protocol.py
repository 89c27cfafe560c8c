"""Feed wire protocols: framing, parsing and every kind of bad frame (no sockets)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tps.errors import FrameError
from tps.feeds.protocol import (
    LEGACY,
    MAX_AHEAD_NS,
    MODERN,
    PLAIN,
    Control,
    LegacyCodec,
    PlainJsonCodec,
    Sample,
    ServerEndedError,
    Stamper,
    TransportCodec,
    codec_for,
    offered_subprotocols,
    parse_time,
)

QUERY = "subscription { temperature }"


def data(value: object, kind: str = "data", **extra: object) -> str:
    return json.dumps({"id": "1", "type": kind, "payload": {"data": {"temperature": value,
                                                                       **extra}}})


def rejected(codec: object, frame: str | bytes) -> str:
    with pytest.raises(FrameError) as info:
        codec.handle(frame)  # type: ignore[attr-defined]
    assert str(info.value), "every rejection explains itself"
    return info.value.reason


# --- negotiation -----------------------------------------------------------------------


def test_auto_offers_legacy_first_then_transport_ws() -> None:
    assert offered_subprotocols("auto") == ["graphql-ws", "graphql-transport-ws"]


@pytest.mark.parametrize("pinned", ["graphql-ws", "graphql-transport-ws"])
def test_a_pinned_protocol_offers_only_itself(pinned: str) -> None:
    assert offered_subprotocols(pinned) == [pinned]


def test_json_protocol_offers_no_subprotocol() -> None:
    assert offered_subprotocols("json") == []


@pytest.mark.parametrize(("chosen", "protocol"), [
    ("graphql-ws", LEGACY), ("graphql-transport-ws", MODERN), (None, PLAIN), ("", PLAIN),
    ("GraphQL-WS", LEGACY),
])
def test_the_codec_follows_the_servers_choice(chosen: str | None, protocol: str) -> None:
    assert codec_for(chosen, QUERY).protocol == protocol


def test_a_subprotocol_that_was_not_offered_is_refused() -> None:
    with pytest.raises(FrameError) as info:
        codec_for("graphql-transport-ws", QUERY, offered=["graphql-ws"])
    assert info.value.reason == "bad_protocol"


# --- legacy graphql-ws -------------------------------------------------------------------


def test_legacy_opens_with_init_then_start_of_the_feeds_query() -> None:
    init, start = (json.loads(f) for f in LegacyCodec("subscription { t: temperature }")
                   .opening_frames())
    assert init == {"type": "connection_init", "payload": {}}
    assert start["type"] == "start" and start["id"] == "1"
    assert start["payload"]["query"] == "subscription { t: temperature }"


def test_legacy_data_becomes_a_sample() -> None:
    assert LegacyCodec(QUERY).handle(data(21.37)) == Sample(21.37)


def test_legacy_ack_and_keepalive_are_control_messages() -> None:
    codec = LegacyCodec(QUERY)
    assert codec.handle('{"type": "connection_ack"}') == Control("ack")
    assert codec.handle('{"type": "ka"}') == Control("ka")


@pytest.mark.parametrize(("frame", "reason"), [
    ('{"type": "error", "id": "1", "payload": {"message": "boom"}}', "server_error"),
    ('{"type": "complete", "id": "1"}', "server_complete"),
    ('{"type": "connection_error", "payload": {"message": "no"}}', "connection_error"),
])
def test_legacy_error_complete_and_connection_error_end_the_stream(
    frame: str, reason: str
) -> None:
    with pytest.raises(ServerEndedError) as info:
        LegacyCodec(QUERY).handle(frame)
    assert info.value.reason == reason


def test_legacy_server_error_message_is_kept_for_the_log() -> None:
    with pytest.raises(ServerEndedError, match="Cannot query field"):
        LegacyCodec(QUERY).handle(json.dumps(
            {"type": "error", "id": "1", "payload": {"message": "Cannot query field x"}}))


# --- graphql-transport-ws ----------------------------------------------------------------


def test_transport_ws_opens_with_init_only_and_subscribes_on_ack() -> None:
    codec = TransportCodec(QUERY)
    assert [json.loads(f) for f in codec.opening_frames()] == [
        {"type": "connection_init", "payload": {}}]
    ack = codec.handle('{"type": "connection_ack"}')
    assert isinstance(ack, Control) and ack.kind == "ack" and ack.reply is not None
    assert json.loads(ack.reply) == {"id": "1", "type": "subscribe",
                                     "payload": {"query": QUERY}}


def test_transport_ws_answers_ping_with_pong() -> None:
    ping = TransportCodec(QUERY).handle('{"type": "ping"}')
    assert isinstance(ping, Control) and ping.reply == '{"type": "pong"}'
    assert TransportCodec(QUERY).handle('{"type": "pong"}') == Control("pong")


def test_transport_ws_next_becomes_a_sample() -> None:
    assert TransportCodec(QUERY).handle(data(-3.5, kind="next")) == Sample(-3.5)


@pytest.mark.parametrize(("frame", "reason"), [
    ('{"type": "error", "id": "1", "payload": [{"message": "bad"}]}', "server_error"),
    ('{"type": "complete", "id": "1"}', "server_complete"),
])
def test_transport_ws_error_and_complete_end_the_stream(frame: str, reason: str) -> None:
    with pytest.raises(ServerEndedError) as info:
        TransportCodec(QUERY).handle(frame)
    assert info.value.reason == reason


# --- plain JSON ----------------------------------------------------------------------------


def test_plain_json_value_frame() -> None:
    assert PlainJsonCodec(QUERY).handle('{"value": 21.3}') == Sample(21.3)
    assert PlainJsonCodec(QUERY).opening_frames() == []


def test_plain_json_frame_with_its_own_time() -> None:
    sample = PlainJsonCodec(QUERY).handle('{"time": "2024-01-02T03:04:05Z", "value": 7}')
    assert sample == Sample(7.0, 1_704_164_645_000_000_000)


def test_bytes_frames_are_parsed_like_text() -> None:
    assert PlainJsonCodec(QUERY).handle(b'{"value": 1.5}') == Sample(1.5)


# --- payload shapes and times ---------------------------------------------------------------


def test_the_first_field_of_data_is_the_value_so_aliases_work() -> None:
    frame = '{"id": "1", "type": "data", "payload": {"data": {"temp": 19.5}}}'
    assert LegacyCodec("subscription { temp: temperature }").handle(frame) == Sample(19.5)


def test_a_time_field_beside_the_value_is_the_readings_time() -> None:
    frame = data(20.0, timestamp=1_700_000_000_123)
    assert LegacyCodec(QUERY).handle(frame) == Sample(20.0, 1_700_000_000_123_000_000)


def test_a_time_field_before_the_value_is_not_taken_for_the_value() -> None:
    frame = '{"id": "1", "type": "data", "payload": {"data": {"time": 1700000000, "t": 1.0}}}'
    assert LegacyCodec(QUERY).handle(frame) == Sample(1.0, 1_700_000_000_000_000_000)


def test_a_nested_reading_object_is_understood() -> None:
    frame = json.dumps({"id": "1", "type": "next", "payload": {"data": {
        "reading": {"value": 3.25, "time": "2024-01-01T00:00:00+00:00"}}}})
    assert TransportCodec(QUERY).handle(frame) == Sample(3.25, 1_704_067_200_000_000_000)


@pytest.mark.parametrize(("raw", "expected"), [
    (1_700_000_000, 1_700_000_000_000_000_000),              # seconds
    (1_700_000_000.5, 1_700_000_000_500_000_000),            # fractional seconds
    (1_700_000_000_123, 1_700_000_000_123_000_000),          # milliseconds
    (1_700_000_000_123_456, 1_700_000_000_123_456_000),      # microseconds
    (1_700_000_000_123_456_789, 1_700_000_000_123_456_789),  # nanoseconds
    ("2023-11-14T22:13:20.123456789Z", 1_700_000_000_123_456_789),
    ("2023-11-14T22:13:20+00:00", 1_700_000_000_000_000_000),
    ("2023-11-14T23:13:20.5+01:00", 1_700_000_000_500_000_000),
    ("2023-11-14T22:13:20", 1_700_000_000_000_000_000),      # naive: taken as UTC
])
def test_frame_times_in_every_accepted_form(raw: object, expected: int) -> None:
    assert parse_time(raw) == expected


@pytest.mark.parametrize("raw", [
    "yesterday", True, [1], -5, float("nan"),
    # Out of range for a 64-bit time (the reader crashed on each), or so far ahead that
    # every later reading of the stream would be stamped after it (issue 14).
    1e30, 2**70, "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z",
    "2200-01-01T00:00:00Z",
])
def test_an_unreadable_time_is_rejected_as_bad_time(raw: object) -> None:
    with pytest.raises(FrameError) as info:
        parse_time(raw)
    assert info.value.reason == "bad_time"


def test_a_frame_time_may_be_ahead_of_this_clock_by_the_allowed_skew_only() -> None:
    now = 1_700_000_000_000_000_000
    assert parse_time(now + MAX_AHEAD_NS, now_ns=now) == now + MAX_AHEAD_NS
    with pytest.raises(FrameError):
        parse_time(now + MAX_AHEAD_NS + 1, now_ns=now)


# --- bad input (issue 2) ---------------------------------------------------------------------

ALL_CODECS = [LegacyCodec(QUERY), TransportCodec(QUERY), PlainJsonCodec(QUERY)]


@pytest.mark.parametrize("codec", ALL_CODECS, ids=lambda c: c.protocol)
@pytest.mark.parametrize("frame", ["not json", "{", "", "{'single': 'quotes'}"])
def test_non_json_frames_are_rejected_as_not_json(codec: object, frame: str) -> None:
    assert rejected(codec, frame) == "not_json"


def test_invalid_utf8_is_rejected_as_not_utf8() -> None:
    assert rejected(PlainJsonCodec(QUERY), b'{"value": "\xff\xfe"}') == "not_utf8"


@pytest.mark.parametrize("codec", ALL_CODECS, ids=lambda c: c.protocol)
@pytest.mark.parametrize("frame", ["[1, 2]", '"text"', "21.5", "null", "{}"])
def test_json_of_the_wrong_shape_is_rejected_as_bad_shape(codec: object, frame: str) -> None:
    assert rejected(codec, frame) == "bad_shape"


@pytest.mark.parametrize("frame", [
    '{"type": "mystery"}',
    '{"type": 5}',
    '{"id": "1", "type": "data"}',
    '{"id": "1", "type": "data", "payload": []}',
    '{"id": "1", "type": "data", "payload": {"data": [21.0]}}',
    '{"id": "1", "type": "data", "payload": {"data": {}}}',
    '{"id": "1", "type": "data", "payload": {"data": {"time": 1700000000}}}',
    '{"id": "7", "type": "data", "payload": {"data": {"temperature": 1.0}}}',
])
def test_graphql_messages_of_the_wrong_shape_are_rejected_as_bad_shape(frame: str) -> None:
    assert rejected(LegacyCodec(QUERY), frame) == "bad_shape"


@pytest.mark.parametrize("value", ['"21.3"', "true", "false", "null", "NaN", "Infinity",
                                   "-Infinity", "1e999", '{"x": "warm"}', "[21.3]"])
@pytest.mark.parametrize("kind", ["graphql-ws", "graphql-transport-ws", "json"])
def test_a_temperature_that_is_not_a_finite_number_is_rejected_as_bad_value(
    value: str, kind: str
) -> None:
    if kind == "json":
        frame = '{"value": ' + value + "}"
        codec: object = PlainJsonCodec(QUERY)
    else:
        msg_type = "data" if kind == "graphql-ws" else "next"
        frame = ('{"id": "1", "type": "' + msg_type + '", "payload": {"data": {"temperature": '
                 + value + "}}}")
        codec = codec_for(kind, QUERY)
    assert rejected(codec, frame) == "bad_value"


def test_a_huge_integer_is_rejected_as_bad_value_not_a_crash() -> None:
    assert rejected(PlainJsonCodec(QUERY), '{"value": ' + "9" * 400 + "}") == "bad_value"


@pytest.mark.parametrize("value", ["1e308", "-1e308", "1.0000001e12", "-2e12"])
def test_a_value_beyond_the_magnitude_limit_is_rejected_as_bad_value(value: str) -> None:
    """Two readings of 1e308 overflowed the writer's rollup sums (``math.fsum``): the
    writer crashed on every restart and nothing was stored any more (issue 14)."""
    assert rejected(PlainJsonCodec(QUERY), '{"value": ' + value + "}") == "bad_value"
    assert PlainJsonCodec(QUERY).handle('{"value": -1e12}') == Sample(-1e12, None)


@pytest.mark.parametrize("codec", ALL_CODECS, ids=lambda c: c.protocol)
def test_a_frame_over_one_mebibyte_is_rejected_as_too_large(codec: object) -> None:
    frame = '{"value": 1.0, "pad": "' + "x" * (1 << 20) + '"}'
    assert rejected(codec, frame) == "too_large"
    assert rejected(codec, frame.encode()) == "too_large"


def test_a_frame_of_exactly_the_limit_is_accepted() -> None:
    head = '{"value": 1.0}'
    frame = head + " " * ((1 << 20) - len(head))
    assert PlainJsonCodec(QUERY).handle(frame) == Sample(1.0)


def test_the_size_limit_counts_utf8_bytes_not_characters() -> None:
    frame = '{"value": 1.0, "pad": "' + "\u00e9" * 600 + '"}'  # 1200 bytes, ~630 chars
    assert rejected(PlainJsonCodec(QUERY, max_frame_bytes=1024), frame) == "too_large"


def test_graphql_errors_without_data_are_rejected_as_graphql_error() -> None:
    frame = '{"id": "1", "type": "next", "payload": {"errors": [{"message": "nope"}]}}'
    assert rejected(TransportCodec(QUERY), frame) == "graphql_error"


def test_a_rejected_frame_leaves_the_codec_usable() -> None:
    codec = LegacyCodec(QUERY)
    rejected(codec, "garbage")
    rejected(codec, data("hot"))
    assert codec.handle(data(22.0)) == Sample(22.0)


# --- timestamps ---------------------------------------------------------------------------


def test_readings_are_stamped_on_receipt_when_the_frame_has_no_time() -> None:
    assert Stamper().stamp(None, 1_000) == 1_000


def test_timestamps_are_strictly_increasing_even_when_receipt_times_tie() -> None:
    stamper = Stamper()
    times = [stamper.stamp(None, 5_000) for _ in range(3)]
    assert times == [5_000, 5_001, 5_002]


def test_an_own_time_in_the_past_is_moved_just_after_the_previous_one() -> None:
    stamper = Stamper()
    own = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp()) * 10**9
    assert stamper.stamp(own, 10**19) == own
    assert stamper.stamp(own - 10, 10**19) == own + 1


def test_a_stamper_continues_after_a_previous_last_time() -> None:
    assert Stamper(last_ns=100).stamp(None, 50) == 101
