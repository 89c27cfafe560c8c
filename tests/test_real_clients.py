"""TPS as the clients users already have see it (issue 15, items 1-6).

A real ``tps serve`` (embedded store, two simulated feeds) is driven by the npm Apollo
Client 3 (HttpLink + GraphQLWsLink over graphql-ws), by the graphql-ws library's own
client (as GraphiQL uses it), both in node (``tests/peers/``), and by Python ``gql``.
Each node script prints what the client reported; the tests assert on that, i.e. on
what a user's code would see, not on the wire.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gql import Client as GqlClient
from gql import gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

from tests.support.peers import PEERS_DIR, require_node_peers
from tests.support.service import SimulatorProcess, TpsProcess
from tests.support.wait import wait_until

TOKEN = "clients-token"


@pytest.fixture(scope="module")
def tps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TpsProcess]:
    tmp = tmp_path_factory.mktemp("clients")
    simulator = SimulatorProcess(tmp, interval=0.05).start()
    service = TpsProcess(tmp, {
        "TPS_FEEDS": f"sat1={simulator.url('sat1')},sat2={simulator.url('sat2')}",
        "TPS_CONTROL_TOKEN": TOKEN, "TPS_FLUSH_INTERVAL": "0.2",
    })
    try:
        service.start()

        def stored() -> bool:
            answer = service.graphql(
                '{ temperatureMeasurements(stream: "sat1", last: 20) { value } }')
            return len((answer.get("data") or {}).get("temperatureMeasurements") or []) >= 20

        wait_until(stored, 30, what="20 stored readings of sat1")
        yield service
    finally:
        service.close()
        simulator.close()


def _node(script: str, config: dict[str, Any]) -> dict[str, Any]:
    node = require_node_peers()
    proc = subprocess.run([node, str(PEERS_DIR / script), json.dumps(config)],
                          capture_output=True, text=True, timeout=120, cwd=PEERS_DIR)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads(lines[-1])
    return result


@pytest.fixture(scope="module")
def apollo(tps: TpsProcess) -> dict[str, Any]:
    return _node("apollo-client.js", {"http": tps.url + "/graphql",
                                      "ws": tps.url.replace("http", "ws") + "/graphql",
                                      "token": TOKEN, "stream": "sat1"})


def _codes(error: dict[str, Any]) -> list[str]:
    return [e["extensions"].get("code") for e in error["graphQLErrors"]]


def test_apollo_reads_the_current_temperature(apollo: dict[str, Any]) -> None:
    current = apollo["current"]
    assert current["ok"], current
    assert current["value"]["currentTemperature"]["stream"] == "sat1"


def test_apollo_sees_one_bad_user_input_error_naming_the_argument(
    apollo: dict[str, Any],
) -> None:
    """Item 1: extensions.code and the argument's name; one error for one mistake."""
    for key in ("badDateTime",):
        error = apollo[key]["error"]
        assert error["networkError"] is None, error
        assert len(error["graphQLErrors"]) == 1, error
        assert _codes(error) == ["BAD_USER_INPUT"]
        assert error["graphQLErrors"][0]["extensions"]["argumentName"] == "after"
    variable = apollo["badDateTimeVariable"]["error"]
    assert _codes(variable) == ["BAD_USER_INPUT"]
    assert variable["graphQLErrors"][0]["extensions"]["variableName"] == "after"


def test_apollo_accepts_epoch_nanoseconds_as_a_date_time(apollo: dict[str, Any]) -> None:
    """Item 5: DateTime takes the epoch nanoseconds a user pastes from InfluxDB."""
    assert apollo["epochNanos"]["ok"], apollo["epochNanos"]
    assert apollo["epochNanos"]["value"]["temperatureStatistics"]["count"] > 0


def test_apollo_sees_unauthenticated_as_a_graphql_error_not_a_network_error(
    apollo: dict[str, Any],
) -> None:
    """Item 2: a mutation without (or with a wrong) token is 200 + UNAUTHENTICATED."""
    for key in ("mutationWithoutToken", "mutationWithWrongToken"):
        error = apollo[key]["error"]
        assert error["networkError"] is None, error
        assert _codes(error) == ["UNAUTHENTICATED"], error
        assert "control token" in error["graphQLErrors"][0]["message"]


def test_apollo_sees_not_found_for_an_unknown_stream(apollo: dict[str, Any]) -> None:
    """Item 4: over HTTP and over the subscription socket."""
    assert _codes(apollo["unknownStream"]["error"]) == ["NOT_FOUND"]
    subscription = apollo["subscriptionToUnknownStream"]
    assert not subscription["ok"] and "timeout" not in subscription, subscription
    errors = subscription["error"].get("errors") or subscription["error"]["graphQLErrors"]
    assert [e["extensions"].get("code") for e in errors] == ["NOT_FOUND"]


def test_apollo_cache_normalises_streams_by_id_with_enum_states(apollo: dict[str, Any]) -> None:
    """Item 5: Stream.id, stream(name:), enums and the Counter scalar."""
    streams = apollo["streams"]["value"]["streams"]
    assert {s["id"] for s in streams} == {"sat1", "sat2"}
    assert all(s["state"] in {"connecting", "subscribed", "backoff", "stopped", "failed"}
               for s in streams)
    assert all(isinstance(s["received"], int) and s["received"] > 0 for s in streams)
    assert {s["protocol"] for s in streams} == {"auto"}
    assert apollo["streamByName"]["value"]["stream"]["id"] == "sat1"
    assert {"Stream:sat1", "Stream:sat2"} <= set(apollo["cacheKeys"])


