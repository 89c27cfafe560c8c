"""Log output for operators: ``text`` for people, ``json`` for log collectors.

Either way every event is one line: the JSON formatter folds a traceback into the
``exc`` field instead of printing it over several lines.

Log messages carry text TPS does not control (a feed server's close reason, a URL, an
HTTP path). :func:`log_safe` is the one place that makes a value safe for a log line -
CR, LF, ANSI escapes and every other control character become visible escapes - and
both formatters apply it to every message, so no caller can forget it and nobody can
forge a log line or repaint an operator's terminal.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any

logger = logging.getLogger(__name__)

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(threadName)s] %(message)s"
_MARK = "_tps_handler"
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100
                                  else f"\\u{ord(char):04x}")


def log_safe(value: object) -> str:
    """``value`` as text for one log line: control characters (CR, LF, ESC, C1, the
    Unicode line separators) become visible escapes such as ``\\r`` and ``\\x1b``."""
    text = value if isinstance(value, str) else str(value)
    return _UNSAFE.sub(_escape, text)


class TextFormatter(logging.Formatter):
    """The text format with every message made safe by :func:`log_safe` (a traceback,
    which TPS itself produces, keeps its lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        """Escape the message, then format as usual."""
        record.message = log_safe(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, thread, message (+ exc, extras)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a single-line JSON object."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "thread": record.threadName,
            "message": log_safe(record.getMessage()),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool | None) else repr(
                    value
                )
        return json.dumps(entry, ensure_ascii=False)


def make_formatter(fmt: str) -> logging.Formatter:
    """The formatter for ``TPS_LOG_FORMAT`` (``text`` or ``json``)."""
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return TextFormatter(TEXT_FORMAT)
    raise ValueError(f"unknown log format {fmt!r} (expected text or json)")


def configure_logging(
    level: str = "INFO", fmt: str = "text", stream: IO[str] | None = None
) -> None:
    """Send every log record at ``level`` or above to ``stream`` (stderr) in ``fmt``.

    Calling it again replaces the handler it installed before (tests, reconfiguration)
    and leaves handlers others installed (pytest's capture) alone.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _MARK, True)
    handler.setFormatter(make_formatter(fmt))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Tornado logs every request at INFO; keep access logs for debugging only. pykka
    # logs, with a traceback, every error an actor hands back to its caller (an unknown
    # stream, a bad URL): the caller answers for those, so only at debug level.
    quiet = logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING
    logging.getLogger("tornado.access").setLevel(quiet)
    logging.getLogger("pykka").setLevel(quiet)
