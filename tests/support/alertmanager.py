"""A real Prometheus Alertmanager for tests: Debian's ``prometheus-alertmanager`` on a
free loopback port, with a temporary configuration and storage, clustering off.

A missing binary fails the test with the install command (never a skip). The server can
be stopped and started again on the same port (an outage, as the delivery tests need).
"""

from __future__ import annotations

import http.server
import json
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.influxdb import free_port

INSTALL_HINT = (
    "prometheus-alertmanager not found: install it with "
    "'apt-get update && apt-get install -y prometheus-alertmanager' (scripts/test does this)"
)

# One route, grouped per alert, to a webhook receiver in the test process (so a test
# sees Alertmanager's own "firing" and "resolved" notifications), flushed every second.
_CONFIG = """
route:
  receiver: hook
  group_by: ["alertname", "stream", "severity"]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: "http://127.0.0.1:{hook}/hook"
        send_resolved: true
"""


class _Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length))
        self.server.received.append(body)  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class AlertmanagerServer:
    """A private ``prometheus-alertmanager`` process."""

    def __init__(self) -> None:
        self.tmp: Path | None = None
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
        self._hook.received = []  # type: ignore[attr-defined]
        threading.Thread(target=self._hook.serve_forever, daemon=True).start()

    def notifications(self) -> list[dict[str, Any]]:
        """Every webhook notification Alertmanager sent (its v4 webhook payload)."""
        return list(self._hook.received)  # type: ignore[attr-defined]

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AlertmanagerServer:
        """Start (or start again on the same port and storage) and wait until ready."""
        binary = shutil.which("prometheus-alertmanager")
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        if self.tmp is None:
            self.tmp = Path(tempfile.mkdtemp(prefix="tps-alertmanager-"))
            (self.tmp / "alertmanager.yml").write_text(
                _CONFIG.format(hook=self._hook.server_address[1]))
            self.port = free_port()
        log = open(self.tmp / "alertmanager.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.tmp / 'alertmanager.yml'}",
             f"--storage.path={self.tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--cluster.listen-address=", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"alertmanager exited with {self.proc.returncode}: "
                                   f"{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"alertmanager at {self.url} not ready in {timeout} s: {self.log()}")

    def log(self) -> str:
        """What the process printed."""
        path = self.tmp / "alertmanager.log" if self.tmp else None
        return path.read_text(errors="replace") if path and path.exists() else ""

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` (with query filters such as ``active="false"``)."""
        query = "&".join(f"{key}={value}" for key, value in filters.items())
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{query}", timeout=5) as resp:
            answer: list[dict[str, Any]] = json.load(resp)
        return answer

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; the port and storage stay for :meth:`start`."""
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
        """Stop, remove the temporary folder, stop the webhook receiver."""
        self.stop()
        self._hook.shutdown()
        self._hook.server_close()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
