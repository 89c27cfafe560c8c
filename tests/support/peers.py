"""Feed servers for reader tests: the simulator and the node peers as subprocesses, and
a raw TCP server that completes a websocket upgrade and then misbehaves on purpose.

Every server listens on loopback, on a port the OS picks (read back from the server's
ready line), and every wait here is bounded.
"""

from __future__ import annotations

import base64
import hashlib
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PEERS_DIR = REPO / "tests" / "peers"
INSTALL_HINT = "npm ci --prefix tests/peers"
_PORT = re.compile(r"(?:port=|127\.0\.0\.1:)(\d+)")
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class PeerProcess:
    """A feed server in a subprocess; knows its port and can be killed and restarted."""

    def __init__(self, name: str, argv: Sequence[str], ready_timeout: float = 15.0) -> None:
        self.name = name
        self.argv = list(argv)
        self.ready_timeout = ready_timeout
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self, port: int = 0) -> PeerProcess:
        """Start on ``port`` (0: any free port) and wait for the ready line."""
        argv = [part.replace("{port}", str(port)) for part in self.argv]
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain, args=(self.proc, lines), daemon=True).start()
        deadline = time.monotonic() + self.ready_timeout
        while True:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = None
                if time.monotonic() < deadline:
                    continue
            if line is None:
                self.kill()
                raise RuntimeError(f"{self.name} did not start ({' '.join(argv)}): "
                                   + "".join(self.output[-20:]))
            match = _PORT.search(line)
            if match:
                self.port = int(match.group(1))
                return self

    def _drain(self, proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        # Keep reading so the child never blocks on a full pipe.
        assert proc.stdout is not None
        for line in proc.stdout:
            self.output.append(line)
            lines.put(line)
        lines.put(None)

    def url(self, path: str = "/graphql") -> str:
        """ws:// URL of ``path`` on this server."""
        return f"ws://127.0.0.1:{self.port}{path}"

    def kill(self) -> None:
        """SIGKILL the server (no goodbye to its clients) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self, argv: Sequence[str] | None = None) -> PeerProcess:
        """Start again on the same port (optionally with other arguments)."""
        self.kill()
        if argv is not None:
            self.argv = list(argv)
        return self.start(self.port)


def simulator_process(*args: str) -> PeerProcess:
    """The project's simulator (``python -m tps.feeds.simulator``), not yet started."""
    argv = [sys.executable, "-m", "tps.feeds.simulator", "--port", "{port}", *args]
    return PeerProcess("simulator", argv)


def require_node_peers() -> str:
    """Path of ``node``; raises with the install command when node or the packages are
    missing (the test then fails - it never skips)."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed: install Node.js 18+ and run "
                           f"`{INSTALL_HINT}`")
    for package in ("subscriptions-transport-ws", "graphql-ws", "graphql", "ws", "@apollo/client"):
        if not (PEERS_DIR / "node_modules" / package).is_dir():
            raise RuntimeError(f"node package {package!r} missing: run `{INSTALL_HINT}`")
    return node


def node_peer(kind: str, interval: float = 0.05) -> PeerProcess:
    """``legacy`` (subscriptions-transport-ws) or ``modern`` (graphql-ws) peer, not yet
    started; it emits 1.0, 2.0, 3.0, ... per subscription every ``interval`` s."""
    node = require_node_peers()
    script = {"legacy": "legacy-server.js", "modern": "modern-server.js"}[kind]
    return PeerProcess(f"node {kind} peer",
                       [node, str(PEERS_DIR / script), "{port}", str(interval)])


def free_port() -> int:
    """A loopback port nobody listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """An unmasked (server-to-client) websocket frame."""
    header = bytes([0x80 | opcode])
    size = len(payload)
    if size < 126:
        header += bytes([size])
    elif size < 1 << 16:
        header += bytes([126]) + size.to_bytes(2, "big")
    else:
        header += bytes([127]) + size.to_bytes(8, "big")
    return header + payload


class RawFeedServer:
    """Completes the websocket upgrade (choosing no subprotocol, so the client speaks
    plain JSON), sends ``frames``, then misbehaves according to ``behaviour``:

    - ``silent``: keeps the connection open and never sends another byte (it does not
      even answer pings);
    - ``midframe``: sends the first bytes of a frame and closes the connection;
    - ``close``: closes the TCP connection cleanly.
    """

    def __init__(self, behaviour: str, frames: Sequence[bytes | str] = ()) -> None:
        assert behaviour in ("silent", "midframe", "close")
        self.behaviour = behaviour
        self.frames = [f.encode() if isinstance(f, str) else f for f in frames]
        self.connections = 0
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._closed = threading.Event()
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> RawFeedServer:
        """Accept connections in a daemon thread."""
        self._thread.start()
        return self

    def url(self) -> str:
        """The ws:// URL to point a reader at."""
        return f"ws://127.0.0.1:{self.port}/graphql"

    def close(self) -> None:
        """Stop accepting and drop every open connection."""
        self._closed.set()
        self._thread.join(timeout=2)
        self._listener.close()
        for conn in self._open:
            conn.close()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(2)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            key = re.search(rb"Sec-WebSocket-Key:\s*(\S+)", request, re.I)
            assert key is not None
            accept = base64.b64encode(
                hashlib.sha1(key.group(1) + _WS_GUID.encode()).digest()).decode()
            conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                          ).encode())
            for frame in self.frames:
                conn.sendall(ws_frame(frame))
            if self.behaviour == "midframe":
                conn.sendall(ws_frame(b'{"value": 99.0, "padding": "xxxxxxxxxx"}')[:12])
                conn.close()
            elif self.behaviour == "close":
                conn.close()
            else:
                self._closed.wait(30)
        except OSError:
            pass
