"""GraphQL conventions clients rely on (issue 15, items 1-6), without sockets or a store.

Error codes by type, one error per mistake naming the argument, the token rule shared
by HTTP and WebSocket, unknown streams, the scalars and enums, and cursor paging. The
same behaviour through real clients: tests/test_real_clients.py.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
from collections.abc import Callable, Coroutine
from typing import Any

import pykka
import pytest
from graphql import ExecutionResult, GraphQLError, execute, parse

import tps.errors as errors_module
from tps.actors.board import StatsBoard
from tps.actors.stats import StreamStats
from tps.api.context import ApiContext, TokenAuth
from tps.api.graphql.cache import DocumentCache
from tps.api.graphql.connection import SubscriptionConnection
from tps.api.graphql.handler import GraphQLService
from tps.api.graphql.handshake import Access
from tps.api.graphql.known_streams import KnownStreams
from tps.api.graphql.paging import Cursor, make_page
from tps.api.graphql.results import (
    CodedExecutionContext,
    error_extensions,
    format_error,
    format_result,
)
from tps.api.graphql.scalars import Instant, _utc_instant, instant_ns, parse_instant
from tps.api.graphql.schema import RequestContext, build_schema
from tps.config import Settings
from tps.errors import (
    InvalidArgument,
    StoreUnavailable,
    StreamExists,
    TPSError,
    Unauthenticated,
    UnknownStream,
)
from tps.live import LiveHub
from tps.model import Reading
from tps.store.base import Store
from tps.timefmt import iso8601_to_ns, ns_to_iso8601

SCHEMA = build_schema().graphql_schema
CACHE = DocumentCache(SCHEMA)


# --- item 1: extensions.code by type -------------------------------------------------


def test_every_tps_error_class_declares_a_known_code() -> None:
    known = {"BAD_USER_INPUT", "UNAUTHENTICATED", "FORBIDDEN", "NOT_FOUND", "CONFLICT",
             "SERVICE_UNAVAILABLE", "INTERNAL_SERVER_ERROR"}
    classes = [c for _, c in inspect.getmembers(errors_module, inspect.isclass)
               if issubclass(c, TPSError)]
    assert len(classes) >= 10
    assert {c.__name__: c.code for c in classes if c.code not in known} == {}
    assert (UnknownStream.code, StreamExists.code, InvalidArgument.code,
            StoreUnavailable.code, Unauthenticated.code) == (
        "NOT_FOUND", "CONFLICT", "BAD_USER_INPUT", "SERVICE_UNAVAILABLE", "UNAUTHENTICATED")


def test_a_new_error_class_gets_its_code_and_limit_by_declaring_them() -> None:
    class RequestTooLarge(TPSError):
        code = "BAD_USER_INPUT"

        def __init__(self, limit: int) -> None:
            super().__init__(f"more than {limit} bytes")
            self.limit = limit

    assert error_extensions(RequestTooLarge(1024)) == {"code": "BAD_USER_INPUT", "limit": 1024}
    assert error_extensions(InvalidArgument("windowSize", "too big")) == {
        "code": "BAD_USER_INPUT", "argumentName": "windowSize"}
    assert error_extensions(pykka.ActorDeadError("gone"))["code"] == "SERVICE_UNAVAILABLE"


def _resolver_error(exc: Exception) -> dict[str, Any]:
    located = GraphQLError(str(exc), path=["field"], original_error=exc)
    return format_error(located)


def test_resolver_errors_are_coded_by_type_and_internals_never_leak() -> None:
    assert _resolver_error(UnknownStream("x"))["extensions"] == {"code": "NOT_FOUND"}
    unavailable = _resolver_error(StoreUnavailable("connection refused"))
    assert unavailable["extensions"] == {"code": "SERVICE_UNAVAILABLE"}
    assert unavailable["message"] == "store unavailable: connection refused"
    internal = _resolver_error(KeyError("secret internals"))
    assert internal == {"message": "internal error: KeyError", "path": ["field"],
                        "extensions": {"code": "INTERNAL_SERVER_ERROR"}}


@pytest.mark.parametrize(
    ("document", "code", "argument"),
    [
        ('{ temperatureStatistics(after: "yesterday") { count } }', "BAD_USER_INPUT", "after"),
        ("{ temperatureMeasurements(limit: 99999999999) { value } }", "BAD_USER_INPUT",
         "limit"),
        ('mutation { toggleFeed(input: {status: "sideways"}) { status } }', "BAD_USER_INPUT",
         "status"),
        ("{ temperatureMeasurements(limit: 1.5) { value } }", "BAD_USER_INPUT", "limit"),
        ("{ nosuchField }", "GRAPHQL_VALIDATION_FAILED", None),
        ("{ currentTemperature { ", "GRAPHQL_PARSE_FAILED", None),
    ],
)
def test_a_bad_document_gives_one_coded_error(document: str, code: str,
                                              argument: str | None) -> None:
    found = [format_error(e) for e in CACHE.build(document).errors]
    assert len(found) == 1, found
    assert found[0]["extensions"].get("code") == code
    assert found[0]["extensions"].get("argumentName") == argument
    if argument is not None:
        assert found[0]["message"].startswith(f"{argument}: ")


def test_a_bad_variable_is_bad_user_input_naming_the_variable() -> None:
    text = "query($a: DateTime) { temperatureStatistics(after: $a) { count } }"
    document = CACHE.get(text).document
    assert document is not None
    result = execute(SCHEMA, document, variable_values={"a": "yesterday"},
                     context_value=RequestContext(_api()),
                     execution_context_class=CodedExecutionContext)
    assert isinstance(result, ExecutionResult)
    answer = format_result(result)
    assert [e["extensions"] for e in answer["errors"]] == [
        {"code": "BAD_USER_INPUT", "variableName": "a"}]


# --- item 2 and 3: one token rule for HTTP and WebSocket ----------------------------------


def _api(hub: LiveHub | None = None, board: StatsBoard | None = None) -> ApiContext:
    return ApiContext(settings=Settings(), auth=TokenAuth("tok"), queries=None,
                      metrics=None, hub=hub, board=board)


def test_access_of_a_header_or_token() -> None:
    check = TokenAuth("tok").check_token
    assert Access.of_header(None, check) is Access.ANONYMOUS
    assert Access.of_header("Bearer tok", check) is Access.CONTROL
    assert Access.of_header("Bearer nope", check) is Access.WRONG_TOKEN
    assert Access.of_header("Basic dG9r", check) is Access.WRONG_TOKEN
    assert Access.of_token("tok", check) is Access.CONTROL


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize("access", [Access.ANONYMOUS, Access.WRONG_TOKEN])
def test_mutations_without_the_control_token_are_one_unauthenticated_error(
    access: Access,
) -> None:
    async def run() -> dict[str, Any]:
        service = GraphQLService(_api(), SCHEMA)
        parsed = service.cache.get('mutation { toggleFeed(input: {status: "off"}) { status } }')
        answer: dict[str, Any] = json.loads(
            await service.execute_async(parsed, None, None, access))
        return answer

    answer = _run(run())
    assert "data" not in answer
    assert [e["extensions"]["code"] for e in answer["errors"]] == ["UNAUTHENTICATED"]
    assert access.refusal() == answer["errors"][0]["message"]


class Wire:
    """In-memory socket: what the connection sent, and whether it closed."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    def send(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def _on_loop(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(fn())


