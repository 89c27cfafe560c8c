"""The operator CLI (``tps streams``, ``tps tail``, ``tps ts``) and the control token."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.influxdb import InfluxServer, free_port
from tests.support.service import SimulatorProcess
from tests.support.wait import wait_until
from tests.test_rest import TOKEN, Stack
from tps.actors.supervisor import supervisor_proxy
from tps.config.settings import FeedConfig, Settings
from tps.control_cli import main
from tps.timefmt import iso8601_to_ns, ns_to_iso8601
from tps.token import load_or_create_token

# --- tps ts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2023-07-28T13:00:00+00:00", 1_690_549_200_000_000_000),
        ("2023-07-28T13:00:00Z", 1_690_549_200_000_000_000),
        ("2023-07-28T13:00:00", 1_690_549_200_000_000_000),
        ("2023-07-28 15:00:00+02:00", 1_690_549_200_000_000_000),
        ("2023-07-28T13:00:00.123456789Z", 1_690_549_200_123_456_789),
        ("2023-07-28T13:00:00.5-0100", 1_690_552_800_500_000_000),
        ("2023-07-28", 1_690_502_400_000_000_000),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_iso8601_converts_to_epoch_nanoseconds_keeping_all_nine_digits(
    text: str, ns: int
) -> None:
    assert iso8601_to_ns(text) == ns


def test_epoch_nanoseconds_convert_back_to_iso8601_utc() -> None:
    assert ns_to_iso8601(1_690_549_200_123_456_789) == "2023-07-28T13:00:00.123456789Z"
    assert ns_to_iso8601(1_690_549_200_500_000_000) == "2023-07-28T13:00:00.5Z"
    assert ns_to_iso8601(0) == "1970-01-01T00:00:00Z"
    for ns in (1, 999_999_999, 1_690_549_200_000_000_001):
        assert iso8601_to_ns(ns_to_iso8601(ns)) == ns


def test_tps_ts_prints_the_conversion_and_rejects_garbage_with_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["ts", "2023-07-28T13:00:00Z"]) == 0
    assert capsys.readouterr().out == "1690549200000000000\n"
    assert main(["ts", "1690549200000000000"]) == 0
    assert capsys.readouterr().out == "2023-07-28T13:00:00Z\n"
    assert main(["ts", "yesterday"]) == 2
    assert "not an ISO 8601" in capsys.readouterr().err


# --- the control token ----------------------------------------------------------------


def test_a_token_is_generated_once_with_mode_0600_and_its_place_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with caplog.at_level(logging.INFO, logger="tps.token"):
        token, path = load_or_create_token(settings)
    assert path == tmp_path / "data" / "control-token"
    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path) in caplog.text
    assert load_or_create_token(settings) == (token, path)


def test_a_configured_token_wins_and_nothing_is_written(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, control_token="from-env")
    assert load_or_create_token(settings) == ("from-env", None)
    assert not (tmp_path / "control-token").exists()


def test_a_stored_token_readable_by_others_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "control-token"
    path.write_text("abc\n")
    os.chmod(path, 0o644)
    assert load_or_create_token(Settings(data_dir=tmp_path)) == ("abc", path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- tps streams / tps tail against a running server ----------------------------------


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(tmp_path_factory.mktemp("sim"), interval=0.05).start()
    yield sim
    sim.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, influx: InfluxServer) -> Iterator[Stack]:
    db = f"tps_cli_{os.getpid()}"
    stack = Stack(Path(tmp_path_factory.mktemp("cli-data")), influx, db, graphql=True)
    yield stack
    stack.close()
    influx.drop_database(db)


@pytest.fixture(autouse=True)
def no_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TPS_CONTROL_TOKEN", raising=False)


def test_streams_add_list_stop_start_rm_drive_a_running_server(
    server: Stack, simulator: SimulatorProcess, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TPS_CONTROL_TOKEN", TOKEN)
    url = ["--server", server.url]
    assert main(["streams", "add", "cli-a", simulator.url("cli-a"), *url]) == 0
    assert "added cli-a" in capsys.readouterr().out
    wait_until(lambda: any(s.name == "cli-a" and s.received > 0 for s in server.board.streams()),
               5.0, "cli-a receives", step=0.05)

    assert main(["streams", "list", *url]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["NAME", "STATE", "RECEIVED", "REJECTED"]
    assert table[1].startswith("cli-a") and "subscribed" in table[1]

    assert main(["streams", "stop", "cli-a", *url]) == 0
    assert capsys.readouterr().out == "cli-a: stopped\n"
    assert main(["streams", "start", "cli-a", *url]) == 0
    assert capsys.readouterr().out in ("cli-a: connecting\n", "cli-a: subscribed\n")
    assert main(["streams", "list", "--json", *url]) == 0
    assert [s["name"] for s in json.loads(capsys.readouterr().out)] == ["cli-a"]
    assert main(["streams", "rm", "cli-a", *url]) == 0
    assert capsys.readouterr().out == "removed cli-a\n"
    assert "cli-a" not in [s.name for s in server.board.streams()]


def test_the_token_is_read_from_the_data_dir_when_not_given(
    server: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "control-token").write_text(TOKEN + "\n")
    args = ["--server", server.url, "--data-dir", str(tmp_path)]
    assert main(["streams", "add", "from-file", "ws://127.0.0.1:9/", "--stopped", *args]) == 0
    assert main(["streams", "rm", "from-file", *args]) == 0
    capsys.readouterr()


def test_a_refused_call_prints_the_server_error_and_exits_1(
    server: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--server", server.url, "--data-dir", str(tmp_path)]
    assert main(["streams", "stop", "x", "--token", "wrong", *args]) == 1
    assert "401 unauthorized" in capsys.readouterr().err
    assert main(["streams", "stop", "nope", "--token", TOKEN, *args]) == 1
    assert "404 not_found: no stream named 'nope'" in capsys.readouterr().err
    assert main(["streams", "add", "bad name", "ws://127.0.0.1/", "--token", TOKEN, *args]) == 1
    assert "(field name)" in capsys.readouterr().err
    assert main(["streams", "rm", "x", *args]) == 1
    assert "no control token" in capsys.readouterr().err


def test_an_unreachable_server_is_reported_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["streams", "list", "--url", f"http://127.0.0.1:{free_port()}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tps streams list: cannot reach TPS at") and err.count("\n") == 1


def test_tail_prints_new_readings(
    server: Stack, simulator: SimulatorProcess, capsys: pytest.CaptureFixture[str],
) -> None:
    proxy = supervisor_proxy(server.ref)
    proxy.add_stream(FeedConfig("tailed", simulator.url("tailed"))).get(timeout=5)
    try:
        wait_until(lambda: server.stored("tailed") >= 3, 5.0, "tailed readings stored",
                   step=0.05)
        assert main(["tail", "--server", server.url, "--stream", "tailed", "--count", "2",
                     "--interval", "0.5"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) >= 3
        _when, stream, value = lines[0].split()
        assert stream == "tailed" and float(value) == float(value)
        assert len(set(lines)) == len(lines), "no reading printed twice"
    finally:
        proxy.remove_stream("tailed").get(timeout=10)
