"""A real InfluxDB for tests: Debian's ``influxd`` on free loopback ports.

Tests never mock InfluxDB. If ``TPS_TEST_INFLUX_URL`` is set, that server is used;
otherwise ``influxd`` must be on PATH (``apt-get install -y influxdb``) and a private
instance is started with a temporary config. A missing server fails the test with
instructions, never skips it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tests.support.wait import wait_until

INSTALL_HINT = (
    "influxd not found: install Debian's InfluxDB 1.x with "
    "'apt-get update && apt-get install -y influxdb' (scripts/test does this), "
    "or point TPS_TEST_INFLUX_URL at a running InfluxDB"
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class InfluxServer:
    """A private ``influxd`` process (or an external server when ``external`` is set)."""

    def __init__(self, external: str | None = None) -> None:
        self.external = external
        self.tmp: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.http_port = 0
        self.bind_port = 0
        self.url = external or ""

    def start(self) -> InfluxServer:
        """Start (or restart, on the same ports and data) and wait for ``/ping``."""
        if self.external:
            self.wait_ready()
            return self
        binary = shutil.which("influxd")
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        if self.tmp is None:
            self.tmp = Path(tempfile.mkdtemp(prefix="tps-influx-"))
            self.http_port, self.bind_port = free_port(), free_port()
            self.url = f"http://127.0.0.1:{self.http_port}"
            (self.tmp / "influxdb.conf").write_text(_CONFIG.format(
                dir=self.tmp, http=self.http_port, bind=self.bind_port))
        log = open(self.tmp / "influxd.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [binary, "run", "-config", str(self.tmp / "influxdb.conf")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until ``/ping`` answers 204 (raise at once if influxd exits)."""

        def pinged() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"influxd exited with {self.proc.returncode}; see {self.tmp}")
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=1) as resp:
                    return bool(resp.status == 204)
            except (OSError, urllib.error.URLError):
                return False

        wait_until(pinged, timeout, what=f"InfluxDB at {self.url} to answer /ping", step=0.1)

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL); data stays for a restart."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        """Stop and remove the data folder."""
        self.stop()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def query(self, influxql: str, db: str | None = None) -> list[dict[str, object]]:
        """Run InfluxQL directly (bypassing TPS); series of result 0, times as epoch ns."""
        params = {"q": influxql, "epoch": "ns"}
        if db:
            params["db"] = db
        data = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(self.url + "/query", data=data, timeout=30) as resp:
            body = json.load(resp)
        result = body["results"][0]
        if "error" in result:
            raise RuntimeError(result["error"])
        series: list[dict[str, object]] = result.get("series", [])
        return series

    def count(self, db: str, stream: str | None = None) -> int:
        """Number of points in ``temperature`` (of one stream) counted by InfluxDB itself."""
        where = ""
        if stream is not None:
            escaped = stream.replace("\\", "\\\\").replace("'", "\\'")
            where = f" WHERE \"stream\" = '{escaped}'"
        series = self.query(f'SELECT COUNT("value") FROM "temperature"{where}', db)
        if not series:
            return 0
        values = series[0]["values"]
        assert isinstance(values, list)
        return int(values[0][1])

    def drop_database(self, db: str) -> None:
        """Remove a database (tests use one database each)."""
        self.query(f'DROP DATABASE "{db}"')


def from_environment() -> InfluxServer:
    """The server tests should use: ``TPS_TEST_INFLUX_URL`` or a private ``influxd``."""
    return InfluxServer(os.environ.get("TPS_TEST_INFLUX_URL") or None)


_CONFIG = """
reporting-disabled = true
bind-address = "127.0.0.1:{bind}"

[meta]
  dir = "{dir}/meta"

[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  wal-fsync-delay = "0s"
  query-log-enabled = false
  trace-logging-enabled = false

[coordinator]
  write-timeout = "10s"

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http}"
  auth-enabled = false
  log-enabled = false
  max-body-size = 0

[logging]
  level = "warn"
  suppress-logo = true

[continuous_queries]
  enabled = false

[subscriber]
  enabled = false

[[udp]]
  enabled = false
"""
