"""The settings object and the one table that defines every ``TPS_*`` setting.

Resolution order is defaults < optional TOML file < environment < command-line flags.
The table ``SETTINGS`` is the single source of truth: the README's configuration table
and the docker-compose check are both derived from it, so a setting cannot exist in one
place and not another.
"""

from __future__ import annotations

import fnmatch
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
from tps.errors import ConfigError, InvalidArgument
from tps.feeds.protocol import LEGACY, MODERN, PLAIN

logger = logging.getLogger(__name__)

DEFAULT_SUBSCRIPTION = "subscription { temperature }"
PROTOCOLS = ("auto", LEGACY, MODERN, PLAIN)
"""What a feed's ``protocol`` may be: ``auto`` or one of the wire protocols."""
_FEED_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
ROLES = ("all", "ingest", "api")


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


def _list(_: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _http_url(name: str, raw: str) -> str | None:
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(name, f"expected an http:// or https:// URL, got {raw!r}")
    return raw.rstrip("/")


def _path(_: str, raw: str) -> Path:
    return Path(raw).expanduser()


def validate_feed_name(name: str, setting: str = "name") -> str:
    """Check a stream name against ``[A-Za-z0-9_.:-]{1,64}``; raise ConfigError if not."""
    if not _FEED_NAME.fullmatch(name):
        raise ConfigError(
            setting, f"must match [A-Za-z0-9_.:-] and be 1 to 64 characters long, got {name!r}"
        )
    return name


def check_feed(feed: FeedConfig, allow: Sequence[str] = ("*",)) -> FeedConfig:
    """The one check of a feed, wherever it comes from; InvalidArgument names the field.

    Configured feeds (``TPS_FEEDS``, the TOML file), the registry file and feeds added
    at runtime (REST, GraphQL) all pass through here. The URL must be ws:// or wss://
    and its host must match one of the fnmatch patterns in ``allow``
    (``TPS_FEED_ALLOW``, checked for runtime additions), so an API caller cannot make
    TPS connect to arbitrary internal hosts.
    """
    try:
        validate_feed_name(feed.name, "name")
    except ConfigError as exc:
        raise InvalidArgument("name", exc.problem) from None
    try:
        parts = urlsplit(feed.url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidArgument("url", f"not a valid URL: {exc}") from None
    if parts.scheme not in ("ws", "wss") or not host:
        raise InvalidArgument("url", f"must be a ws:// or wss:// URL with a host, got {feed.url!r}")
    if not any(fnmatch.fnmatchcase(host.lower(), pattern.lower()) for pattern in allow):
        raise InvalidArgument(
            "url", f"host {host!r} is not allowed by TPS_FEED_ALLOW ({', '.join(allow)})"
        )
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
    SettingSpec("role", _choice(*ROLES), "`all`, `ingest` (readers and writer only) or "
                "`api` (queries and HTTP only)."),
    SettingSpec("control_token", _opt_str, "Bearer token for mutating calls. Unset: "
                "generated once and stored in the data dir."),
    SettingSpec("feed_allow", _list, "Comma-separated host patterns (fnmatch) that feeds "
                "may point at."),
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
        rows.append((spec.env, "" if value is None else str(value), spec.help))
    return rows


assert {f.name for f in fields(Settings)} == set(_BY_ATTR), "SETTINGS and Settings drifted"
