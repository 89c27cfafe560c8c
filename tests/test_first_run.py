"""What a new user trips over on a first run: the README, the demo banner, the CLI and
the logs (issue 15, items 7 to 10)."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.influxdb import free_port
from tps.cli import build_parser, main
from tps.config import FeedConfig, Settings
from tps.config.registry import StreamRegistry
from tps.demo import run_demo
from tps.token import load_or_create_token

ROOT = Path(__file__).resolve().parent.parent
DEMO_STREAMS = {"sat1", "sat2", "sat3"}


# --- item 7 --------------------------------------------------------------------------


def test_readme_rest_example_adds_a_stream_the_demo_does_not_have() -> None:
    readme = (ROOT / "README.md").read_text()
    added = re.findall(r'-d \'\{"name": "([^"]+)"', readme)
    assert added, "the README's REST example adds no stream"
    assert not set(added) & DEMO_STREAMS, added
    # ... and every REST example acts on a stream the demo has, or the one it added.
    acted_on = set(re.findall(r"/api/streams/([A-Za-z0-9_.:-]+)", readme)) - {"NAME"}
    assert acted_on <= set(added) | DEMO_STREAMS, acted_on


def test_demo_banner_names_a_stream_left_stopped_before_a_restart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    registry = StreamRegistry.in_data_dir(data)
    registry.load([FeedConfig(name, f"ws://127.0.0.1:9/graphql/{name}")
                   for name in sorted(DEMO_STREAMS)])
    registry.set_running("sat2", False)
    settings = Settings(data_dir=data, http_port=free_port(), log_level="WARNING")
    assert run_demo(settings, feeds=3, sim_port=0, interval=0.2, wait=lambda: None) == 0
    banner = capsys.readouterr().out
    assert "3 simulated satellite feeds (2 running;" in banner, banner
    assert "left stopped: sat2" in banner and "tps streams start sat2" in banner
    assert "tps token --data-dir" in banner


# --- item 8 and 10: the token --------------------------------------------------------


def test_the_generated_token_is_an_info_line_saying_how_to_print_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="tps.token"):
        token, path = load_or_create_token(settings)
        load_or_create_token(settings)
    assert path == tmp_path / "control-token"
    records = [r for r in caplog.records if r.name == "tps.token"]
    assert [r.levelno for r in records] == [logging.INFO, logging.INFO]
    assert all(f"tps token --data-dir {tmp_path}" in r.getMessage() for r in records)
    assert main(["token", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == token
    assert main(["token", "--data-dir", str(tmp_path / "none")]) == 1
    assert "no control token" in capsys.readouterr().err


# --- item 9: the CLI ------------------------------------------------------------------


def test_tps_streams_alone_lists(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["streams", "--server", f"http://127.0.0.1:{free_port()}"]) == 1
    assert "tps streams list: cannot reach TPS" in capsys.readouterr().err


def test_tps_ts_now_prints_the_current_epoch_nanoseconds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import time

    before = time.time_ns()
    assert main(["ts", "now"]) == 0
    assert before <= int(capsys.readouterr().out) <= time.time_ns()


def _help(*command: str) -> str:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args([*command, "--help"])
    return ""


def test_help_shows_defaults_and_the_demo_has_no_role(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _help("serve")
    serve = capsys.readouterr().out
    assert "(default: TPS_HTTP_PORT or 8000)" in serve
    assert "--role" in serve
    _help("demo")
    demo = capsys.readouterr().out
    assert "--role" not in demo and "(default: 3)" in demo
    _help("tail")
    assert "(default: 2.0)" in capsys.readouterr().out


def test_the_tps_address_is_server_and_url_on_add_is_refused_with_a_hint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["streams", "add", "sat9", "--url", "ws://127.0.0.1:4000/graphql"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "tps streams add" in err and "the TPS address is --server" in err
    # Elsewhere --url still means the TPS address (its old name).
    assert main(["streams", "list", "--url", f"http://127.0.0.1:{free_port()}"]) == 1


def test_a_bad_flag_value_is_reported_against_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--http-port", "abc"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "argument --http-port: expected a whole number, got 'abc'" in err
    assert "TPS_HTTP_PORT" not in err.splitlines()[-1]


def test_an_unknown_option_shows_the_subcommands_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--bogus"])
    err = capsys.readouterr().err
    assert err.startswith("usage: tps serve ") and "unrecognized arguments: --bogus" in err


# --- item 10: log noise ------------------------------------------------------------------


def test_a_restart_with_moved_feeds_logs_one_registry_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    feeds = [FeedConfig(f"sat{i}", f"ws://127.0.0.1:4000/graphql/sat{i}") for i in range(1, 6)]
    StreamRegistry.in_data_dir(tmp_path).load(feeds)
    moved = [replace(feed, url=feed.url.replace("4000", "4001")) for feed in feeds]
    with caplog.at_level(logging.INFO, logger="tps.config.registry"):
        StreamRegistry.in_data_dir(tmp_path).load(moved)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len(lines) == 1 and "5 stream(s)" in lines[0], lines


def test_the_listen_line_is_a_url(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    settings = Settings(data_dir=tmp_path, http_port=port)
    with caplog.at_level(logging.INFO, logger="tps.api.app"):
        run_demo(settings, feeds=1, sim_port=0, interval=0.2, wait=lambda: None)
    lines = [r.getMessage() for r in caplog.records if "listening" in r.getMessage()]
    assert lines == [f"HTTP API listening on http://127.0.0.1:{port}/"], lines
