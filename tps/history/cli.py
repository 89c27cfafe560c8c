"""``tps rollup``: where the stored rollups are exact, and rebuilding them on demand.

``tps rollup`` prints, per stream, the covered ranges and the hours still missing.
``tps rollup --rebuild [--after T] [--before T]`` recomputes every rollup in the range
(default: all stored history) from the raw readings, then computes whatever is still
missing. It talks to the store the settings name (``TPS_INFLUX_URL`` or the SQLite
store in ``TPS_DATA_DIR``), so it works whether or not TPS runs; it leaves each
stream's newest hour alone, which the running writer keeps itself.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from tps.errors import StoreError
from tps.history.backfill import Backfill, missing_tasks
from tps.history.buckets import HOUR
from tps.history.planner import Coverage

logger = logging.getLogger(__name__)


def cmd_rollup(args: argparse.Namespace) -> int:
    """Show coverage, or rebuild (exit 1 with one line when the store fails)."""
    from tps.cli import settings_from_args
    from tps.logging_setup import configure_logging
    from tps.store import open_store
    from tps.timefmt import iso8601_to_ns, ns_to_iso8601

    settings = settings_from_args(args)
    configure_logging(settings.log_level, settings.log_format)
    try:
        after = _instant(args.after, iso8601_to_ns)
        before = _instant(args.before, iso8601_to_ns)
    except ValueError as exc:
        sys.stderr.write(f"tps rollup: {exc}\n")
        return 2
    store = open_store(settings)
    try:
        store.ensure_ready()
        if args.rebuild:
            window = (after if after is not None else -(2**62),
                      before if before is not None else 2**62)
            forced = Backfill(store, force=window).run()
            rest = Backfill(store).run()
            print(f"rebuilt {forced.hours_done} stream-hours, then computed "
                  f"{rest.hours_done} missing ones")
        streams = store.stream_names()
        coverage = store.coverage(streams) if streams else {}
        newest = store.newest_times(streams) if streams else {}
        oldest = store.oldest_times(streams) if streams else {}
        missing = missing_tasks(oldest, newest, coverage)
        for stream in streams:
            covered = Coverage((lo, until + 1) for _, lo, until in coverage.get(stream, []))
            shown = ", ".join(f"{ns_to_iso8601(lo)} .. {ns_to_iso8601(hi - 1)}"
                              for lo, hi in covered.ranges) or "none"
            hours = sum((t.hi - t.lo) // HOUR for t in missing if t.stream == stream)
            print(f"{stream}: rollups exact for {shown}; {hours} hour(s) missing")
    except StoreError as exc:
        sys.stderr.write(f"tps rollup: {exc}\n")
        return 1
    finally:
        store.close()
    return 0


def _instant(text: str | None, parse: Any) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    value: int = parse(text)
    return value


def add_subcommand(subparsers: Any, add_settings_flags: Any) -> None:
    """Add ``rollup`` to an argparse ``add_subparsers()`` object."""
    rollup = subparsers.add_parser(
        "rollup", help="show where rollups are exact; --rebuild recomputes them")
    add_settings_flags(rollup)
    rollup.add_argument("--rebuild", action="store_true",
                        help="recompute the rollups of the range from raw readings")
    rollup.add_argument("--after", help="start of the range (ISO 8601 or epoch ns)")
    rollup.add_argument("--before", help="end of the range (ISO 8601 or epoch ns)")
    rollup.set_defaults(func=cmd_rollup)
