"""Many GraphQL subscribers in one separate process (``python -m tests.support.ws_load``).

Used by the fan-out test and ``bench/fanout.py``: the clients must not share the
server's process (and its GIL), or the measurement would be of the test, not of TPS.
Each client speaks ``graphql-transport-ws`` (or ``graphql-ws``) with the ``websockets``
library, subscribes, and counts the readings it receives, checking their order and
the delay from the reading's time to its arrival. Prints ``READY`` once every client
is subscribed and one JSON summary line at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime
from typing import Any

import websockets


async def _subscriber(
    url: str, protocol: str, query: str, expect: int, timeout: float,
    subscribed: asyncio.Queue[int], go: asyncio.Event,
) -> dict[str, Any]:
    modern = protocol == "graphql-transport-ws"
    result: dict[str, Any] = {"received": 0, "in_order": True, "lags": [], "error": None}
    try:
        async with websockets.connect(url, subprotocols=[protocol],  # type: ignore[list-item]
                                      max_size=1 << 20, open_timeout=30) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            while json.loads(await ws.recv()).get("type") != "connection_ack":
                pass
            await ws.send(json.dumps({"id": "1", "type": "subscribe" if modern else "start",
                                      "payload": {"query": query}}))
            await subscribed.put(1)
            await go.wait()
            last = float("-inf")
            deadline = time.monotonic() + timeout
            while result["received"] < expect:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                message = json.loads(await asyncio.wait_for(ws.recv(), remaining))
                if message.get("type") not in ("next", "data"):
                    if message.get("type") in ("error", "complete"):
                        result["error"] = message
                        break
                    continue
                now = time.time()
                reading = message["payload"]["data"]["temperature"]
                stamp = datetime.fromisoformat(reading["time"]).timestamp()
                result["lags"].append(now - stamp)
                if reading["value"] <= last:
                    result["in_order"] = False
                last = reading["value"]
                result["received"] += 1
    except Exception as exc:  # noqa: BLE001 - reported in the summary
        result["error"] = repr(exc)
    return result


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    subscribed: asyncio.Queue[int] = asyncio.Queue()
    go = asyncio.Event()
    query = "subscription { temperature%s { time value stream } }" % (
        f'(stream: "{args.stream}")' if args.stream else "")
    tasks = [
        asyncio.create_task(_subscriber(args.url, args.protocol, query, args.expect,
                                        args.timeout, subscribed, go))
        for _ in range(args.clients)
    ]
    for _ in range(args.clients):
        await asyncio.wait_for(subscribed.get(), 60)
    # Every subscribe message is sent; the caller waits until the server counts them all.
    print("READY", flush=True)
    go.set()
    results = await asyncio.gather(*tasks)
    lags = sorted(lag for r in results for lag in r["lags"])

    def pct(p: float) -> float | None:
        return lags[min(len(lags) - 1, int(p * len(lags)))] if lags else None

    return {
        "clients": args.clients,
        "received": [r["received"] for r in results],
        "in_order": all(r["in_order"] for r in results),
        "errors": [r["error"] for r in results if r["error"]][:5],
        "lag_p50": pct(0.50),
        "lag_p99": pct(0.99),
        "lag_max": lags[-1] if lags else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--expect", type=int, required=True, help="readings each must get")
    parser.add_argument("--protocol", default="graphql-transport-ws")
    parser.add_argument("--stream", default="")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)
    summary = asyncio.run(_main(args))
    print(json.dumps(summary), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
