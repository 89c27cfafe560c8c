"""The README's first command, in a fresh virtualenv in an empty folder, shows live data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.influxdb import free_port

ROOT = Path(__file__).resolve().parent.parent


def project_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=30,
    ).stdout.split("\n")
    return [name for name in listed if name and (ROOT / name).is_file()]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def current(port: int, stream: str) -> float | None:
    body = json.dumps({"query": "query($s: String) { currentTemperature(stream: $s) { value } }",
                       "variables": {"s": stream}})
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", body.encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
            data = json.load(resp)["data"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    value = (data.get("currentTemperature") or {}).get("value") if data else None
    return float(value) if value is not None else None


def test_readme_first_command_brings_up_the_demo_with_three_live_feeds(tmp_path: Path) -> None:
    project = tmp_path / "project"
    for name in project_files():
        target = project / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    port = free_port()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("TPS_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
               TPS_HTTP_PORT=str(port), TPS_DATA_DIR=str(tmp_path / "data"))
    log = open(tmp_path / "demo.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(["sh", "-c", "pip install . && tps demo"], cwd=project, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Installing takes as long as the package index does; the clock that matters
        # starts when the demo itself starts.
        deadline = time.monotonic() + 300
        while not (venv / "bin" / "tps").exists():
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()
            assert time.monotonic() < deadline, "pip install . took over 300 s"
            time.sleep(0.2)
        while proc.poll() is None and b"Successfully installed" not in (
                tmp_path / "demo.log").read_bytes():
            time.sleep(0.1)
        started = time.monotonic()
        values: dict[str, float] = {}
        while time.monotonic() - started < 10 and len(values) < 3:
            for stream in ("sat1", "sat2", "sat3"):
                value = current(port, stream)
                if value is not None:
                    values[stream] = value
            time.sleep(0.2)
        assert set(values) == {"sat1", "sat2", "sat3"}, (tmp_path / "demo.log").read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        # The shell dies of SIGTERM at once; wait for the demo in its group to finish.
        deadline = time.monotonic() + 30
        while group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    # SIGTERM reaches the shell too (it dies of it); the demo itself must stop cleanly.
    text = (tmp_path / "demo.log").read_text()
    assert "HTTP API stopped" in text, text
    assert "Traceback" not in text, text
