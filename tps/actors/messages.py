"""Messages exchanged between actors, and the sink type readers write into.

Messages are small frozen dataclasses named as facts (``BatchWaiting``) or
commands (``Flush``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tps.model import Reading

ReadingSink = Callable[[Sequence[Reading]], None]
"""Thread-safe hand-off of one stream's accepted readings, oldest first."""


@dataclass(frozen=True, slots=True)
class BatchWaiting:
    """A full batch (or an overflow) waits in the writer's buffer (handle -> writer).

    A doorbell only: the readings are already in the handle's buffer and spool.
    """


@dataclass(frozen=True, slots=True)
class Flush:
    """Write what is buffered now (timer or shutdown -> writer)."""

    final: bool = False


@dataclass(frozen=True, slots=True)
class ChildFailed:
    """A supervised child died with an exception (child -> supervisor)."""

    key: str
    error: str


@dataclass(frozen=True, slots=True)
class RestartChild:
    """Restart a failed child now that its backoff has passed (timer -> supervisor)."""

    key: str
    generation: int


@dataclass(frozen=True, slots=True)
class InjectFailure:
    """Make the receiving actor raise ``RuntimeError(reason)`` (fault injection).

    Sent with ``tell`` so the failure goes through the actor's real failure path and
    its supervisor reacts as it would to a genuine crash.
    """

    reason: str = "injected failure"
