"""Where a feed may connect: the one check, made after DNS resolution, on every connect.

A feed URL comes from an operator (``TPS_FEEDS``, the registry) or from an API caller
with the control token. Left unchecked, a reader's handshake is a GET that TPS sends
wherever the URL points - to InfluxDB's ``/query?q=DROP DATABASE ...``, to TPS's own
``/graphql`` (an echo loop), to a cloud metadata service. So before every connect
(the first, and every reconnect: DNS may answer differently each time, which is what
DNS rebinding relies on) :meth:`FeedDestinations.connect` resolves the host, drops every
address that is not allowed, and connects to an allowed address itself; the
websocket handshake then runs on that socket with the URL's own Host header and TLS
server name. What was checked is what is connected to.

The rules, in order:

1. **Never**: the configured store (``TPS_INFLUX_URL``'s host and port), TPS's own HTTP
   address, and any other endpoint the service protects (:meth:`from_settings`). An
   endpoint on this machine protects its port on every local address.
2. ``TPS_FEED_ALLOW`` must match: host-name patterns (fnmatch, ``*.example.org``) match
   the URL's host; addresses and networks (``10.0.0.0/8``, ``::1``) match the
   resolved addresses; any entry may end in ``:port``.
3. Loopback, link-local, unspecified, multicast and cloud-metadata addresses are
   refused unless an entry names them *explicitly*: an exact host name (``localhost``,
   no wildcard) equal to the URL's host, an exact address, or a network that lies
   wholly inside one such kind (``127.0.0.0/8``; a metadata address needs its exact
   ``/32``). ``*`` never grants them.

Redirects are not this module's business: the reader tells websocket-client to follow
none (``redirect_limit=0``), so a 3xx cannot lead the handshake past these checks.

Plain code: no threads, no state besides the policy; the resolver and the
"is this address local?" test are injectable for tests.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tps.errors import FeedRefused

if TYPE_CHECKING:
    from tps.config.settings import Settings

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[..., list[tuple[Any, ...]]]

METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle, ...
    "169.254.170.2",  # AWS ECS task metadata
    "169.254.170.23",  # AWS EKS pod identity
    "fd00:ec2::254",  # AWS IMDS over IPv6
    "fd00:ec2::23",  # AWS EKS pod identity over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "168.63.129.16",  # Azure wire server
    "192.0.0.192",  # Oracle Cloud (legacy)
))
"""Cloud metadata services: refused unless ``TPS_FEED_ALLOW`` names the exact address."""

_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # Linux connects 0.x.x.x to this host
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_WILDCARDS = frozenset("*?[")
_DEFAULT_PORTS = {"ws": 80, "wss": 443, "http": 80, "https": 443, "nats": 4222, "tls": 4222}


def unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped or NAT64 (64:ff9b::/96) IPv6 address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def special_kind(address: IPAddress) -> str | None:
    """What makes ``address`` off limits by default, or None for an ordinary address."""
    address = unwrap(address)
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified or address in _THIS_NETWORK:
        return "an unspecified address (this host)"
    if address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255"):
        return "a multicast or broadcast address"
    return None


def is_local_address(address: IPAddress) -> bool:
    """True when ``address`` belongs to this machine: loopback, unspecified, or an
    address a socket can bind to (the kernel's own list of local addresses)."""
    address = unwrap(address)
    if address.is_loopback or address.is_unspecified or address in _THIS_NETWORK:
        return True
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


def _split_port(text: str) -> tuple[str, int | None]:
    """``host:port``, ``[v6]:port``, ``host`` -> (host, port or None)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad bracketed address {text!r}")
        return host, _port(rest[1:]) if rest else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, _port(port)
    return text, None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port {text!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class AllowEntry:
    """One ``TPS_FEED_ALLOW`` entry: a host-name pattern or an address/network, and
    optionally a port."""

    text: str
    pattern: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> AllowEntry:
        """Parse one entry; ValueError names what is wrong."""
        raw = text.strip()
        if not raw:
            raise ValueError("empty entry")
        try:
            return cls(raw, network=ipaddress.ip_network(raw, strict=False))
        except ValueError:
            pass
        host, port = _split_port(raw)
        try:
            return cls(raw, network=ipaddress.ip_network(host, strict=False), port=port)
        except ValueError:
            pass
        if not host or any(c.isspace() or c in "/@" for c in host):
            raise ValueError(f"not a host pattern, address or network: {raw!r}")
        return cls(raw, pattern=host.lower(), port=port)

    def _port_ok(self, port: int) -> bool:
        return self.port is None or self.port == port

    def matches_host(self, host: str, port: int) -> bool:
        """A host-name pattern that matches ``host`` (and the port, when it names one)."""
        return (self.pattern is not None and self._port_ok(port)
                and fnmatch.fnmatchcase(host.lower(), self.pattern))

    def names_host(self, host: str, port: int) -> bool:
        """An exact host name (no wildcard) equal to ``host``: names it explicitly."""
        return (self.pattern is not None and self._port_ok(port)
                and not _WILDCARDS & set(self.pattern) and self.pattern == host.lower())

    def covers(self, address: IPAddress, port: int) -> bool:
        """An address or network holding ``address`` (and the port, when it names one)."""
        if self.network is None or not self._port_ok(port):
            return False
        return address in self.network or unwrap(address) in self.network

    def names_address(self, address: IPAddress, port: int) -> bool:
        """Covers ``address`` and lies wholly inside its special kind (``127.0.0.0/8``
        names loopback; ``0.0.0.0/0`` names nothing): names it explicitly."""
        if not self.covers(address, port):
            return False
        assert self.network is not None
        kind = special_kind(address)
        return (special_kind(self.network.network_address) == kind
                and special_kind(self.network.broadcast_address) == kind)


def parse_allow(entries: Iterable[str]) -> tuple[AllowEntry, ...]:
    """``TPS_FEED_ALLOW`` as entries; ValueError names the first bad one."""
    return tuple(AllowEntry.parse(entry) for entry in entries)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Something no feed may connect to: ``what`` it is, its host and port."""

    what: str
    host: str
    port: int

    @classmethod
    def from_url(cls, what: str, url: str) -> Endpoint | None:
        """The endpoint a URL points at (None when it has no host)."""
        parts = urlsplit(url)
        if not parts.hostname:
            return None
        try:
            port = parts.port
        except ValueError:
            return None
        return cls(what, parts.hostname.lower(), port or _DEFAULT_PORTS.get(parts.scheme, 80))


@dataclass(frozen=True, slots=True)
class Target:
    """An allowed address of a feed: what ``socket.connect`` takes."""

    family: int
    sockaddr: tuple[Any, ...]


class FeedDestinations:
    """The feed-destination policy (see the module docstring).

    ``allow`` is ``TPS_FEED_ALLOW``; ``protected`` the endpoints no feed may reach.
    """

    def __init__(
        self,
        allow: Sequence[str] = ("*",),
        protected: Sequence[Endpoint] = (),
        *,
        resolver: Resolver = socket.getaddrinfo,
        is_local: Callable[[IPAddress], bool] = is_local_address,
    ) -> None:
        self.allow = parse_allow(allow)
        self.protected = tuple(protected)
        self._resolve = resolver
        self._is_local = is_local

    @classmethod
    def from_settings(cls, settings: Settings, http_port: int | None = None) -> FeedDestinations:
        """The policy for ``settings``: the store, TPS's HTTP address (``http_port``: the
        port actually bound, when ``TPS_HTTP_PORT`` is 0) and, in cluster mode, the NATS
        servers are protected."""
        protected: list[Endpoint] = []
        if settings.influx_url:
            store = Endpoint.from_url("the store (TPS_INFLUX_URL)", settings.influx_url)
            if store is not None:
                protected.append(store)
        port = settings.http_port if http_port is None else http_port
        if port:
            protected.append(Endpoint("TPS's own HTTP API", settings.http_host.lower() or
                                      "0.0.0.0", port))
        for url in settings.nats_url:  # cluster mode
            nats = Endpoint.from_url("a NATS server (TPS_NATS_URL)", url)
            if nats is not None:
                protected.append(nats)
        return cls(settings.feed_allow, protected)

    # --- the checks ------------------------------------------------------------------

    def precheck(self, url: str) -> None:
        """What can be decided without DNS (an API caller gets the answer at once): the
        host-name patterns, and every rule for an address literal or ``localhost``.
        Raises FeedRefused; a host name that resolves is checked again at connect."""
        host, port = _host_port(url)
        literal = _literal(host)
        if literal is not None:
            self._check_address(host, port, literal)
            return
        self._check_protected_name(host, port)
        if _is_localhost_name(host):
            if not any(entry.names_host(host, port) for entry in self.allow):
                raise FeedRefused(f"{host} is a loopback name; TPS_FEED_ALLOW must name it "
                                  "explicitly")
            return
        if not self._host_allowed(host, port) and not any(e.network for e in self.allow):
            raise FeedRefused(f"host {host!r} is not allowed by TPS_FEED_ALLOW "
                              f"({self._allow_text()})")

    def resolve(self, url: str) -> list[Target]:
        """Resolve the URL's host and keep the allowed addresses, in resolver order.

        Raises FeedRefused (naming each address and why) when none is allowed, and
        OSError (``socket.gaierror``) when the name does not resolve.
        """
        host, port = _host_port(url)
        self._check_protected_name(host, port)
        literal = _literal(host)
        if literal is not None:  # an address needs no resolver
            family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
            infos: list[tuple[Any, ...]] = [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP,
                                             "", (host, port))]
        else:
            infos = self._resolve(host, port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        targets: list[Target] = []
        refusals: list[str] = []
        seen: set[IPAddress] = set()
        for family, _type, _proto, _name, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
            if address in seen:
                continue
            seen.add(address)
            try:
                self._check_address(host, port, address)
            except FeedRefused as exc:
                refusals.append(exc.reason)
                continue
            targets.append(Target(family, tuple(sockaddr)))
        if not targets:
            raise FeedRefused("; ".join(refusals) or f"{host} resolved to no address")
        return targets

    def connect(self, url: str, timeout: float) -> socket.socket:
        """A socket connected to an allowed address of the URL's host (TLS-wrapped with
        the URL's host as server name for ``wss://``). Raises FeedRefused, or OSError
        when no allowed address accepts the connection."""
        parts = urlsplit(url)
        error: OSError | None = None
        for target in self.resolve(url):
            sock = socket.socket(target.family, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.connect(target.sockaddr)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            if parts.scheme == "wss":
                try:
                    return _tls_context().wrap_socket(sock, server_hostname=parts.hostname)
                except (OSError, ssl.SSLError):
                    sock.close()
                    raise
            return sock
        assert error is not None
        raise error

    # --- rules -------------------------------------------------------------------------

    def _check_protected_name(self, host: str, port: int) -> None:
        for endpoint in self.protected:
            if endpoint.port == port and endpoint.host == host.lower():
                raise FeedRefused(f"{host}:{port} is {endpoint.what}")

    def _check_address(self, host: str, port: int, address: IPAddress) -> None:
        self._check_protected_address(address, port)
        if not (self._host_allowed(host, port)
                or any(entry.covers(address, port) for entry in self.allow)):
            raise FeedRefused(f"{_shown(host, address)} is not allowed by TPS_FEED_ALLOW "
                              f"({self._allow_text()})")
        kind = special_kind(address)
        if kind is not None and not (
            any(entry.names_host(host, port) for entry in self.allow)
            or any(entry.names_address(address, port) for entry in self.allow)
        ):
            raise FeedRefused(f"{_shown(host, address)} is {kind}; TPS_FEED_ALLOW must name "
                              "it explicitly")

    def _check_protected_address(self, address: IPAddress, port: int) -> None:
        for endpoint in self.protected:
            if endpoint.port != port:
                continue
            addresses = self._endpoint_addresses(endpoint)
            plain = unwrap(address)
            if plain in addresses or (
                any(self._is_local(a) for a in addresses) and self._is_local(plain)
            ):
                raise FeedRefused(f"{address}:{port} is {endpoint.what}")

    def _endpoint_addresses(self, endpoint: Endpoint) -> set[IPAddress]:
        literal = _literal(endpoint.host)
        if literal is not None:
            return {unwrap(literal)}
        if _is_localhost_name(endpoint.host):
            return {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
        try:
            infos = self._resolve(endpoint.host, endpoint.port, 0, socket.SOCK_STREAM,
                                  socket.IPPROTO_TCP)
        except (OSError, UnicodeError) as exc:
            logger.debug("Cannot resolve %s (%s) for the feed check: %s", endpoint.host,
                         endpoint.what, exc)
            return set()
        return {unwrap(ipaddress.ip_address(str(info[4][0]).partition("%")[0]))
                for info in infos}

    def _host_allowed(self, host: str, port: int) -> bool:
        return any(entry.matches_host(host, port) for entry in self.allow)

    def _allow_text(self) -> str:
        return ", ".join(entry.text for entry in self.allow) or "empty"


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if not parts.hostname:
        raise FeedRefused("the URL has no host")
    try:
        port = parts.port
    except ValueError:
        raise FeedRefused("the URL has a bad port") from None
    return parts.hostname, port or _DEFAULT_PORTS.get(parts.scheme, 80)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None


def _is_localhost_name(host: str) -> bool:
    """``localhost`` and ``*.localhost`` always mean this host (RFC 6761)."""
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def _shown(host: str, address: IPAddress) -> str:
    return str(address) if host == str(address) else f"{host} ({address})"


def _tls_context() -> ssl.SSLContext:
    """Certificate and host-name checks on, as websocket-client does by default
    (honouring its ``WEBSOCKET_CLIENT_CA_BUNDLE``)."""
    context = ssl.create_default_context()
    bundle = os.environ.get("WEBSOCKET_CLIENT_CA_BUNDLE")
    if bundle and os.path.isfile(bundle):
        context.load_verify_locations(cafile=bundle)
    elif bundle and os.path.isdir(bundle):
        context.load_verify_locations(capath=bundle)
    return context
