"""Operator commands against a running TPS: ``tps streams``, ``tps tail``, ``tps ts``.

Standard library HTTP only, so the commands work from any Python without extras; the
table's columns come from :mod:`tps.api.stream_shape`.
The control token comes from ``--token``, else ``TPS_CONTROL_TOKEN``, else the
``control-token`` file in the data dir (``--data-dir`` / ``TPS_DATA_DIR``). Every
command returns an exit code: 0 done, 1 the server refused or is unreachable, 2 bad
usage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from tps.api.stream_shape import STREAM_FIELDS
from tps.config.settings import PROTOCOLS
from tps.timefmt import iso8601_to_ns, ns_to_iso8601
from tps.token import read_token_file

Command = Callable[[argparse.Namespace], int]

_TAIL_QUERY = (
    "query Tail($after: DateTime, $stream: String) { "
    "temperatureMeasurements(after: $after, stream: $stream) { stream time value } }"
)


class CliError(Exception):
    """A failure to report in one line (exit code 1)."""


# --- HTTP ---------------------------------------------------------------------------


class ControlClient:
    """A tiny JSON-over-HTTP client for the control plane."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None, auth: bool = False) -> Any:
        """Send one request; the decoded JSON answer (None for 204); raise CliError."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            if not self.token:
                raise CliError(
                    "no control token: pass --token, set TPS_CONTROL_TOKEN, or point "
                    "--data-dir at the server's data dir (it holds control-token)"
                )
            headers["Authorization"] = f"Bearer {self.token}"
        url = self.base_url + path
        req = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise CliError(_describe_http_error(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"cannot reach TPS at {self.base_url}: {reason}") from None
        return json.loads(raw) if raw else None


def _describe_http_error(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read())["error"]
        field = f" (field {error['field']})" if error.get("field") else ""
        return f"{exc.code} {error['code']}: {error['message']}{field}"
    except (ValueError, KeyError, TypeError):
        return f"{exc.code} {exc.reason}"


def _default_url(env: Mapping[str, str]) -> str:
    if env.get("TPS_URL"):
        return env["TPS_URL"]
    host = env.get("TPS_HTTP_HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):  # a listen-anywhere address: talk locally
        host = "127.0.0.1"
    return f"http://{host}:{env.get('TPS_HTTP_PORT') or 8000}"


def resolve_token(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    """--token, else TPS_CONTROL_TOKEN, else the data dir's control-token file."""
    if getattr(args, "token", None):
        return str(args.token)
    if env.get("TPS_CONTROL_TOKEN"):
        return env["TPS_CONTROL_TOKEN"]
    return read_token_file(Path(args.data_dir))


def _client(args: argparse.Namespace) -> ControlClient:
    return ControlClient(args.url, resolve_token(args, os.environ), timeout=args.timeout)


# --- commands ------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _print_table(streams: list[dict[str, Any]], out: IO[str]) -> None:
    columns = [spec for spec in STREAM_FIELDS if spec.column is not None]
    rows = [tuple(str(spec.column) for spec in columns)]
    for s in streams:
        rows.append(tuple(_cell(s.get(spec.name)) for spec in columns))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


