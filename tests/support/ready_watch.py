"""Poll a TPS's ``/ready`` from a process of its own and report how it answered.

``python -m tests.support.ready_watch URL [INTERVAL]`` polls ``URL/ready`` every INTERVAL
seconds (default 0.02) on a new connection each time, until its stdin closes; then it
prints one JSON line: ``{"polls", "max_ms", "p99_ms", "failures"}``. A poll fails when
it takes longer than 1 s, errs, or answers anything but 200.

Its own process, so the attack a test runs (threads, sockets, parsing) cannot slow the
measurement down through the test process's interpreter lock.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from urllib.parse import urlsplit


def poll_once(host: str, port: int) -> tuple[float, str | None]:
    """(milliseconds, failure or None) of one GET /ready."""
    started = time.perf_counter()
    try:
        conn = http.client.HTTPConnection(host, port, timeout=1.0)
        conn.request("GET", "/ready", headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        conn.close()
        problem = None if response.status == 200 else f"HTTP {response.status}"
    except OSError as exc:
        problem = f"{type(exc).__name__}: {exc}"
    return (time.perf_counter() - started) * 1000, problem


def main() -> None:
    url = urlsplit(sys.argv[1])
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 0.02
    assert url.hostname and url.port
    done = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    latencies: list[float] = []
    failures: list[str] = []
    print("started", flush=True)
    while not done.is_set():
        ms, problem = poll_once(url.hostname, url.port)
        latencies.append(ms)
        if problem is not None:
            failures.append(f"{problem} after {ms:.0f} ms")
        done.wait(interval)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
    print(json.dumps({"polls": len(latencies), "max_ms": max(latencies, default=0.0),
                      "p99_ms": p99, "failures": failures[:20]}), flush=True)


if __name__ == "__main__":
    main()
