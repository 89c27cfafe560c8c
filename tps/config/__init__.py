"""Typed settings: defaults < TOML file < environment < command-line flags."""

from __future__ import annotations

from tps.config.settings import (
    DEFAULT_SUBSCRIPTION,
    PROTOCOLS,
    SETTINGS,
    FeedConfig,
    Settings,
    SettingSpec,
    check_feed,
    load_settings,
    parse_feed,
    validate_feed_name,
)

__all__ = [
    "DEFAULT_SUBSCRIPTION",
    "PROTOCOLS",
    "SETTINGS",
    "FeedConfig",
    "SettingSpec",
    "Settings",
    "check_feed",
    "load_settings",
    "parse_feed",
    "validate_feed_name",
]
