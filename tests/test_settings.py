"""Settings resolve defaults < file < environment < flags, and bad values stop start-up."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tps.config import load_settings
from tps.errors import ConfigError


def test_defaults_match_the_documented_contract() -> None:
    settings = load_settings({})
    assert settings.batch_size == 5000
    assert settings.flush_interval == 1.0
    assert settings.buffer_limit == 1_000_000
    assert settings.query_pool_size == 4
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8000)
    assert settings.influx_url is None
    assert settings.feeds == ()


def test_feeds_parse_name_url_pairs_and_pinned_protocols() -> None:
    settings = load_settings({
        "TPS_FEEDS": "sat1=ws://h:4000/graphql, sat2=wss://x/graphql|graphql-transport-ws",
    })
    assert [(f.name, f.url, f.protocol) for f in settings.feeds] == [
        ("sat1", "ws://h:4000/graphql", "auto"),
        ("sat2", "wss://x/graphql", "graphql-transport-ws"),
    ]


def test_environment_overrides_file_and_flags_override_environment(tmp_path: Path) -> None:
    config = tmp_path / "tps.toml"
    config.write_text('batch_size = 10\nflush_interval = 2.5\nhttp_port = 9000\n'
                      '[[feeds]]\nname = "a"\nurl = "ws://localhost:4000/graphql"\n')
    settings = load_settings({"TPS_BATCH_SIZE": "20"}, config, {"TPS_HTTP_PORT": "9100"})
    assert settings.batch_size == 20
    assert settings.flush_interval == 2.5
    assert settings.http_port == 9100
    assert settings.feeds[0].name == "a"


@pytest.mark.parametrize(
    ("env", "setting", "fragment"),
    [
        ({"TPS_BATCH_SIZE": "abc"}, "TPS_BATCH_SIZE", "whole number"),
        ({"TPS_BATCH_SIZE": "0"}, "TPS_BATCH_SIZE", "between"),
        ({"TPS_FLUSH_INTERVAL": "nan"}, "TPS_FLUSH_INTERVAL", "between"),
        ({"TPS_FEEDS": "a=http://h/graphql"}, "TPS_FEEDS", "ws:// or wss://"),
        ({"TPS_FEEDS": "a=ws://h/x,a=ws://h/y"}, "TPS_FEEDS", "duplicate feed name 'a'"),
        ({"TPS_FEEDS": "bad name=ws://h/x"}, "TPS_FEEDS", "must match"),
        ({"TPS_FEEDS": "x" * 65 + "=ws://h/x"}, "TPS_FEEDS", "1 to 64"),
        ({"TPS_FEEDS": "justaname"}, "TPS_FEEDS", "expected name=url"),
        ({"TPS_FEEDS": "a=ws://h/x|carrier-pigeon"}, "TPS_FEEDS", "protocol must be one of"),
        ({"TPS_LOG_FORMAT": "xml"}, "TPS_LOG_FORMAT", "text, json"),
        ({"TPS_ROLE": "boss"}, "TPS_ROLE", "all, ingest, api"),
        ({"TPS_INFLUX_URL": "ftp://x"}, "TPS_INFLUX_URL", "http://"),
        ({"TPS_SPOOL": "maybe"}, "TPS_SPOOL", "on/off"),
        ({"TPS_HTTP_PORT": "70000"}, "TPS_HTTP_PORT", "between"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], setting: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert info.value.setting == setting
    assert fragment in str(info.value)


def test_unknown_key_in_the_file_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "tps.toml"
    config.write_text("batch_sise = 10\n")
    with pytest.raises(ConfigError, match="unknown key 'batch_sise'"):
        load_settings({}, config)


def test_unreadable_or_invalid_toml_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_settings({}, tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("batch_size = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({}, bad)


def test_serve_with_a_bad_setting_exits_2_with_one_line_and_starts_nothing(
    tmp_path: Path,
) -> None:
    env = {"TPS_BATCH_SIZE": "abc", "TPS_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "tps", "serve"], env=env, capture_output=True, text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["tps: configuration error: TPS_BATCH_SIZE: expected a whole number, "
                     "got 'abc'"]
    assert not (tmp_path / "data").exists()


def test_serve_on_a_port_in_use_exits_2_naming_the_port_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"TPS_HTTP_PORT": str(port), "TPS_DATA_DIR": str(tmp_path / "data"),
               "PATH": "/usr/bin"}
        proc = subprocess.run([sys.executable, "-m", "tps", "serve"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"TPS_HTTP_PORT: cannot listen on 127.0.0.1:{port}" in proc.stderr
