"""Real NATS JetStream servers for tests: Debian's ``nats-server`` on free loopback ports.

Tests never mock NATS. ``NatsCluster(size=1)`` is a single JetStream server;
``NatsCluster(size=3)`` is a three-node RAFT cluster (client, route and monitoring
port per node, a temporary store folder per node). ``start`` returns once every node
answers ``/healthz`` and reports a JetStream meta leader, so a test's first request
does not meet "JetStream system temporarily unavailable". Single nodes can be killed
(``kill -9``), stopped and restarted on the same ports with the same store.

A missing binary fails the test with the install command, never skips it.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.influxdb import free_port

INSTALL_HINT = (
    "nats-server not found: install Debian's NATS server with "
    "'apt-get update && apt-get install -y nats-server' (scripts/test does this)"
)
CLUSTER_NAME = "tps-test"


@dataclass
class NatsNode:
    """One ``nats-server`` process of a cluster (ports fixed for its lifetime)."""

    name: str
    client_port: int
    cluster_port: int
    monitor_port: int
    folder: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL, ``nats://127.0.0.1:<port>``."""
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def jsz(self) -> dict[str, object]:
        """The node's ``/jsz`` monitoring answer (JetStream state)."""
        url = f"http://127.0.0.1:{self.monitor_port}/jsz"
        with urllib.request.urlopen(url, timeout=1) as resp:
            answer: dict[str, object] = json.load(resp)
        return answer

    def healthy(self) -> bool:
        """True when ``/healthz`` answers ok and JetStream knows its meta leader."""
        if not self.running:
            return False
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.monitor_port}/healthz", timeout=1) as resp:
                if resp.status != 200:
                    return False
            jsz = self.jsz()
        except (OSError, ValueError):
            return False
        meta = jsz.get("meta_cluster")
        if meta is None:  # a single server has no meta group: JetStream is simply on
            return not jsz.get("disabled", False)
        return isinstance(meta, dict) and bool(meta.get("leader"))

    def log(self) -> str:
        """What the server printed so far."""
        path = self.folder / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


class NatsCluster:
    """``size`` JetStream servers on loopback, clustered when ``size`` > 1."""

    def __init__(self, size: int = 1) -> None:
        self.binary = shutil.which("nats-server")
        if self.binary is None:
            raise RuntimeError(INSTALL_HINT)
        self.tmp = Path(tempfile.mkdtemp(prefix="tps-nats-"))
        self.nodes = [
            NatsNode(f"n{i + 1}", free_port(), free_port(), free_port(), self.tmp / f"n{i + 1}")
            for i in range(size)
        ]
        for node in self.nodes:
            node.folder.mkdir()
            (node.folder / "server.conf").write_text(self._config(node))

    @property
    def urls(self) -> list[str]:
        """Client URL of every node."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated (the form ``TPS_NATS_URL`` takes)."""
        return ",".join(self.urls)

    def _config(self, node: NatsNode) -> str:
        lines = [
            f"server_name: {node.name}",
            f"listen: 127.0.0.1:{node.client_port}",
            f"http: 127.0.0.1:{node.monitor_port}",
            "jetstream {",
            f'  store_dir: "{node.folder / "store"}"',
            "  max_memory_store: 64MB",
            "  max_file_store: 2GB",
            "}",
        ]
        if len(self.nodes) > 1:
            routes = ", ".join(f"nats-route://127.0.0.1:{other.cluster_port}"
                               for other in self.nodes if other is not node)
            lines += [
                "cluster {",
                f"  name: {CLUSTER_NAME}",
                f"  listen: 127.0.0.1:{node.cluster_port}",
                f"  routes: [{routes}]",
                "}",
            ]
        return "\n".join(lines) + "\n"

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> NatsCluster:
        """Start every node and wait until JetStream is usable on all of them."""
        for node in self.nodes:
            self.start_node(node, wait=False)
        self.wait_healthy(timeout)
        return self

    def start_node(self, node: NatsNode | int | str, wait: bool = True,
                   timeout: float = 30.0) -> None:
        """(Re)start one node on its ports with its store; optionally wait until healthy."""
        node = self._node(node)
        if node.running:
            return
        assert self.binary is not None
        log = open(node.folder / "server.log", "ab")  # noqa: SIM115 - handed to the child
        node.proc = subprocess.Popen(
            [self.binary, "-c", str(node.folder / "server.conf")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_healthy(timeout, [node])

    def wait_healthy(self, timeout: float = 30.0, nodes: list[NatsNode] | None = None) -> None:
        """Block until ``nodes`` (default: every running node) are healthy, or raise."""
        waiting = nodes if nodes is not None else [n for n in self.nodes if n.running]
        deadline = time.monotonic() + timeout
        while True:
            for node in waiting:
                if node.proc is not None and node.proc.poll() is not None:
                    raise RuntimeError(f"nats-server {node.name} exited with "
                                       f"{node.proc.returncode}:\n{node.log()[-3000:]}")
            if all(node.healthy() for node in waiting):
                return
            if time.monotonic() > deadline:
                sick = [node.name for node in waiting if not node.healthy()]
                raise RuntimeError(f"nats-server {', '.join(sick)} not healthy in {timeout}s:\n"
                                   + "\n".join(self._node(n).log()[-2000:] for n in sick))
            time.sleep(0.1)

    def kill(self, node: NatsNode | int | str) -> None:
        """``kill -9`` one node (crash simulation); its store stays for a restart."""
        node = self._node(node)
        if node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait(10)

    def stop(self, node: NatsNode | int | str) -> None:
        """Stop one node cleanly (SIGTERM, then SIGKILL after 10 s)."""
        node = self._node(node)
        if node.proc is None or node.proc.poll() is not None:
            return
        node.proc.send_signal(signal.SIGTERM)
        try:
            node.proc.wait(10)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait()

    def meta_leader(self) -> str | None:
        """Name of the JetStream meta leader as a running node sees it, or None."""
        for node in self.nodes:
            if not node.running:
                continue
            try:
                meta = node.jsz().get("meta_cluster")
            except (OSError, ValueError):
                continue
            if isinstance(meta, dict) and meta.get("leader"):
                return str(meta["leader"])
        return None

    def stream_leader(self, stream: str) -> str | None:
        """Name of the node leading JetStream stream ``stream`` (e.g. ``KV_tps-leases``)."""
        for node in self.nodes:
            if not node.running:
                continue
            url = f"http://127.0.0.1:{node.monitor_port}/jsz?accounts=true&streams=true"
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    jsz = json.load(resp)
            except (OSError, ValueError):
                continue
            for account in jsz.get("account_details") or []:
                for detail in account.get("stream_detail") or []:
                    leader = (detail.get("cluster") or {}).get("leader")
                    if detail.get("name") == stream and leader:
                        return str(leader)
        return None

    def close(self) -> None:
        """Kill every node and remove the stores."""
        for node in self.nodes:
            self.kill(node)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _node(self, node: NatsNode | int | str) -> NatsNode:
        if isinstance(node, NatsNode):
            return node
        if isinstance(node, int):
            return self.nodes[node]
        return next(n for n in self.nodes if n.name == node)

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
