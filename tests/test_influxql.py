"""InfluxQL statements are built only from quoted literals, identifiers and integers."""

from __future__ import annotations

import pytest

from tps.store import influxql
from tps.store.influxql import (
    MAX_TIME_NS,
    MIN_TIME_NS,
    clamp_window,
    quote_ident,
    quote_string,
    where_clause,
)

HOSTILE = [
    "'; DROP DATABASE tps",
    "' OR '1'='1",
    "back\\slash",
    "trailing\\",
    "\\'",
    "\\\\'",
    'double"quote',
    ".*",
    "/^a|b$/",
    "température☃温度",
    "new\nline",
    "\"; DROP DATABASE \"tps",
    "",
]


def scan_string(text: str) -> tuple[str, str]:
    """InfluxQL's string scanner (influxql/scanner.go ScanString): (value, rest).

    Reimplemented here so the tests check that a literal decodes back to exactly the
    input and ends exactly where the quoting function says it does.
    """
    quote, i = text[0], 1
    out: list[str] = []
    while True:
        ch = text[i]
        if ch == quote:
            return "".join(out), text[i + 1:]
        if ch == "\n":
            raise ValueError("bad string: raw newline")
        if ch == "\\":
            nxt = text[i + 1]
            escapes = {"n": "\n", "\\": "\\", '"': '"', "'": "'"}
            if nxt not in escapes:
                raise ValueError(f"bad escape \\{nxt}")
            out.append(escapes[nxt])
            i += 2
            continue
        out.append(ch)
        i += 1


@pytest.mark.parametrize("name", HOSTILE)
def test_a_string_literal_decodes_back_to_exactly_the_input(name: str) -> None:
    literal = quote_string(name)
    value, rest = scan_string(literal + " AND x")
    assert value == name
    assert rest == " AND x"


@pytest.mark.parametrize("name", [n for n in HOSTILE if n])
def test_an_identifier_decodes_back_to_exactly_the_input(name: str) -> None:
    value, rest = scan_string(quote_ident(name) + " rest")
    assert (value, rest) == (name, " rest")


def test_quoting_examples() -> None:
    assert quote_string("it's") == "'it\\'s'"
    assert quote_string("a\\b") == "'a\\\\b'"
    assert quote_string("a\nb") == "'a\\nb'"
    assert quote_ident('my "db"') == '"my \\"db\\""'


def test_a_carriage_return_cannot_be_quoted() -> None:
    with pytest.raises(ValueError, match="carriage return"):
        quote_string("a\rb")


def test_non_strings_are_not_quoted() -> None:
    with pytest.raises(TypeError):
        quote_string(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        quote_ident("")


def test_where_clause_is_empty_for_an_open_window_of_all_streams() -> None:
    assert where_clause() == ""


def test_where_clause_compares_time_as_bare_integer_nanoseconds() -> None:
    assert where_clause(1_690_587_027_046_286_592, 1_690_587_049_086_376_960, "sat'1") == (
        " WHERE \"stream\" = 'sat\\'1' AND time >= 1690587027046286592"
        " AND time <= 1690587049086376960")


@pytest.mark.parametrize("bad", ["1 OR 1=1", 1.5, True])
def test_times_must_be_real_integers(bad: object) -> None:
    with pytest.raises(TypeError, match="after_ns must be an integer"):
        where_clause(bad, None)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["10; DROP DATABASE tps", 2.0, False])
def test_limits_must_be_real_integers(bad: object) -> None:
    with pytest.raises(TypeError, match="limit must be an integer"):
        influxql.select_measurements(None, None, None, newest=False, limit=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="window_size must be an integer"):
        influxql.select_average(bad, None)  # type: ignore[arg-type]


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit must be at least 1"):
        influxql.select_measurements(None, None, None, newest=False, limit=0)
    with pytest.raises(ValueError, match="window_size must be at least 1"):
        influxql.select_average(-3, None)


def test_clamp_window_opens_bounds_beyond_influxdb_range() -> None:
    assert clamp_window(-(2**70), 2**70) == (None, None)
    assert clamp_window(5, 10) == (5, 10)
    assert clamp_window(None, None) == (None, None)
    assert clamp_window(MIN_TIME_NS + 1, MAX_TIME_NS - 1) == (MIN_TIME_NS + 1, MAX_TIME_NS - 1)


@pytest.mark.parametrize(("after", "before"), [(10, 5), (MAX_TIME_NS + 1, None),
                                               (None, MIN_TIME_NS - 1)])
def test_clamp_window_refuses_windows_that_hold_nothing(after: int | None,
                                                         before: int | None) -> None:
    with pytest.raises(ValueError, match="window"):
        clamp_window(after, before)


def test_current_statements() -> None:
    assert influxql.select_current("a") == (
        "SELECT \"value\" FROM \"temperature\" WHERE \"stream\" = 'a' ORDER BY time DESC LIMIT 1")
    assert influxql.select_current(None) == (
        'SELECT "value" FROM "temperature" GROUP BY "stream" ORDER BY time DESC LIMIT 1')


def test_statistics_statement_asks_for_all_four_aggregates_at_once() -> None:
    assert influxql.select_statistics(1, None, None) == (
        'SELECT MIN("value"), MAX("value"), MEAN("value"), COUNT("value") FROM "temperature"'
        " WHERE time >= 1")


def test_measurement_statements_select_the_stream_and_order_by_time() -> None:
    assert influxql.select_measurements(None, 9, "a", newest=False, limit=5) == (
        "SELECT \"value\", \"stream\" FROM \"temperature\" WHERE \"stream\" = 'a' AND time <= 9"
        " ORDER BY time ASC LIMIT 5")
    assert influxql.select_measurements(None, None, None, newest=True, limit=3).endswith(
        " ORDER BY time DESC LIMIT 3")


def test_average_statement_is_a_mean_over_the_newest_rows() -> None:
    assert influxql.select_average(100, "a") == (
        "SELECT MEAN(\"value\") FROM (SELECT \"value\", \"stream\" FROM \"temperature\" WHERE "
        "\"stream\" = 'a' ORDER BY time DESC LIMIT 100) ORDER BY time DESC")


def test_hostile_names_stay_inside_their_literal_in_every_statement() -> None:
    name = "x' OR time > 0 OR 'a'='a"
    for statement in (
        influxql.select_current(name),
        influxql.select_statistics(None, None, name),
        influxql.select_measurements(None, None, name, newest=False, limit=1),
        influxql.select_average(1, name),
        influxql.select_count(name),
    ):
        _, _, tail = statement.partition('"stream" = ')
        value, rest = scan_string(tail)
        assert value == name
        assert " OR " not in rest, statement


def test_database_names_are_quoted_identifiers() -> None:
    assert influxql.create_database('tps"; DROP') == 'CREATE DATABASE "tps\\"; DROP"'
    assert influxql.show_streams() == 'SHOW TAG VALUES FROM "temperature" WITH KEY = "stream"'
