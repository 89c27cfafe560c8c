"""``tps rollup``: coverage per stream, and ``--rebuild`` of a range."""

from __future__ import annotations

from pathlib import Path

import pytest

from tps.cli import main
from tps.history.buckets import HOUR, MINUTE, Aggregate
from tps.history.types import RollupPoint, RollupWrite
from tps.model import Reading
from tps.store import SqliteStore

T0 = 1_690_549_200_000_000_000  # 2023-07-28T13:00:00Z


def test_rollup_shows_coverage_and_rebuilds_a_range(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = SqliteStore(tmp_path / "tps.sqlite3")
    store.ensure_ready()
    store.write([Reading("a", T0 + i * 10 * 1_000_000_000, float(i % 7)) for i in range(2000)])
    data = ["--data-dir", str(tmp_path)]
    assert main(["rollup", *data]) == 0
    assert "a: rollups exact for none; 5 hour(s) missing" in capsys.readouterr().out
    wrong = Aggregate(-1.0, 99.0, 0.0, 1)
    store.write_rollups(RollupWrite((RollupPoint("a", MINUTE, T0 + HOUR, wrong),)))
    assert main(["rollup", "--rebuild", "--after", "2023-07-28T14:00:00Z", "--before",
                 str(T0 + HOUR + 30 * MINUTE), *data]) == 0
    out = capsys.readouterr().out
    assert "rebuilt 1 stream-hours, then computed 4 missing ones" in out
    assert "a: rollups exact for 2023-07-28T13:00:00Z .. 2023-07-28T17:59:59.999999999Z; " \
           "0 hour(s) missing" in out
    (_, fixed), = [p for p in store.rollups(MINUTE, T0 + HOUR, T0 + HOUR)["a"]]
    assert fixed.count == 6 and fixed.max == 6.0


def test_rollup_refuses_a_bad_instant(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rollup", "--after", "yesterday", "--data-dir", str(tmp_path)]) == 2
    assert "not an ISO 8601 date-time: 'yesterday'" in capsys.readouterr().err
