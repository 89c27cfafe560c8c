"""The persisted stream registry: which streams exist and whether they run.

Streams added, removed, stopped or started at runtime must survive a restart, so the
supervisor records every change in ``<data_dir>/streams.json``. The file is replaced
atomically (write a temp file, fsync it, rename it over the old one, fsync the
folder): a crash leaves either the old or the new registry, never half of one.

How configured feeds (``TPS_FEEDS`` / the TOML file) merge with the registry:

- a stream the registry knows keeps the registry's URL, protocol, query and running
  state - the operator's last runtime decision wins over the start-up configuration;
- a stream removed at runtime is remembered as a *tombstone*, so a configured feed of
  that name does not come back on the next start (adding it again over the API clears
  the tombstone);
- a configured feed the registry has never seen is added, running;
- limits set or cleared over the API (issue 11) are kept in the stream's entry
  (``"limits": {...}`` or ``null``) and win over the configured ``[[limits]]``; an
  entry without the key uses the configured ones. Invalid stored limits lose only
  themselves (logged), not the registry.

A registry file that cannot be read as a registry is renamed aside
(``streams.json.corrupt-<UTC timestamp>``), reported in one log line, and TPS starts
from the configured feeds instead of refusing to start. An *entry* that is not a valid
stream (a bad name or URL, a missing field) is set aside alone, in
``streams.json.rejected-<UTC timestamp>``, with one log line each; the other streams load.

The class is plain (no locks): only the supervisor actor's thread uses it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from tps.alarms.limits import Limits, parse_limits
from tps.config.settings import FeedConfig, check_feed
from tps.errors import ConfigError, InvalidArgument
from tps.redact import redact_url

logger = logging.getLogger(__name__)

REGISTRY_FILE = "streams.json"
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One registered stream, whether it should be running, and its runtime limits.

    ``limits_set`` is True once limits were set or cleared over the API: then
    ``limits`` (None: cleared) win over the configured ``[[limits]]`` of the stream.
    """

    feed: FeedConfig
    running: bool = True
    limits: Limits | None = None
    limits_set: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to the registry file."""
        data: dict[str, Any] = {**self.feed.to_dict(), "running": self.running}
        if self.limits_set:
            data["limits"] = None if self.limits is None else self.limits.to_json()
        return data


def _private(path: Path) -> IO[str]:
    """``path`` opened for writing, readable by this user only (mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return open(fd, "w", encoding="utf-8")


class RegistryFormatError(ValueError):
    """The registry file exists but does not hold a valid registry."""


def _entry(item: Any, seen: set[str]) -> StreamEntry:
    """One registry entry, checked like any feed; RegistryFormatError says what is wrong."""
    if not isinstance(item, dict):
        raise RegistryFormatError("not an object")
    try:
        feed = FeedConfig(
            name=item["name"],
            url=item["url"],
            protocol=item.get("protocol", "auto"),
            query=item["query"],
        )
        running = item.get("running", True)
    except KeyError as exc:
        raise RegistryFormatError(f"misses {exc}") from None
    if not all(isinstance(v, str) for v in feed.to_dict().values()) or not isinstance(
        running, bool
    ):
        raise RegistryFormatError("has a value of the wrong type")
    try:
        check_feed(feed)
    except InvalidArgument as exc:
        raise RegistryFormatError(str(exc)) from None
    if feed.name in seen:
        raise RegistryFormatError(f"stream {feed.name!r} appears twice")
    limits, limits_set = None, "limits" in item
    if item.get("limits") is not None:
        try:
            limits = parse_limits(item["limits"])
        except InvalidArgument as exc:
            # Only this stream's runtime limits are lost, not the stream.
            logger.error("Stream registry: stream %r has invalid limits (%s); using "
                         "its configured limits instead", feed.name, exc)
            limits, limits_set = None, False
    return StreamEntry(feed, running, limits, limits_set)


def _parse(text: str) -> tuple[list[StreamEntry], set[str], list[tuple[Any, str]]]:
    """Parse the registry file's text into (entries, tombstones, rejected entries).

    A file that is not a registry raises RegistryFormatError; an entry that is not a
    valid stream is rejected alone (with the problem), so one bad entry never costs the
    others.
    """
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise RegistryFormatError(f"not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        raise RegistryFormatError(f"expected an object with version {FORMAT_VERSION}")
    streams, removed = data.get("streams"), data.get("removed", [])
    if not isinstance(streams, list) or not isinstance(removed, list):
        raise RegistryFormatError("'streams' and 'removed' must be lists")
    entries: list[StreamEntry] = []
    rejected: list[tuple[Any, str]] = []
    seen: set[str] = set()
    for item in streams:
        try:
            entry = _entry(item, seen)
        except RegistryFormatError as exc:
            rejected.append((item, str(exc)))
            continue
        seen.add(entry.feed.name)
        entries.append(entry)
    tombstones = {name for name in removed if isinstance(name, str)}
    rejected += [(name, "a removed stream's name must be a string")
                 for name in removed if not isinstance(name, str)]
    return entries, tombstones - seen, rejected


class StreamRegistry:
    """The streams TPS runs, persisted in ``path`` (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, StreamEntry] = {}
        self._removed: set[str] = set()

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> StreamRegistry:
        """The registry at ``<data_dir>/streams.json``."""
        return cls(Path(data_dir) / REGISTRY_FILE)

    # --- loading ---------------------------------------------------------------------

    def load(self, configured: Iterable[FeedConfig] = ()) -> list[StreamEntry]:
        """Read the file, merge ``configured`` feeds into it, save, return the entries."""
        self._entries, self._removed = {}, set()
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = None
        except OSError as exc:
            # Unreadable is not corrupt: refusing to guess protects the operator's data.
            raise ConfigError("TPS_DATA_DIR", f"cannot read {self.path}: {exc.strerror}") from None
        if text is not None:
            try:
                entries, self._removed, rejected = _parse(text)
                self._entries = {entry.feed.name: entry for entry in entries}
            except RegistryFormatError as exc:
                self._set_aside(str(exc))
            else:
                if rejected:
                    self._set_entries_aside(rejected)
        moved: list[str] = []
        for feed in configured:
            known = self._entries.get(feed.name)
            if known is None and feed.name not in self._removed:
                self._entries[feed.name] = StreamEntry(feed, True)
            elif known is not None and known.feed != feed:
                # The configuration says where a configured feed is; the registry only
                # remembers what was done to it at runtime (stopped, removed).
                logger.debug("Stream %s: configured as %s (registry had %s)", feed.name,
                             redact_url(feed.url), redact_url(known.feed.url))
                moved.append(feed.name)
                self._entries[feed.name] = replace(known, feed=feed)
        if moved:
            # One line, not one per stream: the demo's simulator port changes every start.
            logger.info("Configuration changed %d stream(s) since the last run (%s); using "
                        "the configured URLs and keeping each stream's running/stopped state",
                        len(moved), ", ".join(moved))
        self.save()
        return self.entries()

    def _set_aside(self, problem: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        os.replace(self.path, aside)
        logger.error(
            "Stream registry %s is corrupt (%s); kept it as %s and starting from the "
            "configured feeds",
            self.path,
            problem,
            aside,
        )

    def _set_entries_aside(self, rejected: list[tuple[Any, str]]) -> None:
        """Keep invalid entries in ``streams.json.rejected-<UTC>`` (one line each in the
        log); the valid ones load, and the next save leaves the bad ones out."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.rejected-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.rejected-{stamp}-{n}")
        with _private(aside) as handle:
            json.dump([{"entry": item, "problem": problem} for item, problem in rejected],
                      handle, indent=2)
            handle.write("\n")
        for item, problem in rejected:
            name = item.get("name") if isinstance(item, dict) else None
            logger.error("Stream registry %s: entry %s is invalid (%s); kept it in %s, the "
                         "other streams load", self.path,
                         repr(name) if isinstance(name, str) else "without a name",
                         problem, aside)

    # --- queries ---------------------------------------------------------------------

    def entries(self) -> list[StreamEntry]:
        """Every registered stream, in registration order."""
        return list(self._entries.values())

    def get(self, name: str) -> StreamEntry | None:
        """The entry named ``name``, or None."""
        return self._entries.get(name)

    def removed(self) -> set[str]:
        """Names removed at runtime (tombstones)."""
        return set(self._removed)

    # --- changes (each one saved at once) --------------------------------------------

    def put(self, feed: FeedConfig, running: bool = True) -> None:
        """Add or replace a stream (clears its tombstone) and save."""
        self._entries[feed.name] = StreamEntry(feed, running)
        self._removed.discard(feed.name)
        self.save()

    def set_running(self, name: str, running: bool) -> None:
        """Record whether ``name`` runs and save (unknown names are ignored)."""
        entry = self._entries.get(name)
        if entry is not None and entry.running != running:
            self._entries[name] = replace(entry, running=running)
            self.save()

    def set_limits(self, name: str, limits: Limits | None) -> None:
        """Record ``name``'s limits set (or, with None, cleared) at runtime, and save."""
        entry = self._entries.get(name)
        if entry is not None:
            self._entries[name] = replace(entry, limits=limits, limits_set=True)
            self.save()

    def remove(self, name: str) -> None:
        """Forget ``name``, remember it as removed, and save."""
        self._entries.pop(name, None)
        self._removed.add(name)
        self.save()

    def save(self) -> None:
        """Write the registry atomically: temp file, fsync, rename, fsync the folder.

        Mode 0600: feed URLs may carry credentials, and this file keeps them whole.
        """
        data = {
            "version": FORMAT_VERSION,
            "streams": [entry.to_dict() for entry in self._entries.values()],
            "removed": sorted(self._removed),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        with _private(tmp) as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
