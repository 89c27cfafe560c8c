"""The one exception hierarchy of TPS.

Every error a user or operator can cause has its own class and a message that names
the thing that is wrong, so that callers (the CLI, the REST and GraphQL layers) can
turn it into a precise answer without parsing strings.
"""

from __future__ import annotations

from typing import ClassVar


class TPSError(Exception):
    """Base class of every error TPS raises on purpose.

    ``code`` is what a GraphQL client sees as ``extensions.code``
    (``tps/api/graphql/results.py``): a new error class declares its own, and every
    error without one is an ``INTERNAL_SERVER_ERROR``.
    """

    code: ClassVar[str] = "INTERNAL_SERVER_ERROR"


class ConfigError(TPSError):
    """A setting is invalid. ``setting`` names it (e.g. ``TPS_BATCH_SIZE``)."""

    code = "BAD_USER_INPUT"

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


class StoreError(TPSError):
    """The store refused an operation (bad request, bad credentials, ...)."""


class StoreUnavailable(StoreError):
    """The store could not be reached or timed out; the operation may be retried."""

    code = "SERVICE_UNAVAILABLE"


class FrameError(TPSError):
    """A feed frame could not be turned into a reading.

    ``reason`` is a short stable token used as a metrics label (``not_json``,
    ``bad_shape``, ``bad_value``, ``too_large``, ...); the message explains it.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class StreamError(TPSError):
    """Base class for control-plane errors about streams."""

    code = "SERVICE_UNAVAILABLE"


class UnknownStream(StreamError):
    """No stream has that name."""

    code = "NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(f"no stream named {name!r}")
        self.name = name


class StreamExists(StreamError):
    """A stream with that name is already registered."""

    code = "CONFLICT"

    def __init__(self, name: str) -> None:
        super().__init__(f"a stream named {name!r} already exists")
        self.name = name


class InvalidArgument(TPSError):
    """A query or API argument is out of range; ``argument`` names it."""

    code = "BAD_USER_INPUT"

    def __init__(self, argument: str, problem: str) -> None:
        super().__init__(f"{argument}: {problem}")
        self.argument = argument
        self.problem = problem


# --- issue 13 (ingest) ------------------------------------------------------------


class PartialWrite(StoreError):
    """The store kept a batch except ``dropped`` readings it will never accept (InfluxDB:
    outside the retention policy, a field type conflict). Retrying cannot help; the
    rest of the batch is stored."""

    def __init__(self, message: str, dropped: int) -> None:
        super().__init__(message)
        self.dropped = dropped


# --- alarms (issue 11) ---------------------------------------------------------------


class AlarmError(TPSError):
    """Base class of errors about alarms (acknowledge, shelve, look-up)."""


class UnknownAlarm(AlarmError):
    """No alarm has that id (neither open nor in the recent history)."""

    code = "NOT_FOUND"

    def __init__(self, alarm_id: str) -> None:
        super().__init__(f"no alarm with id {alarm_id!r}")
        self.alarm_id = alarm_id


class AlarmClosed(AlarmError):
    """The alarm is already CLEARED; it cannot be acknowledged or shelved any more."""

    code = "CONFLICT"

    def __init__(self, alarm_id: str) -> None:
        super().__init__(f"alarm {alarm_id!r} is already cleared")
        self.alarm_id = alarm_id


class AlarmsUnavailable(AlarmError):
    """Alarms cannot be changed right now (the history is still being restored)."""

    code = "SERVICE_UNAVAILABLE"


# --- issue 15 (clients) -----------------------------------------------------------


class Unauthenticated(TPSError):
    """A control operation came without the control token, or with a wrong one."""

    code = "UNAUTHENTICATED"


class Forbidden(TPSError):
    """The caller is known but may not do this (e.g. a browser page of a foreign origin)."""

    code = "FORBIDDEN"


class ServiceUnavailable(TPSError):
    """This process cannot answer now, or not at all in its role (e.g. stream control in
    the ``api`` role, a supervisor that is shutting down)."""

    code = "SERVICE_UNAVAILABLE"


# --- cluster mode (issue 12) ---


class ClusterUnavailable(StoreUnavailable):
    """NATS or JetStream did not answer (no connection, no stream leader yet, timeout).

    A subclass of StoreUnavailable: in cluster mode JetStream is where a reading
    counts as stored, so the writer retries it with backoff like a store outage, and
    the control plane answers 503.
    """

# --- issue 14 (hardening) ---------------------------------------------------------


class LimitExceeded(TPSError):
    """A request or change would go past a configured limit.

    ``setting`` names the limit (e.g. ``TPS_MAX_STREAMS``), ``limit`` is its value
    (``extensions.limit`` in GraphQL) and ``asked`` what the caller would have needed.
    Refused before any work starts, so nothing was done.
    """

    code = "BAD_USER_INPUT"  # the caller asked for too much; extensions.limit: how much

    def __init__(self, setting: str, limit: int, asked: int, what: str) -> None:
        super().__init__(f"{setting}: {what} {asked} is more than the limit of {limit}")
        self.setting = setting
        self.limit = limit
        self.asked = asked


class RequestTooLarge(LimitExceeded):
    """A GraphQL request asks for more than one request may (rows across every field
    and alias, aliases, body bytes)."""


class TooManyStreams(LimitExceeded):
    """Adding a stream would go past ``TPS_MAX_STREAMS``."""


class TooManySubscriptions(LimitExceeded):
    """A subscription would go past the per-connection or the global subscription cap."""


class FeedRefused(TPSError):
    """A feed's destination is not allowed: the configured store, TPS's own HTTP
    address, a host ``TPS_FEED_ALLOW`` does not name, or (unless named explicitly) a
    loopback, link-local or cloud-metadata address. ``reason`` says which."""

    code = "BAD_USER_INPUT"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DataDirInUse(ConfigError):
    """Another TPS process holds the data dir's lock (``pid`` on ``host``)."""

    def __init__(self, problem: str, pid: int | None, host: str | None) -> None:
        super().__init__("TPS_DATA_DIR", problem)
        self.pid = pid
        self.host = host