def _connection(service: GraphQLService, wire: Wire, protocol: str) -> SubscriptionConnection:
    return SubscriptionConnection(
        protocol, send=wire.send, busy=lambda: False, close=wire.close,
        schema=service.schema, cache=service.cache, manager=service.subscriptions,
        executor=service.execute_async, check_token=service.ctx.auth.check_token,
        queue_limit=100, streams=service.streams)


def _message(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


@pytest.mark.parametrize(("protocol", "payload"), [
    ("graphql-transport-ws", {"token": "wrong"}),
    # What GraphiQL sends: its headers editor's content (tps/api/static/graphiql-init.js).
    ("graphql-transport-ws", {"Authorization": "Bearer wrong"}),
    ("graphql-ws", {"authToken": "wrong"}),
])
def test_a_wrong_token_in_connection_init_keeps_the_socket_for_reads(
    protocol: str, payload: dict[str, str]
) -> None:
    hub = LiveHub()
    hub.publish([Reading("s", 1, 20.5)])
    wire = Wire()
    subscribe = "subscribe" if protocol == "graphql-transport-ws" else "start"

    async def run() -> None:
        service = GraphQLService(_api(hub), SCHEMA)
        conn = _connection(service, wire, protocol)
        conn.on_message(_message("connection_init", payload=payload))
        conn.on_message(_message(subscribe, id="q", payload={
            "query": '{ currentTemperature(stream: "s") { value } }'}))
        conn.on_message(_message(subscribe, id="m", payload={
            "query": 'mutation { toggleFeed(input: {status: off}) { status } }'}))
        for _ in range(20):
            await asyncio.sleep(0)
        service.close()

    _on_loop(run)
    assert wire.closed is None
    assert wire.sent[0]["type"] == "connection_ack"
    by_id = {m.get("id"): m for m in wire.sent if m["type"] in ("next", "data")}
    assert by_id["q"]["payload"] == {"data": {"currentTemperature": {"value": 20.5}}}
    refused = by_id["m"]["payload"]["errors"]
    assert [e["extensions"]["code"] for e in refused] == ["UNAUTHENTICATED"]
    assert "not the control token" in refused[0]["message"]


# --- item 4: unknown streams ---------------------------------------------------------


class NamesOnly:
    """A query runner whose store knows some stream names."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.calls = 0

    async def run(self, fn: Callable[[Store], Any], timeout: float | None = None,
                  key: Any = None) -> Any:
        self.calls += 1

        class _Store:
            def stream_names(inner) -> list[str]:  # noqa: N805
                return list(self.names)

        return fn(_Store())  # type: ignore[arg-type]

    async def ping(self, timeout: float) -> bool:
        return True


def test_known_streams_come_from_the_board_the_hub_and_the_store() -> None:
    board = StatsBoard()
    board.add_stream(StreamStats("configured", "ws://h/x", "auto", "subscription { temperature }"))
    hub = LiveHub()
    hub.publish([Reading("live", 1, 1.0)])
    now = [0.0]
    queries = NamesOnly(["stored"])
    api = _api(hub, board)
    api.queries = queries
    known = KnownStreams(api, refresh_after=1.0, clock=lambda: now[0])

    async def run() -> None:
        for name in ("configured", "live", "stored", None):
            await known.require(name)
        assert queries.calls == 1
        for _ in range(5):
            with pytest.raises(UnknownStream):
                await known.require("nosuch")
        assert queries.calls == 1, "an unknown name asks the store at most once a second"
        queries.names.append("later")
        now[0] = 1.5
        await known.require("later")
        assert queries.calls == 2

    _run(run())


# --- item 5: scalars and enums ---------------------------------------------------------


def test_date_time_takes_iso_8601_and_epoch_nanoseconds_exactly() -> None:
    ns = 1_690_587_027_046_286_592
    assert instant_ns(parse_instant(ns)) == ns
    assert instant_ns(parse_instant(str(ns))) == ns
    assert instant_ns(parse_instant("2023-07-28T23:30:27.046286592Z")) == ns
    assert instant_ns(parse_instant("2023-07-28T13:00:00")) == 1_690_549_200_000_000_000
    assert instant_ns(parse_instant("20230728T130000Z")) == 1_690_549_200_000_000_000
    instant = parse_instant("2023-07-28T13:00:00+02:00")
    assert isinstance(instant, Instant) and instant.isoformat() == "2023-07-28T11:00:00+00:00"
    for bad in ("yesterday", True, 1.5, "1e9"):
        with pytest.raises(GraphQLError, match="ISO 8601"):
            parse_instant(bad)


def test_the_usual_utc_spelling_parses_as_the_general_path_does() -> None:
    """``2023-07-28T23:30:27.046Z`` and its kin are parsed straight into an Instant (the
    request hot path); the answer must be the general parser's, to the nanosecond."""
    rng = random.Random(10)
    cases = ["2023-07-28T23:30:27Z", "2023-07-28T23:30:27", "2023-07-28T23:30:27+00:00",
             "1970-01-01T00:00:00Z", "1969-12-31T23:59:59.999999999Z",
             "9999-12-31T23:59:59.999999999Z", "0001-01-01T00:00:00Z",
             "2024-02-29T12:00:00.5Z", "2023-02-29T12:00:00Z", "2023-07-28T24:00:00Z",
             "2023-13-01T00:00:00Z", "2023-07-28T23:59:60Z"]
    for _ in range(2000):
        ns = rng.randrange(-2 * 10**18, 4 * 10**18)
        text = ns_to_iso8601(ns)
        cases += [text, text[:-1], text[:-1] + "+00:00"]
    for text in cases:
        fast = _utc_instant(text)
        try:
            general = Instant.of(iso8601_to_ns(text))
        except ValueError:
            general = None
        if fast is None:  # not the usual spelling, or out of range: the general path
            continue
        assert general is not None, text
        assert type(fast) is Instant and fast.ns == general.ns, text
        assert fast == general and fast.isoformat() == general.isoformat(), text
        assert parse_instant(text).ns == general.ns
    assert _utc_instant("2023-07-28T23:30:27.046Z") is not None  # the path is taken
    assert _utc_instant("2023-07-28T13:00:00+02:00") is None


def _introspect(name: str) -> dict[str, Any]:
    query = ('{ __type(name: "NAME") { kind description enumValues { name } '
             "fields { name type { name kind ofType { name } } } } }")
    result = execute(SCHEMA, parse(query.replace("NAME", name)))
    assert isinstance(result, ExecutionResult) and result.data is not None
    found: dict[str, Any] = result.data["__type"]
    return found


def test_schema_types_that_clients_generate_code_from() -> None:
    assert [v["name"] for v in _introspect("FeedStatus")["enumValues"]] == ["on", "off"]
    assert [v["name"] for v in _introspect("FeedProtocol")["enumValues"]] == [
        "auto", "graphql_ws", "graphql_transport_ws", "json"]
    assert "subscribed" in [v["name"] for v in _introspect("StreamState")["enumValues"]]
    fields = {f["name"]: f["type"]["name"] or f["type"]["ofType"]["name"]
              for f in _introspect("Stream")["fields"]}
    assert (fields["id"], fields["received"], fields["state"], fields["protocol"]) == (
        "ID", "Counter", "StreamState", "FeedProtocol")
    assert "nanoseconds" in _introspect("DateTime")["description"]
    value = {f["name"]: f for f in _introspect("Temperature")["fields"]}
    assert value["value"]["type"]["ofType"]["name"] == "Float"
    described = execute(SCHEMA, parse('{ __type(name: "Temperature") { fields '
                                      "{ name description } } }"))
    assert isinstance(described, ExecutionResult) and described.data is not None
    descriptions = {f["name"]: f["description"] for f in described.data["__type"]["fields"]}
    assert "degrees Celsius" in descriptions["value"]


@pytest.mark.parametrize("status", ['"off"', '"OFF"', '" Off "', "off"])
def test_toggle_feed_status_takes_the_enum_and_the_strings_it_took_before(status: str) -> None:
    document = "mutation { toggleFeed(input: {status: STATUS}) { status } }".replace(
        "STATUS", status)
    assert CACHE.build(document).errors == ()


def test_protocol_variables_take_the_wire_spelling() -> None:
    text = "mutation($p: FeedProtocol) { addStream(input: {name: \"a\", url: \"ws://h/\", " \
           "protocol: $p}) { id } }"
    document = CACHE.get(text).document
    assert document is not None
    pending = execute(SCHEMA, document, variable_values={"p": "graphql-ws"},
                      context_value=RequestContext(_api()),
                      execution_context_class=CodedExecutionContext)
    assert inspect.isawaitable(pending)

    async def wait() -> Any:
        return await pending

    result = _run(wait())
    assert isinstance(result, ExecutionResult)
    # Coerced and run: refused only for lack of the token (the resolver's own check).
    assert result.errors is not None
    assert [format_error(e)["extensions"]["code"] for e in result.errors] == ["UNAUTHENTICATED"]


# --- item 6: cursor paging ---------------------------------------------------------------


def _reading(stream: str, time_ns: int) -> Reading:
    return Reading(stream, time_ns, float(time_ns))


def test_pages_split_ties_at_an_instant_without_repeats_or_gaps() -> None:
    stored = [_reading(s, t) for t in range(1, 6) for s in ("a", "b", "c")]  # 15, ties
    seen: list[Reading] = []
    cursor: Cursor | None = None
    pages = 0
    while True:
        start = cursor.time_ns if cursor else None
        rows = [r for r in stored if start is None or r.time_ns >= start]
        rows = rows[: 4 + 1 + (len(cursor.streams) if cursor else 0)]
        page = make_page(rows, 4, cursor)
        seen += page.readings
        pages += 1
        cursor = Cursor.decode(page.next_cursor.encode()) if page.next_cursor else None
        if not page.has_more:
            break
    assert seen == stored and pages == 4


def test_a_cursor_that_was_not_issued_is_bad_user_input() -> None:
    for text in ("nope", "", "eyJ2IjoyfQ"):
        with pytest.raises(InvalidArgument) as caught:
            Cursor.decode(text)
        assert caught.value.argument == "cursor"