def cmd_streams(args: argparse.Namespace) -> int:
    """``tps streams list|add|rm|stop|start``."""
    client = _client(args)
    out: IO[str] = sys.stdout
    try:
        if args.action == "list":
            streams = client.request("GET", "/api/streams")["streams"]
            if args.json:
                json.dump(streams, out, indent=2)
                out.write("\n")
            else:
                _print_table(streams, out)
            return 0
        path = f"/api/streams/{quote(args.name, safe='')}"
        if args.action == "add":
            body: dict[str, Any] = {"name": args.name, "url": args.feed_url,
                                    "protocol": args.protocol, "started": not args.stopped}
            if args.query:
                body["query"] = args.query
            stream = client.request("POST", "/api/streams", body, auth=True)
            out.write(f"added {stream['name']} ({stream['state']})\n")
        elif args.action == "rm":
            client.request("DELETE", path, auth=True)
            out.write(f"removed {args.name}\n")
        else:
            stream = client.request("POST", f"{path}/{args.action}", {}, auth=True)
            out.write(f"{stream['name']}: {stream['state']}\n")
    except CliError as exc:
        sys.stderr.write(f"tps streams {args.action}: {exc}\n")
        return 1
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    """``tps tail``: print new readings every ``--interval`` seconds (the seed's reader)."""
    client = _client(args)
    after = ns_to_iso8601(time.time_ns() - int(args.since * 1e9))
    seen: set[tuple[str, str]] = set()
    rounds = 0
    try:
        while True:
            variables = {"after": after, "stream": args.stream}
            answer = client.request("POST", "/graphql", {"query": _TAIL_QUERY,
                                                         "variables": variables})
            if answer.get("errors"):
                raise CliError("; ".join(e.get("message", "?") for e in answer["errors"]))
            readings = answer["data"]["temperatureMeasurements"]
            fresh = [r for r in readings if (r["stream"], r["time"]) not in seen]
            for r in fresh:
                sys.stdout.write(f"{r['time']}  {r['stream']}  {r['value']}\n")
            sys.stdout.flush()
            if readings:
                # ``after`` is inclusive: remember the newest instant's readings to skip them.
                after = readings[-1]["time"]
                seen = {(r["stream"], r["time"]) for r in readings if r["time"] == after}
            rounds += 1
            if args.count and rounds >= args.count:
                return 0
            time.sleep(args.interval)
    except CliError as exc:
        sys.stderr.write(f"tps tail: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 0


def cmd_ts(args: argparse.Namespace) -> int:
    """``tps ts``: ISO 8601 -> epoch nanoseconds, or epoch nanoseconds -> ISO 8601."""
    value = args.value.strip()
    try:
        if re.fullmatch(r"-?\d+", value):
            print(ns_to_iso8601(int(value)))
        else:
            print(iso8601_to_ns(value))
    except (ValueError, OverflowError, OSError) as exc:
        sys.stderr.write(f"tps ts: {exc}\n")
        return 2
    return 0


def _server_options(parser: argparse.ArgumentParser) -> None:
    env = os.environ
    parser.add_argument("--url", default=_default_url(env),
                        help="TPS base URL (default: TPS_URL or http://TPS_HTTP_HOST:TPS_HTTP_PORT)")
    parser.add_argument("--token", help="control token (default: TPS_CONTROL_TOKEN or the "
                        "data dir's control-token file)")
    parser.add_argument("--data-dir", default=env.get("TPS_DATA_DIR") or "tps-data",
                        help="data dir holding control-token (default: TPS_DATA_DIR or tps-data)")
    parser.add_argument("--timeout", type=float, default=15.0, help="HTTP timeout in seconds")


def add_subcommands(subparsers: Any) -> None:
    """Add ``streams``, ``tail`` and ``ts`` to an argparse ``add_subparsers()`` object.

    Each sub-parser sets ``func``: call ``args.func(args)`` and exit with its result.
    """
    streams = subparsers.add_parser("streams", help="list and change the streams of a running TPS")
    actions = streams.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every stream with its state and counters")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add = actions.add_parser("add", help="add a stream (starts at once)")
    add.add_argument("name")
    add.add_argument("feed_url", metavar="url", help="ws:// or wss:// feed URL")
    add.add_argument("--protocol", default="auto", choices=PROTOCOLS)
    add.add_argument("--query", help="subscription document (default: the temperature one)")
    add.add_argument("--stopped", action="store_true", help="register without starting")
    for action, text in (("rm", "stop and forget a stream"), ("stop", "pause a stream"),
                         ("start", "resume a stream")):
        actions.add_parser(action, help=text).add_argument("name")
    for sub in (listing, add, *(actions.choices[a] for a in ("rm", "stop", "start"))):
        _server_options(sub)
        sub.set_defaults(func=cmd_streams)

    tail = subparsers.add_parser("tail", help="print new readings every 2 s")
    tail.add_argument("--stream", help="only this stream")
    tail.add_argument("--interval", type=float, default=2.0, help="seconds between queries")
    tail.add_argument("--since", type=float, default=10.0, help="start this many seconds back")
    tail.add_argument("--count", type=int, default=0, help="stop after N queries (0: never)")
    _server_options(tail)
    tail.set_defaults(func=cmd_tail)

    ts = subparsers.add_parser("ts", help="convert ISO 8601 <-> epoch nanoseconds")
    ts.add_argument("value", help="an ISO 8601 instant, or epoch nanoseconds")
    ts.set_defaults(func=cmd_ts)


def main(argv: list[str] | None = None) -> int:
    """Run one operator command (for ``python -m tps.control_cli`` and tests)."""
    parser = argparse.ArgumentParser(prog="tps")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
