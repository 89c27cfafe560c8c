"""Tools for the hardening tests (issue 14): watch ``/ready`` while attacking, check that
nothing stored is lost, small hostile servers, and raw HTTP.

Every attack here is bounded: a fixed number of sockets, requests or bytes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.service import TpsProcess
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
READY_BUDGET_MS = 100.0


class ReadyWatch:
    """``/ready`` polled every 20 ms by :mod:`tests.support.ready_watch` (a process of its
    own) for as long as the ``with`` block runs; :meth:`assert_healthy` then checks that
    every poll answered 200 within ``READY_BUDGET_MS``."""

    MIN_SECONDS = 0.3
    """Shortest watch: a fast attack is still watched for a few polls after it."""

    def __init__(self, url: str, interval: float = 0.02) -> None:
        self.url = url
        self.interval = interval
        self._started = 0.0
        self.summary: dict[str, Any] = {}
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> ReadyWatch:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.ready_watch", self.url, str(self.interval)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self._proc.stdout is not None
        assert self._proc.stdout.readline().strip() == "started"
        self._started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None
        time.sleep(max(0.0, self._started + self.MIN_SECONDS - time.monotonic()))
        out, _ = self._proc.communicate(timeout=30)  # closes its stdin: the poller stops
        self.summary = json.loads(out.strip().splitlines()[-1])

    def assert_healthy(self, budget_ms: float = READY_BUDGET_MS) -> None:
        """Every poll was a 200 within ``budget_ms``."""
        summary = self.summary
        assert summary["polls"] >= 3, summary
        assert not summary["failures"], summary
        assert summary["max_ms"] < budget_ms, summary


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid``, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def request(tps: TpsProcess, method: str, path: str, body: Any = None, *,
            token: str | None = None, headers: dict[str, str] | None = None,
            timeout: float = 10.0) -> tuple[int, Any]:
    """(status, decoded JSON body or text) of one HTTP request to ``tps``."""
    data = None
    all_headers = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(tps.url + path, data=data, headers=all_headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def streams(tps: TpsProcess) -> dict[str, dict[str, Any]]:
    """Every stream as ``GET /api/streams`` shows it, by name."""
    status, body = request(tps, "GET", "/api/streams")
    assert status == 200, body
    return {s["name"]: s for s in body["streams"]}


def stored(tps: TpsProcess, stream: str) -> int:
    """Readings of ``stream`` in the store, asked through TPS."""
    answer = tps.graphql('query ($s: String) { temperatureStatistics(stream: $s) { count } }',
                         {"s": stream})
    assert "errors" not in answer, answer
    return int(answer["data"]["temperatureStatistics"]["count"])


class NothingLost:
    """Checks that a stream's stored readings only grow, and that every reading it
    received is stored: :meth:`before` ahead of the attack, :meth:`check` after it."""

    def __init__(self, tps: TpsProcess, stream: str) -> None:
        self.tps = tps
        self.stream = stream
        self.stored_before = 0

    def before(self) -> NothingLost:
        """Wait for some stored readings and remember how many there are."""
        wait_until(lambda: stored(self.tps, self.stream) > 0, 20,
                   what=f"readings of {self.stream} to be stored")
        self.stored_before = stored(self.tps, self.stream)
        return self

    def check(self) -> None:
        """Stored readings did not shrink, kept coming, and catch up with ``received``."""
        received = streams(self.tps)[self.stream]["received"]
        assert received > 0
        wait_until(lambda: stored(self.tps, self.stream) >= received, 20,
                   what=f"the {received} readings {self.stream} received to be stored")
        assert stored(self.tps, self.stream) > self.stored_before


# --- small hostile servers -----------------------------------------------------------------


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    conn.settimeout(5)
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _accept_key(request: bytes) -> str:
    for line in request.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "sec-websocket-key":
            digest = hashlib.sha1(
                (value.strip() + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
            return base64.b64encode(digest).decode()
    return ""


class RogueServer:
    """A loopback TCP server that answers every connection the same hostile way and
    counts connections.

    ``mode``: ``redirect`` (HTTP 302 to ``location``), ``close`` (accept the websocket
    handshake, then close it with the reason ``reason``), ``count`` (read the request,
    say nothing).
    """

    def __init__(self, mode: str, *, location: str = "", reason: str = "") -> None:
        self.mode = mode
        self.location = location
        self.reason = reason
        self.connections = 0
        self.requests: list[bytes] = []
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def url(self, path: str = "/graphql") -> str:
        """ws:// URL of this server."""
        return f"ws://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with contextlib.suppress(OSError), conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        req = _read_request(conn)
        self.requests.append(req)
        if self.mode == "redirect":
            conn.sendall(f"HTTP/1.1 302 Found\r\nLocation: {self.location}\r\n"
                         "Content-Length: 0\r\n\r\n".encode())
        elif self.mode == "close":
            conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Accept: "
                          f"{_accept_key(req)}\r\n\r\n").encode())
            payload = (1000).to_bytes(2, "big") + self.reason.encode()[:123]
            conn.sendall(bytes([0x88, len(payload)]) + payload)
            time.sleep(0.2)
        else:
            time.sleep(0.5)

    def close(self) -> None:
        """Stop serving."""
        self._stop.set()
        self._sock.close()
        self._thread.join(2)


@contextlib.contextmanager
def rogue(mode: str, **kwargs: str) -> Iterator[RogueServer]:
    """A :class:`RogueServer` for the ``with`` block."""
    server = RogueServer(mode, **kwargs)
    try:
        yield server
    finally:
        server.close()


def raw_exchange(port: int, data: bytes, *, wait: float = 2.0,
                 source: str | None = None) -> bytes:
    """Send ``data`` on a new connection (from ``source`` if given) and return what comes
    back within ``wait`` seconds, or until the server closes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=wait,
                                    source_address=(source, 0) if source else None)
    with sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        received = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                break
            if not chunk:
                break
            received += chunk
        return received
