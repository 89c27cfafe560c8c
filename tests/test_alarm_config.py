"""Limits in the configuration (``[[limits]]``, ``TPS_LIMITS``) and in the stream
registry (runtime changes win and survive a restart)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tps.alarms.limits import Limits, parse_limits
from tps.config.registry import StreamRegistry
from tps.config.settings import FeedConfig, load_settings
from tps.errors import ConfigError

FEED = FeedConfig("sat-1", "ws://127.0.0.1:4000/graphql")


def test_toml_limits_tables(tmp_path: Path) -> None:
    config = tmp_path / "tps.toml"
    config.write_text('[[limits]]\nstream = "sat-1"\nyellowHigh = 30\nredHigh = 40.5\n'
                      'persistence = 2\n\n[[limits]]\nstream = "sat-2"\nstaleAfter = 5\n')
    settings = load_settings({}, config)
    assert dict(settings.limits) == {
        "sat-1": Limits(yellow_high=30.0, red_high=40.5, persistence=2),
        "sat-2": Limits(stale_after=5.0)}


def test_environment_limits_are_json() -> None:
    settings = load_settings({"TPS_LIMITS": json.dumps({"sat-1": {"redLow": -10}})})
    assert dict(settings.limits) == {"sat-1": Limits(red_low=-10.0)}


@pytest.mark.parametrize("raw", [
    "not json", "[1]", json.dumps({"sat-1": {"yellowHigh": 30, "redHigh": 20}}),
    json.dumps({"bad name!": {}}), json.dumps({"sat-1": {"staleAfter": -1}}),
])
def test_bad_configured_limits_stop_start_up_naming_the_setting(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"TPS_LIMITS": raw})
    assert caught.value.setting == "TPS_LIMITS"


def test_toml_limits_without_a_stream_or_twice_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "tps.toml"
    config.write_text("[[limits]]\nyellowHigh = 30\n")
    with pytest.raises(ConfigError):
        load_settings({}, config)
    config.write_text('[[limits]]\nstream = "a"\n[[limits]]\nstream = "a"\n')
    with pytest.raises(ConfigError):
        load_settings({}, config)


def test_runtime_limits_are_persisted_and_survive_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "streams.json"
    registry = StreamRegistry(path)
    registry.load([FEED])
    assert registry.get("sat-1") is not None
    assert not registry.get("sat-1").limits_set  # type: ignore[union-attr]
    limits = parse_limits({"yellowHigh": 30, "deadband": 0.5})
    registry.set_limits("sat-1", limits)
    registry.set_running("sat-1", False)  # other changes keep the limits
    again = StreamRegistry(path)
    [entry] = again.load([FEED])
    assert (entry.limits, entry.limits_set, entry.running) == (limits, True, False)
    again.set_limits("sat-1", None)  # cleared at runtime: stays cleared
    [entry] = StreamRegistry(path).load([FEED])
    assert (entry.limits, entry.limits_set) == (None, True)


def test_invalid_limits_in_the_registry_lose_only_themselves(tmp_path: Path) -> None:
    path = tmp_path / "streams.json"
    registry = StreamRegistry(path)
    registry.load([FEED])
    data = json.loads(path.read_text())
    data["streams"][0]["limits"] = {"yellowHigh": 30, "redHigh": 10}
    path.write_text(json.dumps(data))
    [entry] = StreamRegistry(path).load([FEED])
    assert entry.feed == FEED and not entry.limits_set
