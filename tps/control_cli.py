"""Operator commands: ``tps streams``, ``tps tail`` and ``tps token`` against a running
TPS, and ``tps ts``.

Standard library HTTP only, so the commands work from any Python without extras; the
table's columns come from :mod:`tps.api.stream_shape`. The TPS address is
``--server`` (``--url`` is its old name, refused on ``tps streams add``, where the feed's
URL is the positional argument). The control token comes from ``--token``, else
``TPS_CONTROL_TOKEN``, else the ``control-token`` file in the data dir (``--data-dir`` /
``TPS_DATA_DIR``); ``tps token`` prints it (in Docker: ``docker compose exec tps tps
token``). Every command returns an exit code: 0 done, 1 the server refused or is
unreachable (or there is no token), 2 bad usage.
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
    "query Tail($after: DateTime, $stream: String, $cursor: String) { "
    "temperatureMeasurementsPage(after: $after, stream: $stream, cursor: $cursor, "
    "first: 10000) { readings { stream time value } nextCursor hasMore } }"
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


def _data_dir(args: argparse.Namespace, env: Mapping[str, str]) -> Path:
    return Path(getattr(args, "data_dir", None) or env.get("TPS_DATA_DIR") or "tps-data")


def resolve_token(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    """--token, else TPS_CONTROL_TOKEN, else the data dir's control-token file."""
    if getattr(args, "token", None):
        return str(args.token)
    if env.get("TPS_CONTROL_TOKEN"):
        return env["TPS_CONTROL_TOKEN"]
    return read_token_file(_data_dir(args, env))


def _client(args: argparse.Namespace) -> ControlClient:
    env = os.environ
    server = getattr(args, "server", None) or _default_url(env)
    return ControlClient(server, resolve_token(args, env),
                         timeout=getattr(args, "timeout", None) or DEFAULT_TIMEOUT)


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
    action = args.action or "list"  # ``tps streams`` alone lists
    try:
        if action == "list":
            streams = client.request("GET", "/api/streams")["streams"]
            if getattr(args, "json", False):
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
        sys.stderr.write(f"tps streams {action}: {exc}\n")
        return 1
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    """``tps tail``: print new readings every ``--interval`` seconds (the seed's reader).

    Pages with the server's cursor, so a burst larger than one page is printed whole and
    no reading is printed twice.
    """
    client = _client(args)
    after = ns_to_iso8601(time.time_ns() - int(args.since * 1e9))
    cursor: str | None = None
    rounds = 0
    try:
        while True:
            more = True
            while more:
                variables = {"after": after, "stream": args.stream, "cursor": cursor}
                answer = client.request("POST", "/graphql", {"query": _TAIL_QUERY,
                                                             "variables": variables})
                if answer.get("errors"):
                    raise CliError("; ".join(e.get("message", "?") for e in answer["errors"]))
                page = answer["data"]["temperatureMeasurementsPage"]
                for r in page["readings"]:
                    sys.stdout.write(f"{r['time']}  {r['stream']}  {r['value']}\n")
                cursor, more = page["nextCursor"], page["hasMore"]
            sys.stdout.flush()
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
    """``tps ts``: ISO 8601 (or ``now``) -> epoch nanoseconds, or epoch nanoseconds ->
    ISO 8601."""
    value = args.value.strip()
    try:
        if value.lower() == "now":
            print(time.time_ns())
        elif re.fullmatch(r"-?\d+", value):
            print(ns_to_iso8601(int(value)))
        else:
            print(iso8601_to_ns(value))
    except (ValueError, OverflowError, OSError) as exc:
        sys.stderr.write(f"tps ts: {exc}\n")
        return 2
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """``tps token``: print the control token (what ``--token`` would default to)."""
    token = resolve_token(args, os.environ)
    if token is None:
        where = _data_dir(args, os.environ) / "control-token"
        sys.stderr.write(f"tps token: no control token: TPS_CONTROL_TOKEN is unset and {where} "
                         "does not exist (TPS writes it at its first start; pass --data-dir)\n")
        return 1
    print(token)
    return 0


DEFAULT_TIMEOUT = 15.0


