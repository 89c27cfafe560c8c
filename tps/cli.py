"""The ``tps`` command: serve, simulate, demo, and the operator commands.

Configuration errors print one line naming the setting and exit with code 2 before
anything is started.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from tps import __version__
from tps.config import Settings, load_settings
from tps.config.settings import SETTINGS, defaults_table
from tps.errors import ConfigError

logger = logging.getLogger(__name__)

EXIT_CONFIG = 2

# flag -> environment name; flags share the environment's parsers
_SERVE_FLAGS: tuple[tuple[str, str, str], ...] = (
    ("--influx-url", "TPS_INFLUX_URL", "InfluxDB URL (unset: embedded SQLite store)"),
    ("--influx-db", "TPS_INFLUX_DB", "InfluxDB database or bucket"),
    ("--http-host", "TPS_HTTP_HOST", "HTTP listen address"),
    ("--http-port", "TPS_HTTP_PORT", "HTTP listen port"),
    ("--data-dir", "TPS_DATA_DIR", "data folder (spool, registry, token, SQLite store)"),
    ("--role", "TPS_ROLE", "all, ingest, api or writer (cluster mode)"),
    ("--log-level", "TPS_LOG_LEVEL", "debug, info, warning or error"),
    ("--log-format", "TPS_LOG_FORMAT", "text or json"),
    ("--batch-size", "TPS_BATCH_SIZE", "readings per InfluxDB write"),
    ("--flush-interval", "TPS_FLUSH_INTERVAL", "seconds between flushes"),
    ("--spool", "TPS_SPOOL", "on or off"),
)


_PARSERS = {spec.env: spec.parse for spec in SETTINGS}
_DEFAULTS = {env: default for env, default, _ in defaults_table()}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows every option's default."""


def _flag_type(flag: str, env: str) -> Callable[[str], str]:
    """An argparse ``type`` that checks a flag with its setting's own parser, so a bad
    value is reported against the flag (``--http-port``), not the environment name."""
    parse = _PARSERS[env]

    def check(raw: str) -> str:
        try:
            parse(flag, raw)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(exc.problem) from None
        return raw  # load_settings parses it again, in its place in the resolution order

    return check


def _add_settings_flags(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    parser.add_argument("--config", type=Path, help="TOML settings file")
    parser.add_argument(
        "--feed", action="append", default=[], metavar="NAME=URL",
        help="a feed to subscribe to (repeatable; replaces TPS_FEEDS)",
    )
    for flag, env, help_text in _SERVE_FLAGS:
        if flag in skip:
            continue
        default = _DEFAULTS.get(env) or "unset"
        parser.add_argument(flag, dest=env, metavar=env.removeprefix("TPS_"),
                            type=_flag_type(flag, env), default=argparse.SUPPRESS,
                            help=f"{help_text} (default: {env} or {default})")


def settings_from_args(args: argparse.Namespace, env: dict[str, str] | None = None) -> Settings:
    """Resolve settings for ``args`` (defaults < --config < environment < flags)."""
    overrides = {env_name: str(getattr(args, env_name)) for _, env_name, _ in _SERVE_FLAGS
                 if getattr(args, env_name, None) is not None}
    if getattr(args, "feed", None):
        overrides["TPS_FEEDS"] = ",".join(args.feed)
    return load_settings(dict(os.environ) if env is None else env,
                         getattr(args, "config", None), overrides)


def wait_for_signal() -> str:
    """Block the main thread until SIGINT or SIGTERM; return the signal's name."""
    received: list[str] = []
    done = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)
        done.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not done.wait(1.0):
            pass
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return received[0]


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the service until SIGINT/SIGTERM."""
    from tps.logging_setup import configure_logging
    from tps.service import Service

    settings = settings_from_args(args)
    configure_logging(settings.log_level, settings.log_format)
    service = Service(settings)
    service.start()
    name = wait_for_signal()
    logger.info("Received %s: stopping readers, flushing the writer (at most %.1f s)",
                name, settings.shutdown_timeout)
    clean = service.stop()
    logger.info("TPS stopped %s", "cleanly" if clean else "with unwritten readings left")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulator with three feeds + the whole service on the embedded store."""
    from tps.demo import run_demo

    return run_demo(settings_from_args(args), feeds=args.feeds, sim_port=args.sim_port,
                    interval=args.interval, wait=wait_for_signal)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``tps`` subcommand."""
    parser = argparse.ArgumentParser(prog="tps", description="Temperature Processor Service",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"tps {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the service until SIGINT/SIGTERM",
                           formatter_class=HelpFormatter)
    _add_settings_flags(serve)
    serve.set_defaults(func=cmd_serve, parser=serve)

    demo = sub.add_parser("demo", help="simulated feeds + the service on the embedded store",
                          formatter_class=HelpFormatter)
    _add_settings_flags(demo, skip=("--role",))  # the demo always runs every part
    demo.add_argument("--feeds", type=int, default=3, help="number of simulated feeds")
    demo.add_argument("--sim-port", type=int, default=0, help="simulator port (0: any)")
    demo.add_argument("--interval", type=float, default=0.5, help="seconds between readings")
    demo.set_defaults(func=cmd_demo, parser=demo)

    from tps.feeds import simulator

    simulate = sub.add_parser("simulate", help="serve a satellite-temperature compatible feed",
                              formatter_class=HelpFormatter)
    simulator.add_arguments(simulate)
    simulate.set_defaults(func=simulator.run, parser=simulate)

    from tps import control_cli

    control_cli.add_subcommands(sub, HelpFormatter)

    from tps.history import cli as history_cli

    history_cli.add_subcommand(sub, _add_settings_flags)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; an unknown option is reported with the usage of the subcommand it
    was given to (``tps serve --bogus`` shows ``tps serve``'s usage, not ``tps``')."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        owner: argparse.ArgumentParser = getattr(args, "parser", None) or parser
        owner.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tps`` console script."""
    parser = build_parser()
    args = parse_args(parser, argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        print(f"tps: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
