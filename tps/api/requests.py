"""What the HTTP layer believes about a request: who sent it, which host it was meant
for, and a JSON body that cannot exhaust the parser.

- :class:`TrustedProxies`: ``X-Forwarded-For`` names the client only when the request
  came from a proxy listed in ``TPS_TRUSTED_PROXIES``; otherwise anyone could write
  "stopped by 6.6.6.6" into the audit log.
- :class:`AllowedHosts`: with ``TPS_ALLOWED_HOSTS`` set, a request whose ``Host`` header
  is not listed is refused (421), so a web page that rebinds its own DNS name to
  TPS's address cannot read TPS through a browser.
- :func:`loads_bounded`: ``json.loads`` with a nesting limit (400, not a
  ``RecursionError`` and a 500).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
from collections.abc import Iterable
from typing import Any

import tornado.httputil

MAX_JSON_DEPTH = 32
"""Deepest JSON nesting accepted in a request body or websocket message (TPS's own
documents nest four levels at most)."""


class JsonTooDeep(ValueError):
    """A JSON document nests deeper than the limit."""


def loads_bounded(data: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads(data)``; JsonTooDeep when it nests deeper than ``max_depth``
    (ValueError, UnicodeDecodeError as ``json.loads`` raises them)."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise JsonTooDeep(f"JSON nested deeper than {max_depth} levels") from None
    if too_deep(value, max_depth):
        raise JsonTooDeep(f"JSON nested deeper than {max_depth} levels")
    return value


def too_deep(value: Any, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """True when ``value`` (decoded JSON) nests lists/objects deeper than ``max_depth``;
    iterative, and it only walks containers."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list):
                if depth >= max_depth:
                    return True
                stack.append((child, depth + 1))
    return False


def _networks(entries: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]").partition("%")[0])
    except ValueError:
        return None


class TrustedProxies:
    """Which peers may tell TPS who the client is (``TPS_TRUSTED_PROXIES``)."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self._networks = _networks(entries)

    def trusts(self, address: str | None) -> bool:
        """True when ``address`` is a trusted proxy."""
        parsed = _address(address or "")
        return parsed is not None and any(parsed in network for network in self._networks)

    def client_ip(self, request: tornado.httputil.HTTPServerRequest) -> str:
        """The client's address: the peer, or - when the peer is a trusted proxy - the
        nearest ``X-Forwarded-For`` hop that is not itself a trusted proxy."""
        peer = request.remote_ip or "unknown"
        if not self._networks or not self.trusts(peer):
            return peer
        hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",")
                if hop.strip()]
        for hop in reversed(hops):
            if _address(hop) is None:
                return peer  # a forged or garbled hop: believe only the proxy itself
            if not self.trusts(hop):
                return hop
        return hops[0] if hops else peer


class AllowedHosts:
    """The ``Host`` header names TPS answers (``TPS_ALLOWED_HOSTS``; empty: any)."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self._patterns = tuple(p.lower().strip("[]") for p in patterns)

    @property
    def restricted(self) -> bool:
        """True when a list is configured."""
        return bool(self._patterns)

    def allows(self, host_name: str) -> bool:
        """True when ``host_name`` (without port) is allowed."""
        name = host_name.lower().strip("[]").rstrip(".")
        return not self._patterns or any(fnmatch.fnmatchcase(name, p) for p in self._patterns)