def test_apollo_toggles_a_feed_with_the_enum_and_with_the_string(apollo: dict[str, Any]) -> None:
    """Item 5: toggleFeed's status is an enum; the README's "off" string still works."""
    off = apollo["toggleOff"]
    assert off["ok"], off
    assert off["value"]["toggleFeed"]["status"] == "off"
    assert off["value"]["toggleFeed"]["streams"] == [
        {"__typename": "Stream", "id": "sat1", "state": "stopped"}]
    on = apollo["toggleOnWithString"]
    assert on["ok"], on
    assert on["value"]["toggleFeed"]["status"] == "on"


def test_apollo_subscription_reads_despite_a_wrong_token(apollo: dict[str, Any]) -> None:
    """Item 3: a wrong token in connection_init still reads; a mutation over that socket
    is refused with an error Apollo shows."""
    event = apollo["subscriptionWithWrongToken"]
    assert event["ok"], event
    assert event["value"]["temperature"]["stream"] == "sat1"
    refused = apollo["mutationOverSocketWithWrongToken"]
    assert not refused["ok"], refused
    assert _codes(refused["error"]) == ["UNAUTHENTICATED"], refused


def test_apollo_pages_through_measurements_without_gaps_or_repeats(
    apollo: dict[str, Any],
) -> None:
    """Item 6: cursor paging with hasMore."""
    pages = [p["value"]["temperatureMeasurementsPage"] for p in apollo["pages"]]
    assert len(pages) == 3
    readings = [r for page in pages for r in page["readings"]]
    assert len(readings) == 15
    times = [r["time"] for r in readings]
    assert times == sorted(times) and len(set(times)) == 15
    assert all(page["hasMore"] and page["nextCursor"] for page in pages)


def test_graphql_ws_client_keeps_the_socket_with_a_wrong_token(tps: TpsProcess) -> None:
    """Item 3 with the graphql-ws library's client (what GraphiQL runs)."""
    result = _node("graphql-ws-client.js", {"ws": tps.url.replace("http", "ws") + "/graphql",
                                            "token": TOKEN, "stream": "sat2"})
    assert result["readWithWrongToken"]["result"]["data"]["temperature"]["stream"] == "sat2"
    mutation = result["mutationWithWrongToken"]["result"]
    assert [e["extensions"]["code"] for e in mutation["errors"]] == ["UNAUTHENTICATED"]
    assert [e["extensions"]["code"] for e in result["unknownStream"]["errors"]] == ["NOT_FOUND"]
    assert result["queryAfterErrors"]["result"]["data"]["streams"]
    # The server never closed the socket (it used to with 4403); the library itself may
    # close with 1000 when its last operation ends, and reconnects for the next one.
    assert {c["code"] for c in result["closesWhileInUse"]} <= {1000}, result
    assert result["mutationWithToken"]["result"]["data"]["toggleFeed"]["status"] == "on"


def test_python_gql_reads_codes_from_transport_query_errors(tps: TpsProcess) -> None:
    """Items 1, 3 and 4 with Python gql's websockets transport and a wrong token."""

    async def run() -> list[list[dict[str, Any]]]:
        transport = WebsocketsTransport(url=tps.url.replace("http", "ws") + "/graphql",
                                        init_payload={"token": "wrong"})
        found: list[list[dict[str, Any]]] = []
        async with GqlClient(transport=transport, fetch_schema_from_transport=False) as s:
            async for _event in s.subscribe(gql("subscription { temperature { value } }")):
                break
            for document in ('mutation { toggleFeed(input: {status: "off"}) { status } }',
                             "{ temperatureMeasurements(limit: 0) { value } }",
                             'subscription { temperature(stream: "nosuch") { value } }'):
                try:
                    await s.execute(gql(document))
                except TransportQueryError as exc:
                    assert exc.errors is not None
                    found.append(exc.errors)
        return found

    unauthenticated, bad_input, not_found = asyncio.run(asyncio.wait_for(run(), 30))
    assert unauthenticated[0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert bad_input[0]["extensions"] == {"code": "BAD_USER_INPUT", "argumentName": "limit"}
    assert not_found[0]["extensions"]["code"] == "NOT_FOUND"


def test_tail_of_an_unknown_stream_says_so(tps: TpsProcess, tmp_path: Path) -> None:
    """Item 4: ``tps tail --stream nosuch`` fails with NOT_FOUND's message, exit 1."""
    import sys

    proc = subprocess.run([sys.executable, "-m", "tps", "tail", "--stream", "nosuch",
                           "--count", "1", "--server", tps.url],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc
    assert "no stream named 'nosuch'" in proc.stderr


@pytest.mark.parametrize("headers", [{"Authorization": "Bearer wrong"}, {}])
def test_graphiql_subscription_answers_after_a_wrong_header(
    tps: TpsProcess, headers: dict[str, str]
) -> None:
    """Item 3: GraphiQL's own fetcher (the page's gqlws.js) with a wrong Authorization
    header gets subscription events instead of hanging; its mutation gets a 200 with
    UNAUTHENTICATED, which GraphiQL shows."""
    result = _node("graphiql-fetcher.js", {"http": tps.url + "/graphql", "headers": headers})
    assert "timeout" not in result["subscription"], result
    assert result["subscription"]["value"]["data"]["temperature"]["stream"] in {"sat1", "sat2"}
    errors = result["unknownStream"]["value"]["errors"]
    assert [e["extensions"]["code"] for e in errors] == ["NOT_FOUND"]
    assert result["mutation"]["status"] == 200
    assert [e["extensions"]["code"] for e in result["mutation"]["body"]["errors"]] == [
        "UNAUTHENTICATED"]
    assert not any(s.startswith("offline") for s in result["statuses"]), result["statuses"]
