"""Line protocol encoding of readings, and decoding TPS's own lines (no server)."""

from __future__ import annotations

import pytest

from tps.model import Reading
from tps.store.lineprotocol import (
    decode_readings,
    encode_reading,
    encode_readings,
    escape_tag_value,
    is_storable,
    line_prefix,
)

T0 = 1_690_587_027_046_286_592


def test_a_reading_becomes_measurement_tag_field_and_nanosecond_timestamp() -> None:
    assert encode_reading(Reading("sat-1", T0, 21.3)) == f"temperature,stream=sat-1 value=21.3 {T0}"


def test_a_batch_is_one_body_with_a_line_per_reading() -> None:
    body = encode_readings([Reading("a", 1, 1.0), Reading("b", 2, -2.5), Reading("a", 3, 1e16)])
    assert body == (b"temperature,stream=a value=1.0 1\n"
                    b"temperature,stream=b value=-2.5 2\n"
                    b"temperature,stream=a value=1e+16 3")


def test_an_empty_batch_is_an_empty_body() -> None:
    assert encode_readings([]) == b""


def test_values_are_written_as_floats_with_full_precision() -> None:
    for value in (0.1 + 0.2, -273.15, 1e-7, 123456.789012345, 2.0**-30):
        line = encode_reading(Reading("a", 0, value))
        assert float(line.split(" ")[1].removeprefix("value=")) == value


def test_integer_and_bool_values_are_still_written_as_floats() -> None:
    # A bare "1" is a float in line protocol, but "True" would be a boolean field.
    assert encode_reading(Reading("a", 0, 7)) == "temperature,stream=a value=7.0 0"
    assert encode_reading(Reading("a", 0, True)) == "temperature,stream=a value=1.0 0"


def test_negative_timestamps_are_kept() -> None:
    assert encode_reading(Reading("a", -5, 1.0)).endswith(" -5")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_rejected(value: float) -> None:
    with pytest.raises(ValueError, match="not a finite number"):
        encode_readings([Reading("a", 1, 1.0), Reading("a", 2, value)])


def test_a_non_integer_timestamp_is_rejected() -> None:
    with pytest.raises(ValueError, match="not an integer"):
        encode_readings([Reading("a", 1.5, 1.0)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        ("sat-1.a:b_c", "sat-1.a:b_c"),
        ("with space", "with\\ space"),
        ("comma,name", "comma\\,name"),
        ("key=value", "key\\=value"),
        ("back\\slash", "back\\slash"),
        ("'; DROP DATABASE tps", "';\\ DROP\\ DATABASE\\ tps"),
        ('"quoted"', '"quoted"'),
        ("température☃", "température☃"),
        (" =,", "\\ \\=\\,"),
    ],
)
def test_tag_values_escape_commas_equals_and_spaces_only(name: str, escaped: str) -> None:
    assert escape_tag_value(name) == escaped
    assert line_prefix(name) == f"temperature,stream={escaped} value="


@pytest.mark.parametrize("name", ["", "line\nbreak", "carriage\rreturn", "trailing\\"])
def test_names_influxdb_cannot_carry_are_refused(name: str) -> None:
    assert not is_storable(name)
    with pytest.raises(ValueError, match="stream name"):
        encode_readings([Reading(name, 1, 1.0)])


def test_names_with_backslashes_inside_are_storable() -> None:
    assert is_storable("a\\b")
    assert is_storable("a\\ b")
    assert is_storable("sat-1")


def test_decode_reads_back_what_encode_wrote() -> None:
    readings = [Reading("sat-1", 1_700_000_000_000_000_001, 21.5),
                Reading("odd, name=x", 1_700_000_000_000_000_002, -3.25),
                Reading("sat-1", 1_700_000_000_000_000_003, 1e-300)]
    assert decode_readings(encode_readings(readings)) == readings
    assert decode_readings(b"") == []


@pytest.mark.parametrize("body", [
    b"cpu,host=a value=1 1",  # another measurement
    b"temperature,stream=a value=1",  # no timestamp
    b"temperature,stream=a value=x 1",  # not a number
    b"temperature,stream=a value=1 1.5",  # not integer ns
    b"temperature,stream= value=1 1",  # empty tag
])
def test_decode_refuses_anything_but_tps_readings(body: bytes) -> None:
    with pytest.raises(ValueError):
        decode_readings(body)
