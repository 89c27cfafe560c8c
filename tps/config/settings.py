"""The settings object and the one table that defines every ``TPS_*`` setting.

Resolution order is defaults < optional TOML file < environment < command-line flags.
The table ``SETTINGS`` is the single source of truth: the README's configuration table
and the docker-compose check are both derived from it, so a setting cannot exist in one
place and not another.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tps.alarms.limits import Limits, parse_limits
from tps.errors import ConfigError, FeedRefused, InvalidArgument
from tps.feeds.destinations import FeedDestinations, parse_allow
from tps.feeds.protocol import LEGACY, MODERN, PLAIN
from tps.redact import redact_url

logger = logging.getLogger(__name__)

DEFAULT_SUBSCRIPTION = "subscription { temperature }"
PROTOCOLS = ("auto", LEGACY, MODERN, PLAIN)
"""What a feed's ``protocol`` may be: ``auto`` or one of the wire protocols."""
_FEED_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
ROLES = ("all", "ingest", "api", "writer")


@dataclass(frozen=True, slots=True)
class FeedConfig:
    """One feed to subscribe to.

    ``protocol`` is ``auto`` (offer ``graphql-ws`` then ``graphql-transport-ws`` and
    speak whichever the server picks; plain JSON if it picks none) or a pinned protocol.
    """

    name: str
    url: str
    protocol: str = "auto"
    query: str = DEFAULT_SUBSCRIPTION

    def to_dict(self) -> dict[str, str]:
        """A JSON-ready mapping (used by the registry file and the REST API)."""
        return {"name": self.name, "url": self.url, "protocol": self.protocol, "query": self.query}


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of TPS, fully validated. Build it with :func:`load_settings`."""

    feeds: tuple[FeedConfig, ...] = ()
    influx_url: str | None = None
    influx_db: str = "tps"
    influx_token: str | None = None
    influx_username: str | None = None
    influx_password: str | None = None
    influx_timeout: float = 10.0
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    data_dir: Path = field(default_factory=lambda: Path("tps-data"))
    batch_size: int = 5000
    flush_interval: float = 1.0
    buffer_limit: int = 1_000_000
    query_pool_size: int = 4
    query_cache_ttl: float = 0.25
    log_level: str = "INFO"
    log_format: str = "text"
    role: str = "all"
    control_token: str | None = None
    feed_allow: tuple[str, ...] = ("*",)
    cors_origins: tuple[str, ...] = ()
    spool: bool = True
    spool_sync_interval: float = 0.1
    spool_max_bytes: int = 1 << 30
    shutdown_timeout: float = 10.0
    max_frame_bytes: int = 1 << 20
    subscriber_queue: int = 1000
    limits: tuple[tuple[str, Limits], ...] = ()
    alertmanager_url: str | None = None
    alertmanager_resend: float = 60.0
    alarm_webhook_url: str | None = None
    # issue 10: history (rollups, hot tier)
    rollups: bool = True
    hot_window: float = 31 * 86_400.0
    hot_max_bytes: int = 96 << 20
    # rollupcpu: how often a stream's open rollup buckets are rewritten
    rollup_write_interval: float = 5.0
    kept_raw_max_bytes: int = 96 << 20
    # --- cluster mode (issue 12) ---
    nats_url: tuple[str, ...] = ()
    instance: str | None = None
    lease_ttl: float = 10.0

    @property
    def clustered(self) -> bool:
        """True when ``TPS_NATS_URL`` names NATS servers (cluster mode)."""
        return bool(self.nats_url)

    # --- hardening (issue 14) ---
    max_streams: int = 500
    max_request_bytes: int = 1 << 20
    max_request_rows: int = 200_000
    max_aliases: int = 32
    max_subscriptions: int = 10_000
    max_connection_subscriptions: int = 1000
    http_header_timeout: float = 10.0
    http_body_timeout: float = 30.0
    trusted_proxies: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()

    def with_feeds(self, feeds: tuple[FeedConfig, ...]) -> Settings:
        """A copy with another feed list."""
        return replace(self, feeds=feeds)


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """How one setting is named, parsed and documented."""

    attr: str
    parse: Callable[[str, str], Any]
    help: str

    @property
    def env(self) -> str:
        """The environment variable name, e.g. ``TPS_BATCH_SIZE``."""
        return "TPS_" + self.attr.upper()


# --- value parsers: (setting name, raw text) -> value, raising ConfigError ----------


def _str(_: str, raw: str) -> str:
    return raw


def _opt_str(_: str, raw: str) -> str | None:
    return raw or None


def _int_range(lo: int, hi: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.replace("_", ""))
        except ValueError:
            raise ConfigError(name, f"expected a whole number, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ConfigError(name, f"must be between {lo} and {hi}, got {value}")
        return value

    return parse


def _float_range(lo: float, hi: float) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(name, f"expected a number, got {raw!r}") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise ConfigError(name, f"must be between {lo} and {hi}, got {raw}")
        return value

    return parse


def _choice(*options: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower() if name != "TPS_LOG_LEVEL" else raw.strip().upper()
        allowed = options if name != "TPS_LOG_LEVEL" else tuple(o.upper() for o in options)
        if value not in allowed:
            raise ConfigError(name, f"must be one of {', '.join(allowed)}, got {raw!r}")
        return value

    return parse


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    raise ConfigError(name, f"expected on/off, got {raw!r}")


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


def _duration(lo: float, hi: float) -> Callable[[str, str], float]:
    """Seconds from ``90``, ``45s``, ``30m``, ``12h`` or ``31d``."""

    def parse(name: str, raw: str) -> float:
        match = _DURATION.fullmatch(raw.lower())
        if match is None:
            raise ConfigError(name, f"expected a duration such as 3600, 90m, 12h or 31d, "
                              f"got {raw!r}")
        value = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        if not lo <= value <= hi:
            raise ConfigError(name, f"must be between {lo:g} s and {hi:g} s, got {raw}")
        return value

    return parse


def _list(_: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _feed_allow(name: str, raw: str) -> tuple[str, ...]:
    entries = _list(name, raw)
    try:
        parse_allow(entries)
    except ValueError as exc:
        raise ConfigError(name, str(exc)) from None
    return entries


def _networks(name: str, raw: str) -> tuple[str, ...]:
    entries = _list(name, raw)
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(name, f"expected IP addresses or networks, got {entry!r}") from None
    return entries


def _hosts(name: str, raw: str) -> tuple[str, ...]:
    entries = tuple(entry.lower() for entry in _list(name, raw))
    for entry in entries:
        if any(c.isspace() or c in "/@:" for c in entry.strip("[]")) and not entry.startswith("["):
            raise ConfigError(name, f"expected host names (patterns), got {entry!r}")
    return entries


def _http_url(name: str, raw: str) -> str | None:
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(name, f"expected an http:// or https:// URL, got {raw!r}")
    return raw.rstrip("/")


def _path(_: str, raw: str) -> Path:
    return Path(raw).expanduser()


def _nats_urls(name: str, raw: str) -> tuple[str, ...]:
    urls = _list(name, raw)
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("nats", "tls") or not parts.hostname:
            raise ConfigError(name, f"expected nats:// or tls:// URLs, got {url!r}")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ConfigError(name, f"bad port in {url!r}") from None
    return urls


_INSTANCE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _instance(name: str, raw: str) -> str | None:
    if not raw:
        return None
    if not _INSTANCE_NAME.fullmatch(raw) or raw.startswith(".") or raw.endswith("."):
        raise ConfigError(name, f"instance name {raw!r} must match [A-Za-z0-9_.-], be 1 to "
                          "64 long and not start or end with a dot")
    return raw


def validate_feed_name(name: str, setting: str = "name") -> str:
    """Check a stream name against ``[A-Za-z0-9_.:-]{1,64}``; raise ConfigError if not."""
    if not _FEED_NAME.fullmatch(name):
        raise ConfigError(
            setting, f"must match [A-Za-z0-9_.:-] and be 1 to 64 characters long, got {name!r}"
        )
    return name


MAX_URL_CHARS = 2048
"""Longest feed URL accepted."""


def check_feed(feed: FeedConfig, allow: Sequence[str] | None = None) -> FeedConfig:
    """The one check of a feed's fields, wherever it comes from; InvalidArgument names
    the field.

    Configured feeds (``TPS_FEEDS``, the TOML file), each registry entry and feeds added
    at runtime (REST, GraphQL) all pass through here: a valid name, a ws:// or wss://
    URL with a host and no control characters or spaces, a known protocol, a query.
    Where the URL may *connect* is the feed-destination policy's question
    (:class:`tps.feeds.destinations.FeedDestinations`), asked before every connect;
    ``allow`` (``TPS_FEED_ALLOW``) also asks the part of it that needs no DNS now.
    """
    try:
        validate_feed_name(feed.name, "name")
    except ConfigError as exc:
        raise InvalidArgument("name", exc.problem) from None
    if len(feed.url) > MAX_URL_CHARS:
        raise InvalidArgument("url", f"longer than {MAX_URL_CHARS} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in feed.url):
        raise InvalidArgument("url", "must not contain spaces or control characters "
                              "(percent-encode them)")
    try:
        parts = urlsplit(feed.url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidArgument("url", f"not a valid URL: {exc}") from None
    if parts.scheme not in ("ws", "wss") or not host:
        raise InvalidArgument("url", "must be a ws:// or wss:// URL with a host, got "
                              f"{redact_url(feed.url)!r}")
    if allow is not None:
        try:
            FeedDestinations(allow).precheck(feed.url)
        except FeedRefused as exc:
            raise InvalidArgument("url", exc.reason) from None
    if feed.protocol not in PROTOCOLS:
        raise InvalidArgument("protocol", f"must be one of {', '.join(PROTOCOLS)}")
    if not feed.query.strip():
        raise InvalidArgument("query", "must not be empty")
    return feed


def _feed(
    setting: str, name: str, url: str, protocol: str = "auto", query: str | None = None
) -> FeedConfig:
    feed = FeedConfig(name, url, protocol, DEFAULT_SUBSCRIPTION if query is None else query)
    try:
        return check_feed(feed)
    except InvalidArgument as exc:
        raise ConfigError(setting, f"feed {name!r}: {exc.argument} {exc.problem}") from None


def parse_feed(setting: str, item: str) -> FeedConfig:
    """Parse one ``name=url`` (optionally ``name=url|protocol``) item."""
    name, sep, rest = item.strip().partition("=")
    if not sep:
        raise ConfigError(setting, f"expected name=url, got {item.strip()!r}")
    url, _, protocol = rest.strip().partition("|")
    return _feed(setting, name.strip(), url.strip(), protocol.strip() or "auto")


def _feeds(name: str, raw: str) -> tuple[FeedConfig, ...]:
    feeds = tuple(parse_feed(name, item) for item in raw.split(",") if item.strip())
    return _unique(name, feeds)


def _unique(setting: str, feeds: tuple[FeedConfig, ...]) -> tuple[FeedConfig, ...]:
    seen: set[str] = set()
    for feed in feeds:
        if feed.name in seen:
            raise ConfigError(setting, f"duplicate feed name {feed.name!r}")
        seen.add(feed.name)
    return feeds


def _limits_entries(setting: str, items: list[tuple[str, Any]]) -> tuple[tuple[str, Limits], ...]:
    seen: set[str] = set()
    entries: list[tuple[str, Limits]] = []
    for stream, data in items:
        if not isinstance(stream, str):
            raise ConfigError(setting, f"limits need a string stream name, got {stream!r}")
        validate_feed_name(stream, setting)
        if stream in seen:
            raise ConfigError(setting, f"limits for stream {stream!r} given twice")
        seen.add(stream)
        try:
            entries.append((stream, parse_limits(data)))
        except InvalidArgument as exc:
            raise ConfigError(setting, f"limits of stream {stream!r}: {exc}") from None
    return tuple(entries)


def _limits_json(name: str, raw: str) -> tuple[tuple[str, Limits], ...]:
    if not raw.strip():
        return ()
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(name, f"expected a JSON object of stream -> limits: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(name, "expected a JSON object of stream -> limits")
    return _limits_entries(name, list(data.items()))


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("feeds", _feeds, "Comma-separated `name=url` feeds (`name=url|protocol` pins "
                "the protocol: graphql-ws, graphql-transport-ws or json)."),
    SettingSpec("influx_url", _http_url, "InfluxDB base URL (v1 API). Unset: the embedded "
                "SQLite store in the data dir."),
    SettingSpec("influx_db", _str, "Database (InfluxDB 1.x) or bucket (2.x/3.x)."),
    SettingSpec("influx_token", _opt_str, "Token for InfluxDB 2.x/3.x (sent as `Token ...`)."),
    SettingSpec("influx_username", _opt_str, "InfluxDB 1.x user name."),
    SettingSpec("influx_password", _opt_str, "InfluxDB 1.x password."),
    SettingSpec("influx_timeout", _float_range(0.1, 600), "Seconds before an InfluxDB "
                "request is abandoned."),
    SettingSpec("http_host", _str, "Address the HTTP API listens on."),
    SettingSpec("http_port", _int_range(0, 65535), "Port of the HTTP API (0: any free port)."),
    SettingSpec("data_dir", _path, "Folder for the spool, the stream registry, the control "
                "token and the embedded store."),
    SettingSpec("batch_size", _int_range(1, 1_000_000), "Readings per InfluxDB write."),
    SettingSpec("flush_interval", _float_range(0.01, 3600), "Seconds between flushes of a "
                "partial batch."),
    SettingSpec("buffer_limit", _int_range(1, 100_000_000), "Readings held in memory before "
                "the oldest are dropped (or left to the spool)."),
    SettingSpec("query_pool_size", _int_range(1, 256), "Query actors, each with its own "
                "store connection."),
    SettingSpec("query_cache_ttl", _float_range(0, 60), "Seconds an answer is reused for "
                "the identical question (0: never); bounds how stale a repeated query can be."),
    SettingSpec("log_level", _choice("debug", "info", "warning", "error"), "Log level."),
    SettingSpec("log_format", _choice("text", "json"), "`text`, or `json` for one JSON "
                "object per line."),
    SettingSpec("role", _choice(*ROLES), "`all`, `ingest` (readers and writer only), "
                "`api` (queries and HTTP only) or, in cluster mode, `writer` (JetStream into "
                "the store only)."),
    SettingSpec("control_token", _opt_str, "Bearer token for mutating calls. Unset: "
                "generated once and stored in the data dir."),
    SettingSpec("feed_allow", _feed_allow, "Where feeds may connect: comma-separated host "
                "patterns (fnmatch), addresses or networks, each optionally `:port`. Loopback, "
                "link-local and metadata addresses need an explicit entry (`localhost`, "
                "`127.0.0.1`); the store and TPS itself are never allowed (see Security)."),
    SettingSpec("cors_origins", _list, "Comma-separated origins allowed to make "
                "cross-origin calls."),
    SettingSpec("spool", _bool, "`on`: readings are spooled to disk before they count as "
                "received; `off`: memory only."),
    SettingSpec("spool_sync_interval", _float_range(0.001, 10), "Seconds between fsyncs "
                "of the spool (group commit)."),
    SettingSpec("spool_max_bytes", _int_range(1 << 16, 1 << 50), "Spool size bound; the "
                "oldest unwritten data is dropped beyond it."),
    SettingSpec("shutdown_timeout", _float_range(0.1, 600), "Seconds a shutdown may spend "
                "flushing."),
    SettingSpec("max_frame_bytes", _int_range(1024, 1 << 30), "Largest feed frame accepted."),
    SettingSpec("subscriber_queue", _int_range(1, 1_000_000), "Messages queued per "
                "GraphQL subscription before a slow consumer is disconnected."),
    SettingSpec("limits", _limits_json, "Limits per stream as JSON, `{\"sat-1\": "
                "{\"yellowHigh\": 30, \"redHigh\": 40}}` (in the TOML file: `[[limits]]` "
                "tables with `stream = ...`). Changes over the API are kept in the registry "
                "and win over this."),
    SettingSpec("alertmanager_url", _http_url, "Prometheus Alertmanager base URL: active "
                "alarms are posted to its API v2. Unset: no Alertmanager."),
    SettingSpec("alertmanager_resend", _float_range(1, 3600), "Seconds between re-sends "
                "of the firing alerts; keep it below Alertmanager's `resolve_timeout`."),
    SettingSpec("alarm_webhook_url", _http_url, "URL that receives every alarm event as a "
                "JSON POST (retried with backoff). Unset: none."),
    # issue 10: history
    SettingSpec("rollups", _bool, "`on`: the writer keeps 1 m and 1 h rollups beside the "
                "readings and missing ones are backfilled at start; `off`: raw readings only "
                "(queries still answer exactly, from raw data where rollups are missing)."),
    SettingSpec("hot_window", _duration(60, 10 * 366 * 86_400), "How far back the hot tier "
                "(`all` role) keeps readings in memory, in seconds or with a unit (`31d`, "
                "`12h`); also bounded by `TPS_HOT_MAX_BYTES`."),
    SettingSpec("hot_max_bytes", _int_range(1 << 20, 1 << 40), "Memory budget of the hot "
                "tier (16 bytes a reading); beyond it the oldest readings are answered from "
                "the store."),
    # rollupcpu: rollup write cadence
    SettingSpec("rollup_write_interval", _float_range(0, 3600), "Seconds a stream's open "
                "(still growing) 1 m and 1 h rollup buckets may stay unwritten; a bucket is "
                "always written in the batch that closes it, and the stored coverage lags "
                "accordingly (answers stay exact). `0`: rewritten with every batch."),
    SettingSpec("kept_raw_max_bytes", _int_range(0, 1 << 40), "Memory for raw readings "
                "kept by a process without a hot tier (`api` role): readings of spans that "
                "can no longer change (inside the stored rollup coverage), read from the "
                "store in 10-minute blocks when a window's edge falls there, least recently "
                "used out first (16 bytes a reading). Answers are still computed per "
                "question; 0: every raw edge is read from the store."),
    # --- cluster mode (issue 12) ---
    SettingSpec("nats_url", _nats_urls, "Comma-separated NATS server URLs (`nats://host:4222`). "
                "Set: cluster mode (shared registry, feed leases, readings on JetStream)."),
    SettingSpec("instance", _instance, "This instance's name in the cluster. Unset: the host "
                "name plus a short random suffix."),
    SettingSpec("lease_ttl", _float_range(1, 300), "Seconds after which a silent instance's "
                "feeds are taken over by the others (cluster mode)."),


    # --- hardening (issue 14) ---
    SettingSpec("max_streams", _int_range(1, 100_000), "Most streams one process runs; "
                "adding one more is refused."),
    SettingSpec("max_request_bytes", _int_range(1024, 1 << 30), "Largest HTTP request body "
                "and GraphQL websocket message, in bytes (control calls have smaller fixed "
                "limits)."),
    SettingSpec("max_request_rows", _int_range(1, 100_000_000), "Most readings one GraphQL "
                "request may ask for, summed over every field and alias (checked before any "
                "work starts)."),
    SettingSpec("max_aliases", _int_range(1, 10_000), "Most aliased fields in one GraphQL "
                "document."),
    SettingSpec("max_subscriptions", _int_range(1, 10_000_000), "Most GraphQL subscriptions "
                "open at once, over all connections."),
    SettingSpec("max_connection_subscriptions", _int_range(1, 1_000_000), "Most GraphQL "
                "subscriptions open on one websocket connection."),
    SettingSpec("http_header_timeout", _float_range(0.1, 3600), "Seconds a client has to "
                "send a request's headers; also how long an idle keep-alive connection "
                "stays open."),
    SettingSpec("http_body_timeout", _float_range(0.1, 3600), "Seconds a client has to send "
                "a request's body."),
    SettingSpec("trusted_proxies", _networks, "Comma-separated proxy addresses or networks "
                "whose `X-Forwarded-For` is believed. Unset: the header is ignored."),
    SettingSpec("allowed_hosts", _hosts, "Comma-separated `Host` header names (fnmatch) "
                "TPS answers, besides /health and /ready. Unset: any."),
)
_BY_ATTR = {spec.attr: spec for spec in SETTINGS}
ENV_NAMES = frozenset(spec.env for spec in SETTINGS)


def _limits_from_toml(where: str, raw: Any) -> tuple[tuple[str, Limits], ...]:
    if isinstance(raw, str):
        return _limits_json(where, raw)
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise ConfigError(where, "expected [[limits]] tables, each with stream = ...")
    items = []
    for item in raw:
        rest = {key: value for key, value in item.items() if key != "stream"}
        items.append((item.get("stream"), rest))
    return _limits_entries(where, items)


def _from_toml(path: Path) -> dict[str, Any]:
    setting = f"--config {path}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(setting, f"cannot read file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(setting, f"not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, raw in data.items():
        spec = _BY_ATTR.get(key)
        if spec is None:
            raise ConfigError(setting, f"unknown key {key!r}")
        where = f"{setting} [{key}]"
        if key == "feeds":
            values[key] = _feeds_from_toml(where, raw)
        elif key == "limits":
            values[key] = _limits_from_toml(where, raw)
        elif isinstance(raw, list) and spec.parse is _list:
            values[key] = tuple(str(item) for item in raw)
        elif isinstance(raw, bool):
            values[key] = spec.parse(where, "on" if raw else "off")
        elif isinstance(raw, str | int | float):
            values[key] = spec.parse(where, str(raw))
        else:
            raise ConfigError(where, f"unsupported value {raw!r}")
    return values


def _feeds_from_toml(where: str, raw: Any) -> tuple[FeedConfig, ...]:
    if isinstance(raw, str):
        return _feeds(where, raw)
    if not isinstance(raw, list):
        raise ConfigError(where, "expected a list of feed tables or a name=url string")
    feeds: list[FeedConfig] = []
    allowed = {"name", "url", "protocol", "query"}
    for item in raw:
        if not isinstance(item, dict):
            raise ConfigError(where, f"expected a table, got {item!r}")
        unknown = set(item) - allowed
        if unknown:
            raise ConfigError(where, f"unknown feed key {sorted(unknown)[0]!r}")
        if not isinstance(item.get("name"), str) or not isinstance(item.get("url"), str):
            raise ConfigError(where, "each feed needs a string name and url")
        feeds.append(_feed(where, item["name"], item["url"], str(item.get("protocol", "auto")),
                           item.get("query")))
    return _unique(where, tuple(feeds))


def load_settings(
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings: defaults < ``config_file`` < ``env`` < ``overrides``.

    ``overrides`` uses the environment names (``TPS_HTTP_PORT``) so that command-line
    flags and environment share one parser. Unknown ``TPS_*`` environment names are
    logged as warnings (a typo should not pass silently) but do not stop start-up,
    because container platforms add their own variables.
    """
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(_from_toml(config_file))
    for source in (env or {}, overrides or {}):
        for key, raw in source.items():
            if not key.startswith("TPS_"):
                continue
            spec = _BY_ATTR.get(key[4:].lower())
            if spec is None:
                if source is env and not key.startswith("TPS_TEST_"):
                    logger.warning("Ignoring unknown environment setting %s", key)
                    continue
                if source is not env:
                    raise ConfigError(key, "unknown setting")
                continue
            values[spec.attr] = spec.parse(key, raw)
    settings = Settings(**values)
    if settings.role == "writer" and not settings.nats_url:
        raise ConfigError("TPS_ROLE", "role writer takes readings from NATS: set TPS_NATS_URL")
    if settings.influx_token and settings.influx_username:
        raise ConfigError("TPS_INFLUX_TOKEN", "set either a token or a username, not both")
    return settings


def defaults_table() -> list[tuple[str, str, str]]:
    """(env name, default, help) rows for documentation."""
    defaults = Settings()
    rows = []
    for spec in SETTINGS:
        value = getattr(defaults, spec.attr)
        if spec.attr == "limits":
            value = ""
        elif isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "on" if value else "off"
        elif spec.parse.__qualname__.startswith("_duration"):
            value = _format_duration(float(value))
        rows.append((spec.env, "" if value is None else str(value), spec.help))
    return rows


def _format_duration(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}"


assert {f.name for f in fields(Settings)} == set(_BY_ATTR), "SETTINGS and Settings drifted"
