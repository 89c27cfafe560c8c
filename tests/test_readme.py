"""The README stays true: its configuration table, its commands, CI calling them."""

from __future__ import annotations

import re
from pathlib import Path

from tps.config.settings import defaults_table

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented_with_its_default() -> None:
    rows = {m.group(1): m.group(2) for m in
            re.finditer(r"^\| `(TPS_[A-Z_]+)` \| (.*?) \|", README, re.M)}
    for env, default, _ in defaults_table():
        assert env in rows, f"{env} missing from the README's configuration table"
        expected = f"`{default}`" if default else "(unset)"
        assert rows[env] == expected, f"{env}: README says {rows[env]}, code says {expected}"
    assert set(rows) == {env for env, _, _ in defaults_table()}


def test_readme_has_the_two_commands_and_ci_runs_the_test_command() -> None:
    assert "pip install . && tps demo" in README
    assert "scripts/test" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test" in ci


def test_readme_keeps_the_seed_smoke_test_queries() -> None:
    for fragment in ("currentTemperature {", "temperatureStatistics(after: "
                     '"2023-07-28T13:00:00+00:00", before: "2023-07-28T14:00:00+00:00")',
                     "temperatureMeasurements {"):
        assert fragment in README
    assert "```mermaid" in README
