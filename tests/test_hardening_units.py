"""Issue 14's plain parts, tested directly (no sockets but the ones they open
themselves): the feed-destination rules, redaction, log escaping, the request budget,
chunked JSON, proxies and hosts, JSON nesting, the data-dir lock."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from graphql import OperationDefinitionNode, parse

from tps.api.graphql.budget import Budget, RequestCost, check_budget, request_cost
from tps.api.graphql.offload import dump_chunks
from tps.api.graphql.schema import build_schema
from tps.api.requests import AllowedHosts, JsonTooDeep, TrustedProxies, loads_bounded, too_deep
from tps.config import Settings
from tps.datadir import DataDirLock
from tps.errors import DataDirInUse, FeedRefused, RequestTooLarge
from tps.feeds.destinations import Endpoint, FeedDestinations, parse_allow, special_kind
from tps.logging_setup import log_safe
from tps.redact import redact_url

SCHEMA = build_schema().graphql_schema


# --- feed destinations -------------------------------------------------------------------


def _resolver(table: dict[str, list[str]]) -> Any:
    def resolve(host: str, port: int, *_: object) -> list[tuple[Any, ...]]:
        if host not in table:
            raise socket.gaierror(f"unknown host {host}")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port)) for a in table[host]]

    return resolve


LOCAL = {ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "10.1.2.3")}
DNS = _resolver({
    "feeds.example.org": ["93.184.216.34"],
    "rebound.example.org": ["127.0.0.1"],
    "mixed.example.org": ["127.0.0.1", "93.184.216.34"],
    "meta.example.org": ["169.254.169.254"],
    "self.example.org": ["10.1.2.3"],
    "influx": ["10.9.9.9"],
    "localhost": ["127.0.0.1", "::1"],
})


def _policy(allow: tuple[str, ...] = ("*",), protected: tuple[Endpoint, ...] = ()
            ) -> FeedDestinations:
    return FeedDestinations(allow, protected, resolver=DNS,
                            is_local=lambda a: a in LOCAL or a.is_loopback or a.is_unspecified)


def _allowed(policy: FeedDestinations, url: str) -> list[str]:
    return [str(t.sockaddr[0]) for t in policy.resolve(url)]


def test_special_addresses_are_named_and_wrapped_forms_are_seen_through() -> None:
    for address, kind in [("127.0.0.1", "loopback"), ("::1", "loopback"),
                          ("::ffff:127.0.0.1", "loopback"), ("64:ff9b::7f00:1", "loopback"),
                          ("169.254.169.254", "metadata"), ("fd00:ec2::254", "metadata"),
                          ("169.254.1.1", "link-local"), ("fe80::1", "link-local"),
                          ("0.0.0.0", "unspecified"), ("0.1.2.3", "unspecified"),
                          ("224.0.0.1", "multicast")]:
        assert kind in (special_kind(ipaddress.ip_address(address)) or ""), address
    for address in ("93.184.216.34", "10.0.0.1", "192.168.1.1", "2001:db8::1"):
        assert special_kind(ipaddress.ip_address(address)) is None


def test_loopback_needs_an_explicit_entry_and_a_wildcard_is_not_one() -> None:
    refusing: list[tuple[str, ...]] = [("*",), ("*.example.org",), ("*", "0.0.0.0/0"),
                                       ("127.*",)]
    for allow in refusing:
        with pytest.raises(FeedRefused, match="loopback"):
            _policy((*allow, "*")).resolve("ws://rebound.example.org/x")
    allowing: list[tuple[str, ...]] = [("*", "127.0.0.1"), ("*", "127.0.0.0/8"),
                                       ("rebound.example.org",), ("*", "127.0.0.1:4000")]
    for allow in allowing:
        assert _allowed(_policy(allow), "ws://rebound.example.org:4000/x") == ["127.0.0.1"]
    with pytest.raises(FeedRefused):  # the entry names another port
        _policy(("*", "127.0.0.1:4000")).resolve("ws://rebound.example.org:4001/x")


def test_only_allowed_addresses_of_a_name_are_connected_to() -> None:
    assert _allowed(_policy(), "ws://mixed.example.org/") == ["93.184.216.34"]
    assert _allowed(_policy(("*", "localhost")), "ws://localhost:80/") == ["127.0.0.1", "::1"]


def test_metadata_addresses_need_their_exact_address() -> None:
    for allow in [("*",), ("*", "169.254.0.0/16"), ("*", "0.0.0.0/0")]:
        with pytest.raises(FeedRefused, match="metadata"):
            _policy(allow).resolve("ws://meta.example.org/")
    assert _allowed(_policy(("*", "169.254.169.254")), "ws://meta.example.org/") == [
        "169.254.169.254"]


def test_the_store_and_tps_itself_are_never_allowed() -> None:
    store = Endpoint("the store (TPS_INFLUX_URL)", "influx", 8086)
    itself = Endpoint("TPS's own HTTP API", "0.0.0.0", 8000)
    policy = _policy(("*", "127.0.0.0/8", "10.0.0.0/8", "localhost"), (store, itself))
    for url in ("ws://influx:8086/query?q=DROP", "ws://10.9.9.9:8086/"):
        with pytest.raises(FeedRefused, match="the store"):
            policy.resolve(url)
    # TPS listens on every address: any local address at its port is TPS.
    for url in ("ws://127.0.0.1:8000/graphql", "ws://localhost:8000/", "ws://[::1]:8000/",
                "ws://self.example.org:8000/"):
        with pytest.raises(FeedRefused, match="own HTTP API"):
            policy.resolve(url)
    assert _allowed(policy, "ws://10.9.9.9:4000/") == ["10.9.9.9"]
    assert _allowed(policy, "ws://127.0.0.1:8001/") == ["127.0.0.1"]


def test_a_local_store_protects_its_port_on_every_local_address() -> None:
    store = Endpoint("the store (TPS_INFLUX_URL)", "localhost", 8086)
    policy = _policy(("*", "127.0.0.0/8", "10.0.0.0/8"), (store,))
    with pytest.raises(FeedRefused, match="the store"):
        policy.resolve("ws://10.1.2.3:8086/")  # a local address, not the one configured
    assert _allowed(policy, "ws://10.1.2.4:8086/") == ["10.1.2.4"]


def test_the_precheck_decides_what_needs_no_dns() -> None:
    store = Endpoint("the store (TPS_INFLUX_URL)", "127.0.0.1", 8086)
    policy = _policy(("*", "127.0.0.1"), (store,))
    with pytest.raises(FeedRefused, match="the store"):
        policy.precheck("ws://127.0.0.1:8086/query")
    with pytest.raises(FeedRefused, match="loopback name"):
        policy.precheck("ws://localhost:4000/")
    with pytest.raises(FeedRefused, match="TPS_FEED_ALLOW"):
        _policy(("*.example.org",)).precheck("ws://other.net/")
    policy.precheck("ws://127.0.0.1:4000/")
    policy.precheck("ws://2130706433:8086/")  # a name: decided after DNS, at connect


def test_allow_entries_are_parsed_or_refused_by_name() -> None:
    entries = parse_allow(["*.example.org", "10.0.0.0/8", "::1", "[::1]:4000", "h:99"])
    assert [(e.pattern, str(e.network), e.port) for e in entries] == [
        ("*.example.org", "None", None), (None, "10.0.0.0/8", None), (None, "::1/128", None),
        (None, "::1/128", 4000), ("h", "None", 99)]
    for bad in ("h:0", "h:x", "a/b", "user@h", "[::1"):
        with pytest.raises(ValueError):
            parse_allow([bad])


def test_the_service_protects_what_its_settings_name() -> None:
    settings = Settings(influx_url="http://db.internal:8086", http_host="0.0.0.0", http_port=0)
    policy = FeedDestinations.from_settings(settings, http_port=8123)
    assert [(e.host, e.port) for e in policy.protected] == [("db.internal", 8086),
                                                             ("0.0.0.0", 8123)]


# --- redaction and log lines --------------------------------------------------------------


@pytest.mark.parametrize(("url", "shown"), [
    ("ws://alice:pw@h:1/x?apikey=s&v=2#frag", "ws://***@h:1/x?apikey=***&v=***"),
    ("wss://token@h/x", "wss://***@h/x"),
    ("ws://h/x?secret", "ws://h/x?secret=***"),
    ("ws://h:4000/graphql", "ws://h:4000/graphql"),
])
def test_urls_are_shown_without_credentials_or_query_values(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_log_values_cannot_forge_lines_or_repaint_a_terminal() -> None:
    assert log_safe("a\r\nb\x1b[31mc\x9b\u2028\td") == "a\\r\\nb\\x1b[31mc\\x9b\\u2028\\td"
    assert log_safe("plain text, ünïcode") == "plain text, ünïcode"


# --- the request budget -------------------------------------------------------------------


def _cost(text: str, variables: dict[str, Any] | None = None) -> tuple[int, int]:
    document = parse(text)
    op = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
    cost = request_cost(SCHEMA, document, op, variables or {})
    return cost.rows, cost.aliases


def test_rows_add_up_over_fields_aliases_fragments_and_variables() -> None:
    assert _cost("{ temperatureMeasurements { value } }") == (10_000, 0)
    assert _cost("{ a: temperatureMeasurements(limit: 5) { value } "
                 "b: temperatureMeasurements(last: 7) { value } "
                 "averageTemperature(windowSize: 30) { value } currentTemperature { value } }"
                 ) == (5 + 7 + 30, 2)
    assert _cost("query ($n: Int) { temperatureMeasurements(limit: $n) { value } }",
                 {"n": 123}) == (123, 0)
    assert _cost("{ ...F ...F } fragment F on Query { x: temperatureMeasurements(limit: 100) "
                 "{ t: value } }") == (200, 4)


def test_a_request_over_budget_names_the_limit() -> None:
    budget = Budget(max_rows=1000, max_aliases=2)
    for text, limit in [("{ a: streams { name } b: streams { name } c: streams { name } }",
                         "TPS_MAX_ALIASES"),
                        ("{ temperatureMeasurements(limit: 1001) { value } }",
                         "TPS_MAX_REQUEST_ROWS")]:
        with pytest.raises(RequestTooLarge) as info:
            check_budget(RequestCost(*_cost(text)), budget)
        assert info.value.setting == limit and limit in str(info.value)


def test_chunked_json_is_the_same_text_in_pieces() -> None:
    value = {"data": {"a": [{"t": i, "v": [1, 2]} for i in range(1000)], "b": None,
                      "c": {"n": list(range(700))}}, "errors": [{"message": "x"}]}
    pieces = dump_chunks(value, max_items=100)
    assert "".join(pieces) == json.dumps(value, separators=(",", ":"))
    assert len(pieces) > 10 and max(len(p) for p in pieces) < 3000


# --- HTTP request rules -----------------------------------------------------------------


class _Request:
    def __init__(self, peer: str, forwarded: str | None = None) -> None:
        self.remote_ip = peer
        self.headers = {"X-Forwarded-For": forwarded} if forwarded else {}


def test_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    assert proxies.client_ip(_Request("1.2.3.4", "6.6.6.6")) == "1.2.3.4"  # type: ignore[arg-type]
    assert proxies.client_ip(_Request("10.0.0.5", "6.6.6.6")) == "6.6.6.6"  # type: ignore[arg-type]
    # A client may prepend anything: the nearest untrusted hop is the client.
    assert proxies.client_ip(_Request("10.0.0.5", "6.6.6.6, 7.7.7.7, 10.0.0.9")) == "7.7.7.7"  # type: ignore[arg-type]
    assert proxies.client_ip(_Request("10.0.0.5", "not-an-ip")) == "10.0.0.5"  # type: ignore[arg-type]
    assert TrustedProxies().client_ip(_Request("10.0.0.5", "6.6.6.6")) == "10.0.0.5"  # type: ignore[arg-type]


def test_allowed_hosts_match_names_without_port() -> None:
    hosts = AllowedHosts(["tps.example.org", "*.tps.internal", "[::1]"])
    assert hosts.allows("TPS.example.org") and hosts.allows("a.tps.internal")
    assert hosts.allows("[::1]") and not hosts.allows("evil.example")
    assert AllowedHosts().allows("anything")


def test_json_nesting_is_bounded() -> None:
    assert loads_bounded('{"a": [[1]]}') == {"a": [[1]]}
    for scalar in ("null", "1", '"x"', "true"):
        assert loads_bounded(scalar) == json.loads(scalar)
    for text in ("[" * 100_000, "[" * 40 + "]" * 40, '{"a":' * 40 + "1" + "}" * 40):
        with pytest.raises(JsonTooDeep):
            loads_bounded(text)
    assert not too_deep([[0]] * 10_000, 3)


# --- the data dir lock ----------------------------------------------------------------------


def test_a_second_lock_on_a_data_dir_names_the_holder(tmp_path: Path) -> None:
    first = DataDirLock.acquire(tmp_path)
    try:
        with pytest.raises(DataDirInUse) as info:
            DataDirLock.acquire(tmp_path)
        assert info.value.pid == os.getpid() and f"pid {os.getpid()}" in str(info.value)
    finally:
        first.release()
    DataDirLock.acquire(tmp_path).release()  # free again once released