class _Misplaced(argparse.Action):
    """An option that is refused with a hint (``--url`` on ``tps streams add``)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        parser.error(f"{option_string}: give the feed's URL as the argument after the name; "
                     "the TPS address is --server")


def _server_options(parser: argparse.ArgumentParser, url_alias: bool = True) -> None:
    # Defaults are resolved when a command runs (see _client), so options given to
    # ``tps streams`` and to ``tps streams list`` never overwrite each other.
    parser.add_argument("--server", default=argparse.SUPPRESS, metavar="URL",
                        help="TPS base URL (default: TPS_URL, else "
                        "http://TPS_HTTP_HOST:TPS_HTTP_PORT, else http://127.0.0.1:8000)")
    if url_alias:
        parser.add_argument("--url", dest="server", default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)
    else:
        parser.add_argument("--url", action=_Misplaced, help=argparse.SUPPRESS)
    _token_options(parser)
    parser.add_argument("--timeout", type=float, default=argparse.SUPPRESS,
                        help=f"HTTP timeout in seconds (default: {DEFAULT_TIMEOUT:g})")


def _token_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token", default=argparse.SUPPRESS,
                        help="control token (default: TPS_CONTROL_TOKEN, else the data dir's "
                        "control-token file)")
    parser.add_argument("--data-dir", default=argparse.SUPPRESS,
                        help="data dir holding control-token (default: TPS_DATA_DIR, else "
                        "tps-data)")


def add_subcommands(
    subparsers: Any, formatter: type[argparse.HelpFormatter] = argparse.HelpFormatter
) -> None:
    """Add ``streams``, ``tail``, ``token`` and ``ts`` to an argparse ``add_subparsers()``.

    Each sub-parser sets ``func`` (call ``args.func(args)`` and exit with its result)
    and ``parser`` (itself, to report usage errors with its own usage).
    """
    def parser_for(parent: Any, name: str, text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = parent.add_parser(name, help=text, description=text,
                                                         formatter_class=formatter)
        return sub

    streams = parser_for(subparsers, "streams",
                         "list (the default) and change the streams of a running TPS")
    _server_options(streams)
    streams.set_defaults(func=cmd_streams, parser=streams, action=None)
    actions = streams.add_subparsers(dest="action", metavar="ACTION")
    listing = parser_for(actions, "list", "every stream with its state and counters")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add = parser_for(actions, "add", "add a stream (starts at once)")
    add.add_argument("name")
    add.add_argument("feed_url", metavar="url", help="the feed's ws:// or wss:// URL")
    add.add_argument("--protocol", default="auto", choices=PROTOCOLS)
    add.add_argument("--query", help="subscription document (default: the temperature one)")
    add.add_argument("--stopped", action="store_true", help="register without starting")
    for action, text in (("rm", "stop and forget a stream"), ("stop", "pause a stream"),
                         ("start", "resume a stream")):
        parser_for(actions, action, text).add_argument("name")
    for name, sub in actions.choices.items():
        _server_options(sub, url_alias=name != "add")
        sub.set_defaults(func=cmd_streams, parser=sub)

    tail = parser_for(subparsers, "tail", "print new readings every 2 s")
    tail.add_argument("--stream", help="only this stream")
    tail.add_argument("--interval", type=float, default=2.0, help="seconds between queries")
    tail.add_argument("--since", type=float, default=10.0, help="start this many seconds back")
    tail.add_argument("--count", type=int, default=0, help="stop after N queries (0: never)")
    _server_options(tail)
    tail.set_defaults(func=cmd_tail, parser=tail)

    token = parser_for(subparsers, "token", "print the control token (in Docker: "
                       "docker compose exec tps tps token)")
    _token_options(token)
    token.set_defaults(func=cmd_token, parser=token)

    ts = parser_for(subparsers, "ts", "convert ISO 8601 <-> epoch nanoseconds")
    ts.add_argument("value", help="an ISO 8601 instant, now, or epoch nanoseconds")
    ts.set_defaults(func=cmd_ts, parser=ts)


def main(argv: list[str] | None = None) -> int:
    """Run one operator command (for ``python -m tps.control_cli`` and tests)."""
    parser = argparse.ArgumentParser(prog="tps")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args, extra = parser.parse_known_args(argv)
    if extra:
        args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
