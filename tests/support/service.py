"""Run ``tps serve`` (or ``tps simulate``) as a real subprocess for end-to-end tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.influxdb import free_port
from tests.support.wait import wait_until

LOOPBACK_FEEDS = "*,127.0.0.1"
"""TPS_FEED_ALLOW for tests: any host name, and the loopback address 127.0.0.1."""


class TpsProcess:
    """``python -m tps serve`` with ``TPS_*`` settings from ``env``; output to a log file."""

    def __init__(self, tmp: Path, env: dict[str, str], name: str = "tps") -> None:
        self.tmp = tmp
        self.name = name
        self.port = int(env.get("TPS_HTTP_PORT") or free_port())
        self.data_dir = Path(env.get("TPS_DATA_DIR") or tmp / f"{name}-data")
        # The tests' simulators and peers listen on loopback, which feeds may reach only
        # when TPS_FEED_ALLOW names it explicitly (as an operator would).
        self.env = {**os.environ, "TPS_HTTP_PORT": str(self.port),
                    "TPS_DATA_DIR": str(self.data_dir), "TPS_LOG_LEVEL": "INFO",
                    "TPS_FEED_ALLOW": LOOPBACK_FEEDS, **env}
        self.log_path = tmp / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base HTTP URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True, timeout: float = 30.0) -> TpsProcess:
        """Start the process; with ``wait``, block until ``/health`` answers."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([sys.executable, "-m", "tps", "serve"], env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if wait:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Block until ``GET /health`` answers (any status), or raise with the log."""

        def answers() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log()}")
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1).close()
            except urllib.error.HTTPError:
                return True
            except OSError:
                return False
            return True

        try:
            wait_until(answers, timeout, what=f"{self.name} to answer /health", step=0.1)
        except AssertionError as exc:
            raise RuntimeError(f"{exc}:\n{self.log()}") from None

    def log(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def token(self) -> str:
        """The control token (from the env or the data dir)."""
        return self.env.get("TPS_CONTROL_TOKEN") or (
            self.data_dir / "control-token").read_text().strip()

    def graphql(self, query: str, variables: dict[str, Any] | None = None,
                token: str | None = None) -> dict[str, Any]:
        """POST a GraphQL document; returns the decoded response body."""
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(self.url + "/graphql", body, headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                result: dict[str, Any] = json.load(resp)
        except urllib.error.HTTPError as exc:
            result = json.load(exc)
        return result

    def signal(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``signum`` and wait for the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signum)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, no clean-up (crash simulation)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        """Stop the process if it still runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class SimulatorProcess:
    """``python -m tps simulate`` on a free port; ``url(stream)`` gives feed URLs."""

    def __init__(self, tmp: Path, *args: str, interval: float = 0.05) -> None:
        self.args = ["--port", "0", "--interval", str(interval), *args]
        self.log_path = tmp / "simulator.log"
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def start(self, timeout: float = 20.0) -> SimulatorProcess:
        """Start and wait for the 'listening' line (which carries the port)."""
        self.proc = subprocess.Popen([sys.executable, "-m", "tps", "simulate", *self.args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"simulator exited {self.proc.wait()}")
            match = re.search(r"ws://[^:]+:(\d+)/", line)
            if match:
                self.port = int(match.group(1))
                threading.Thread(target=self._drain, daemon=True).start()
                return self
        raise RuntimeError("simulator did not start")

    def _drain(self) -> None:
        # Keep reading so a chatty simulator never blocks on a full pipe.
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log_path, "a") as log:
            for line in self.proc.stdout:
                log.write(line)

    def url(self, stream: str | None = None) -> str:
        """Feed URL of ``stream`` (default stream: ``temperature``)."""
        path = "/graphql" if stream is None else f"/graphql/{stream}"
        return f"ws://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        """Stop the simulator."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
